"""Each gateway's bill parser on files built exactly in the documented format (docs/gateway-bills.md):
encodings, summary rows, padding and backticks, refunds, partial refunds, fees; and the fold into a
statement. No network, no database."""

import gzip
import io
import zipfile
from datetime import UTC, date, datetime

import pytest

from miaofa.gateways.alipay_bill import parse_zip
from miaofa.gateways.base import PaymentState, StatementNotReady
from miaofa.gateways.bills import (
    SHANGHAI,
    BillError,
    BillLine,
    bill_days,
    check_ready,
    day_pieces,
    states,
)
from miaofa.gateways.wechat_bill import parse_fund_flow, parse_trade, unpack
from tests.helpers.fakes.bills import (
    AlipayRow,
    WechatFundRow,
    WechatRow,
    alipay_detail,
    alipay_zip,
    wechat_download,
    wechat_fund,
    wechat_trade,
)

PID = "2088000000000001"
DAY = date(2026, 12, 3)


def _bj(text: str) -> datetime:  # a Beijing wall-clock time, as a bill writes it
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI).astimezone(UTC)


ALIPAY_ROWS = [
    AlipayRow(
        "2026120322001411111111111111", "a0000000000000000001", "交易", "9.90", "2026-12-03 00:00:01", fee="-0.06"
    ),
    AlipayRow(
        "2026120322001422222222222222",
        "a0000000000000000002",
        "交易",
        "120.00",
        "2026-12-03 12:30:00",
        fee="-0.72",
        subject='卡密, "月卡"',
    ),
    AlipayRow(
        "2026120322001422222222222222",
        "a0000000000000000002",
        "退款",
        "-120.00",
        "2026-12-03 13:00:00",
        request_no="r0000000000000000002",
        fee="0.72",
    ),
    AlipayRow(
        "2026120222001433333333333333",
        "a0000000000000000003",
        "退款",
        "-5.00",
        "2026-12-03 23:59:59",
        request_no="r0000000000000000003",
        fee="0.03",
    ),
]


def test_alipay_zip_of_gbk_csv_reads_payments_refunds_and_fees():
    lines = parse_zip(alipay_zip(PID, DAY, ALIPAY_ROWS))
    assert lines == [
        BillLine("payment", "a0000000000000000001", "a0000000000000000001", 990, "CNY", _bj("2026-12-03 00:00:01"), -6),
        BillLine(
            "payment", "a0000000000000000002", "a0000000000000000002", 12000, "CNY", _bj("2026-12-03 12:30:00"), -72
        ),
        BillLine(
            "refund",
            "a0000000000000000002",
            "a0000000000000000002",
            12000,
            "CNY",
            _bj("2026-12-03 13:00:00"),
            72,
            "r0000000000000000002",
        ),
        BillLine(
            "refund",
            "a0000000000000000003",
            "a0000000000000000003",
            500,
            "CNY",
            _bj("2026-12-03 23:59:59"),
            3,
            "r0000000000000000003",
        ),
    ]


def test_alipay_quiet_day_is_an_empty_bill():
    assert parse_zip(alipay_zip(PID, DAY, [])) == []


def test_alipay_columns_are_found_by_name_not_place():
    detail = alipay_detail(PID, DAY, ALIPAY_ROWS[:1]).replace("商品名称,创建时间", "创建时间,商品名称")
    detail = detail.replace("\t,卡密\t,2026-12-03 00:00:01\t", "\t,2026-12-03 00:00:01\t,卡密\t", 1)
    assert [line.amount_cents for line in parse_zip(alipay_zip(PID, DAY, [], detail))] == [990]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.replace("#交易合计：2笔", "#交易合计：3笔"), "do not add up"),
        (lambda t: t.replace("#退款合计：2笔", "#退款合计：1笔"), "do not add up"),
        (lambda t: t.replace("#退款合计", "#其它"), "summary lines are missing"),
        (lambda t: t.replace("业务明细列表结束", "列表完"), "marks are missing"),
        (lambda t: t.replace("服务费（元）", "手续费"), "documented column is missing"),
        (lambda t: t.replace("120.00\t", "120.001\t", 1), "not an amount"),
        (lambda t: t.replace("\t,交易\t", "\t,转账\t", 1), "unknown 业务类型"),
        (lambda t: t.replace("2026-12-03 12:30:00", "2026/12/03 12:30", 2), "not a time"),
    ],
)
def test_alipay_bill_out_of_format_is_refused_by_line(change, message):
    detail = change(alipay_detail(PID, DAY, ALIPAY_ROWS))
    with pytest.raises(BillError, match=message):
        parse_zip(alipay_zip(PID, DAY, [], detail))


def test_alipay_not_a_zip_or_not_gbk_or_no_detail_file():
    with pytest.raises(BillError, match="not a zip"):
        parse_zip(b"<html>expired</html>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x_业务明细(汇总).csv", "#-----业务汇总列表-----\r\n".encode("gbk"))
    with pytest.raises(BillError, match="no 业务明细 file"):
        parse_zip(buffer.getvalue())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.csv", b"\xff\xfe\x00\x81")
    with pytest.raises(BillError, match="not GBK"):
        parse_zip(buffer.getvalue())


WECHAT_ROWS = [
    WechatRow("2026-12-03 09:00:00", "w0000000000000000001", "SUCCESS", "9.90", fee="0.05940"),
    WechatRow("2026-12-03 10:00:00", "w0000000000000000002", "SUCCESS", "50.00", fee="0.30000", subject="卡密,年卡"),
    WechatRow(
        "2026-12-03 11:00:00",
        "w0000000000000000002",
        "REFUND",
        "50.00",
        "20.00",
        "r0000000000000000002",
        fee="-0.12000",
    ),
    WechatRow("2026-12-03 12:00:00", "w0000000000000000004", "REVOKED", "3.00", "3.00", "r0000000000000000004"),
]


@pytest.mark.parametrize("gzipped", [True, False])
def test_wechat_trade_bill_gzip_or_plain_checked_against_its_sha1(gzipped):
    body, sha1 = wechat_download(wechat_trade(WECHAT_ROWS), gzipped)
    lines = parse_trade(unpack(body, gzipped, "SHA1", sha1.upper()))
    assert lines == [
        BillLine("payment", "w0000000000000000001", "w0000000000000000001", 990, "CNY", _bj("2026-12-03 09:00:00"), 6),
        BillLine(
            "payment", "w0000000000000000002", "w0000000000000000002", 5000, "CNY", _bj("2026-12-03 10:00:00"), 30
        ),
        BillLine(
            "refund",
            "w0000000000000000002",
            "w0000000000000000002",
            2000,
            "CNY",
            _bj("2026-12-03 11:00:00"),
            -12,
            "r0000000000000000002",
        ),
        BillLine(
            "refund",
            "w0000000000000000004",
            "w0000000000000000004",
            300,
            "CNY",
            _bj("2026-12-03 12:00:00"),
            0,
            "r0000000000000000004",
        ),
    ]


def test_wechat_download_that_does_not_match_its_hash_is_refused():
    body, sha1 = wechat_download(wechat_trade(WECHAT_ROWS), gzipped=False)
    with pytest.raises(BillError, match="does not match its hash"):
        unpack(body.replace(b"9.90", b"0.99"), False, "SHA1", sha1)
    with pytest.raises(BillError, match="no SHA1"):
        unpack(body, False, "MD5", sha1)
    with pytest.raises(BillError, match="not gzip"):
        unpack(body, True, "SHA1", sha1)
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024 + 1))
    with pytest.raises(BillError, match="larger than"):
        unpack(bomb, True, "SHA1", sha1)


def test_wechat_bill_with_a_bom_and_an_empty_day():
    assert parse_trade("\ufeff" + wechat_trade(WECHAT_ROWS[:1]))[0].amount_cents == 990
    assert parse_trade(wechat_trade([])) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.replace("`4,`", "`5,`"), "do not add up"),
        (lambda t: t.replace("总交易单数", "总数"), "summary header is missing"),
        (lambda t: t.replace("`2026-12-03 09:00:00", "2026-12-03 09:00:00"), "without its backtick"),
        (lambda t: t.replace(",`NATIVE", "", 1), "fields where the header has"),
        (lambda t: t.replace("`SUCCESS,", "`PAYING,", 1), "unknown 交易状态"),
        (lambda t: t.replace("商户订单号", "订单号"), "documented column is missing"),
        (lambda t: t.replace("`CNY", "`cny", 1), "not a currency"),
        (lambda t: t.replace("`0.05940", "`0.0594x"), "not a fee"),
    ],
)
def test_wechat_trade_bill_out_of_format_is_refused(change, message):
    with pytest.raises(BillError, match=message):
        parse_trade(change(wechat_trade(WECHAT_ROWS)))


def test_wechat_fund_flow_bill_reads_money_in_and_out():
    text = wechat_fund(
        [
            WechatFundRow("2026-12-03 09:00:00", "4200000001", "基本账户", "交易", True, "9.90"),
            WechatFundRow("2026-12-03 10:00:00", "1330000001", "商家转账", "企业付款", False, "100.00", "p0000000001"),
        ]
    )
    lines = parse_fund_flow(text)
    assert [(x.kind, x.income, x.amount_cents, x.voucher, x.at) for x in lines] == [
        ("交易", True, 990, "", _bj("2026-12-03 09:00:00")),
        ("企业付款", False, 10000, "p0000000001", _bj("2026-12-03 10:00:00")),
    ]


def line(kind, payment_id, amount, at, refund_id=""):
    return BillLine(kind, payment_id, payment_id, amount, "CNY", at, 0, refund_id)


def test_states_fold_a_window_of_lines():
    t = [datetime(2026, 12, 3, h, tzinfo=UTC) for h in range(8)]
    lines = [
        line("payment", "p1", 990, t[1]),  # paid
        line("payment", "p2", 5000, t[1]),  # refunded in two parts: whole
        line("refund", "p2", 2000, t[2], "r1"),
        line("refund", "p2", 3000, t[3], "r2"),
        line("payment", "p3", 5000, t[1]),  # partly refunded: paid, and a refund entry
        line("refund", "p3", 1000, t[2], "r3"),
        line("refund", "p4", 700, t[2], "r4"),  # a refund of an earlier payment
        line("payment", "p5", 100, t[6]),  # outside the window
    ]
    assert states(lines, t[0], t[5]) == [
        PaymentState("p1", "p1", "paid", 990, "CNY", t[1]),
        PaymentState("p2", "p2", "refunded", 5000, "CNY", t[1]),
        PaymentState("p3", "p3", "paid", 5000, "CNY", t[1]),
        PaymentState("p3", "p3", "refunded", 1000, "CNY", t[1]),
        PaymentState("p4", "p4", "refunded", 700, "CNY", None),
    ]


def test_days_cut_at_beijing_midnight_and_ready_the_next_morning():
    start, end = datetime(2026, 12, 2, 15, 30, tzinfo=UTC), datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
    assert bill_days(start, end) == [date(2026, 12, 2), date(2026, 12, 3)]  # end is 12-04 00:00 Beijing
    assert day_pieces(start, end, SHANGHAI) == [
        (date(2026, 12, 2), start, datetime(2026, 12, 2, 16, tzinfo=UTC)),
        (date(2026, 12, 3), datetime(2026, 12, 2, 16, tzinfo=UTC), end),
    ]
    check_ready("alipay", DAY, _bj("2026-12-04 10:00:00"))
    with pytest.raises(StatementNotReady) as caught:
        check_ready("alipay", DAY, _bj("2026-12-04 09:59:59"))
    assert (caught.value.gateway, caught.value.day) == ("alipay", "2026-12-03")
