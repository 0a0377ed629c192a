"""Bill files built exactly as the gateways document them (docs/gateway-bills.md): Alipay's zip of
GBK CSV files, WeChat Pay's backtick-prefixed trade and fund-flow bills. The fakes serve them and
the parser tests read them."""

import gzip
import hashlib
import io
import zipfile
from dataclasses import dataclass
from datetime import date

ALIPAY_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


@dataclass
class AlipayRow:
    trade_no: str
    out_trade_no: str
    kind: str  # 交易 | 退款
    amount: str  # yuan; a refund's is negative
    finished: str  # yyyy-MM-dd HH:mm:ss, Beijing
    subject: str = "卡密"
    request_no: str = ""
    fee: str = "0.00"  # negative on a payment (charged), positive on a refund (given back)


def alipay_detail(pid: str, day: date, rows: list[AlipayRow]) -> str:
    d = day.strftime("%Y年%m月%d日")
    lines = [
        "#支付宝业务明细查询",
        f"#账号：[{pid}0156]",
        f"#起始日期：[{d} 00:00:00]   终止日期：[{d} 23:59:59]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ALIPAY_HEADER,
    ]
    for r in rows:
        # Each field is followed by a tab (Alipay keeps long numbers as text that way).
        fields = [r.trade_no, r.out_trade_no, r.kind, r.subject, r.finished, r.finished, "", "", "", "", "159****5620"]
        fields += [r.amount, r.amount, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", r.request_no, r.fee]
        fields += ["0.00", ""]
        lines.append(",".join(f"{_quoted(f)}\t" for f in fields))
    payments = [r for r in rows if r.kind == "交易"]
    lines += [
        "#-----------------------------------------业务明细列表结束------------------------------------",
        f"#交易合计：{len(payments)}笔，商家实收共{sum(float(r.amount) for r in payments):.2f}元，商家优惠共0.00元",
        f"#退款合计：{len(rows) - len(payments)}笔，商家实收退款共0.00元，商家优惠退款共0.00元",
        f"#导出时间：[{d} 09:30:00]",
    ]
    return "\r\n".join(lines) + "\r\n"


def _quoted(field: str) -> str:
    return '"' + field.replace('"', '""') + '"' if "," in field or '"' in field else field


def alipay_summary(pid: str, day: date) -> str:
    return "\r\n".join(
        [
            "#支付宝业务汇总查询",
            f"#账号：[{pid}0156]",
            "#-----------------------------------------业务汇总列表----------------------------------------",
            "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）",
            "合计,,0,0,0.00,0.00",
            "#----------------------------------------业务汇总列表结束-------------------------------------",
        ]
    )


def alipay_zip(pid: str, day: date, rows: list[AlipayRow], detail: str | None = None) -> bytes:
    """The zip Alipay's bill_download_url serves: GBK files under GBK names (no UTF-8 flag)."""
    stem = f"{pid}_{day:%Y%m%d}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (
            (f"{stem}_业务明细(汇总).csv", alipay_summary(pid, day)),
            (f"{stem}_业务明细.csv", detail if detail is not None else alipay_detail(pid, day, rows)),
        ):
            info = zipfile.ZipInfo(
                name.encode("gbk").decode("cp437"), date_time=(day.year, day.month, day.day, 9, 0, 0)
            )
            archive.writestr(info, text.encode("gbk"), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


ALIPAY_ACCOUNT_HEADER = (
    "账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,"
    "交易渠道,业务类型,备注"
)


@dataclass
class AlipayAccountRow:
    """One movement of the account bill (账务明细): money in (income) or out (expense, written negative)."""

    serial: str  # 账务流水号
    order_no: str  # 商户订单号: a transfer's out_biz_no
    kind: str  # 业务类型: 转账 | 在线支付 | 交易退款 | 收费 …
    at: str  # yyyy-MM-dd HH:mm:ss, Beijing
    income: str = "0.00"
    expense: str = "0.00"  # "-9.50" in today's bills; "9.50" in older ones
    subject: str = "提现"
    other: str = "张* (payee@example.com)"


def alipay_account_detail(pid: str, day: date, rows: list[AlipayAccountRow]) -> str:
    d, balance = day.strftime("%Y年%m月%d日"), 10000.0
    lines = [
        "#支付宝账务明细查询",
        f"#账号：[{pid}0156]",
        f"#起始日期：[{d} 00:00:00]   终止日期：[{d} 23:59:59]",
        "#-----------------------------------------账务明细列表----------------------------------------",
        ALIPAY_ACCOUNT_HEADER,
    ]
    for r in rows:
        balance += float(r.income) - abs(float(r.expense))
        # Numbers and names are followed by a tab (Excel keeps them as text); amounts are not.
        fields = [f"{r.serial}\t", f"2026{r.serial}\t", f"{r.order_no}\t", _quoted(r.subject) + "\t", r.at]
        fields += [_quoted(r.other) + "\t", r.income, r.expense, f"{balance:.2f}", "支付宝", r.kind, ""]
        lines.append(",".join(fields))
    out = [r for r in rows if float(r.expense)]
    into = [r for r in rows if float(r.income)]
    lines += [
        "#----------------------------------------账务明细列表结束-------------------------------------",
        f"#支出合计：{len(out)}笔，共{sum(abs(float(r.expense)) for r in out):.2f}元",
        f"#收入合计：{len(into)}笔，共{sum(float(r.income) for r in into):.2f}元",
        f"#导出时间：[{d} 09:30:00]",
    ]
    return "\r\n".join(lines) + "\r\n"


def alipay_account_zip(pid: str, day: date, rows: list[AlipayAccountRow], detail: str | None = None) -> bytes:
    """The zip bill_type=signcustomer's link serves: the 账务明细 and its summary, GBK, GBK names."""
    summary = "\r\n".join(
        [
            "#支付宝账务汇总查询",
            f"#账号：[{pid}0156]",
            "#-----------------------------------------账务汇总列表----------------------------------------",
            "类型,收入笔数,收入金额（+元）,支出笔数,支出金额（-元）",
            "合计,0,0.00,0,0.00",
            "#----------------------------------------账务汇总列表结束-------------------------------------",
        ]
    )
    text = detail if detail is not None else alipay_account_detail(pid, day, rows)
    return _zip(day, [(f"{pid}_{day:%Y%m%d}_账务明细(汇总).csv", summary), (f"{pid}_{day:%Y%m%d}_账务明细.csv", text)])


def _zip(day: date, files: list[tuple[str, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files:
            info = zipfile.ZipInfo(
                name.encode("gbk").decode("cp437"), date_time=(day.year, day.month, day.day, 9, 0, 0)
            )
            archive.writestr(info, text.encode("gbk"), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


WECHAT_TRADE_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
WECHAT_TRADE_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


@dataclass
class WechatRow:
    at: str  # yyyy-MM-dd HH:mm:ss, Beijing
    out_trade_no: str
    state: str  # SUCCESS | REFUND | REVOKED
    total: str  # yuan, the order's
    refund: str = "0.00"
    out_refund_no: str = ""
    fee: str = "0.00000"  # to five decimals; a refund's is negative (given back)
    subject: str = "卡密"
    mchid: str = "1900000001"


def wechat_trade(rows: list[WechatRow]) -> str:
    lines = [WECHAT_TRADE_HEADER]
    for r in rows:
        refunding = r.state != "SUCCESS"
        fields = [r.at, "wx2421b1c4370ec43b", r.mchid, "0", "", "4200000" + r.out_trade_no[-8:], r.out_trade_no]
        fields += ["oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "NATIVE", r.state, "OTHERS", "CNY", "0.00" if refunding else r.total]
        fields += ["0.00", "5030" + r.out_refund_no[-8:] if refunding else "0", r.out_refund_no or "0"]
        fields += [r.refund, "0.00", "ORIGINAL" if refunding else "", "SUCCESS" if refunding else "", r.subject, ""]
        fields += [r.fee, "0.60%", r.total, r.refund, ""]
        lines.append("`" + ",`".join(fields))
    paid = sum(float(r.total) for r in rows if r.state == "SUCCESS")
    refunded = sum(float(r.refund) for r in rows if r.state != "SUCCESS")
    lines.append(WECHAT_TRADE_SUMMARY)
    lines.append(f"`{len(rows)},`{paid:.2f},`{refunded:.2f},`0.00,`0.00000,`{paid:.2f},`{refunded:.2f}")
    return "\r\n".join(lines) + "\r\n"


WECHAT_FUND_HEADER = ",".join(
    ["记账时间", "微信支付业务单号", "资金流水单号", "业务名称", "业务类型", "收支类型"]
    + ["收支金额（元）", "账户结余（元）", "资金变更提交申请人", "备注", "业务凭证号"]
)


@dataclass
class WechatFundRow:
    at: str
    business_no: str
    name: str  # 业务名称, e.g. 商家转账
    kind: str  # 业务类型, e.g. 企业付款 / 交易 / 退款
    income: bool
    amount: str
    voucher: str = ""  # our number (out_bill_no)


def wechat_fund(rows: list[WechatFundRow]) -> str:
    lines = [WECHAT_FUND_HEADER]
    balance = 1000.0
    for n, r in enumerate(rows):
        balance += float(r.amount) * (1 if r.income else -1)
        fields = [r.at, r.business_no, f"1900000109{n:010d}", r.name, r.kind, "收入" if r.income else "支出"]
        fields += [r.amount, f"{balance:.2f}", "1900000109API", "", r.voucher]
        lines.append("`" + ",`".join(fields))
    income = [r for r in rows if r.income]
    lines.append("资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额")
    lines.append(
        f"`{len(rows)},`{len(income)},`{sum(float(r.amount) for r in income):.2f},"
        f"`{len(rows) - len(income)},`{sum(float(r.amount) for r in rows if not r.income):.2f}"
    )
    return "\r\n".join(lines) + "\r\n"


def wechat_download(text: str, gzipped: bool) -> tuple[bytes, str]:
    """The bytes WeChat's download_url serves and the hash_value its signed answer gave (SHA1 of the raw bill)."""
    raw = text.encode("utf-8")
    return (gzip.compress(raw) if gzipped else raw), hashlib.sha1(raw).hexdigest()
