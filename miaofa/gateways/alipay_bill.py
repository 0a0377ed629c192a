"""Alipay's trade bill (业务明细, bill_type=trade): a zip of GBK CSV files, read into bill lines.

The zip holds `<pid>_<yyyymmdd>_业务明细.csv` and `…_业务明细(汇总).csv`. The detail file opens with
`#` lines (title, account, dates), then `#---…业务明细列表---…`, the header row, the rows, and
`#---…业务明细列表结束---…` followed by `#交易合计：N笔…` and `#退款合计：M笔…`. Fields are padded with
tabs (so Excel keeps long numbers as text). Format and sources: docs/gateway-bills.md.
"""

import csv
import io
import re
import zipfile

from miaofa.gateways.bills import BillError, BillLine, bill_time, bounded_read, cents, fee_cents

START_MARK = "业务明细列表"
END_MARK = "业务明细列表结束"
PAYMENT, REFUND = "交易", "退款"
COLUMNS = {
    "trade_no": "支付宝交易号",
    "out_trade_no": "商户订单号",
    "kind": "业务类型",
    "finished": "完成时间",
    "amount": "订单金额(元)",
    "request_no": "退款批次号/请求号",
    "fee": "服务费(元)",
}
_COUNT_RE = re.compile(r"#(交易|退款)合计[:：]\s*([0-9]+)\s*笔")
MAX_FILES = 16


def parse_zip(data: bytes, currency: str = "CNY") -> list[BillLine]:
    """The payments and refunds of one trade bill zip; BillError if it is not in Alipay's format."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BillError("alipay bill: not a zip") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if not members or len(members) > MAX_FILES:
            raise BillError("alipay bill: unexpected files in the zip")
        for info in members:
            # Names are GBK without the UTF-8 flag, so zipfile shows them as cp437: read the content instead.
            with archive.open(info) as member:
                text = _decode(bounded_read(member, "alipay bill"))
            if _is_detail(text):
                return parse_detail(text, currency)
    raise BillError("alipay bill: no 业务明细 file in the zip")


def parse_detail(text: str, currency: str = "CNY") -> list[BillLine]:
    rows = text.splitlines()
    start = next((n for n, row in enumerate(rows) if _mark(row) == START_MARK), None)
    end = next((n for n, row in enumerate(rows) if _mark(row) == END_MARK), None)
    if start is None or end is None or end <= start + 1:
        raise BillError("alipay bill: the 业务明细列表 marks are missing")
    table = list(csv.reader(rows[start + 1 : end]))
    header = [_name(cell) for cell in table[0]]
    try:
        where = {key: header.index(name) for key, name in COLUMNS.items()}
    except ValueError:
        raise BillError("alipay bill: a documented column is missing") from None
    lines = []
    for number, record in enumerate(table[1:], start=start + 3):
        cells = [cell.strip() for cell in record]
        if not any(cells):
            continue
        if len(cells) < len(header):
            raise BillError(f"alipay bill: line {number} has too few fields")
        lines.append(_line(cells, where, currency, f"alipay bill line {number}"))
    _check_counts(rows[end + 1 :], lines)
    return lines


def _line(cells: list[str], where: dict[str, int], currency: str, at: str) -> BillLine:
    kind, order_id = cells[where["kind"]], cells[where["out_trade_no"]]
    if not order_id or len(order_id) > 64:
        raise BillError(f"{at}: no 商户订单号")
    amount = cents(cells[where["amount"]], at)
    fee = fee_cents(cells[where["fee"]], at)
    when = bill_time(cells[where["finished"]], at)
    if kind == PAYMENT:
        if amount <= 0:
            raise BillError(f"{at}: a payment of no amount")
        return BillLine("payment", order_id, order_id, amount, currency, when, fee)
    if kind == REFUND:
        if amount == 0:
            raise BillError(f"{at}: a refund of no amount")
        # A refund row carries the refunded amount, negative, and the fee given back.
        return BillLine("refund", order_id, order_id, abs(amount), currency, when, fee, cells[where["request_no"]])
    raise BillError(f"{at}: unknown 业务类型")


def _check_counts(summary: list[str], lines: list[BillLine]) -> None:
    """The summary's counts against the rows read: a cut-off download must not pass as a quiet day."""
    counts = {}
    for row in summary:
        found = _COUNT_RE.search(row.replace(",", "，"))
        if found:
            counts[found.group(1)] = int(found.group(2))
    if set(counts) != {PAYMENT, REFUND}:
        raise BillError("alipay bill: the 交易合计/退款合计 summary lines are missing")
    payments = sum(1 for line in lines if line.kind == "payment")
    if counts[PAYMENT] != payments or counts[REFUND] != len(lines) - payments:
        raise BillError("alipay bill: the rows do not add up to the summary's counts")


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    try:
        return data.decode("gb18030")  # GBK's superset: a rare character in a product name still decodes
    except UnicodeDecodeError:
        raise BillError("alipay bill: not GBK text") from None


def _is_detail(text: str) -> bool:
    return any(_mark(row) == START_MARK for row in text.splitlines()[:16])


def _mark(row: str) -> str:
    row = row.strip()
    return row.strip("#-").strip() if row.startswith("#-") else ""


def _name(cell: str) -> str:
    return cell.strip().replace("（", "(").replace("）", ")")
