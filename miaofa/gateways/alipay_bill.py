"""Alipay's trade bill (业务明细, bill_type=trade) and account bill (账务明细, bill_type=signcustomer):
each a zip of GBK CSV files, read into lines.

The zip holds `<pid>_<yyyymmdd>_业务明细.csv` and `…_业务明细(汇总).csv`. The detail file opens with
`#` lines (title, account, dates), then `#---…业务明细列表---…`, the header row, the rows, and
`#---…业务明细列表结束---…` followed by `#交易合计：N笔…` and `#退款合计：M笔…`. Fields are padded with
tabs (so Excel keeps long numbers as text). The account bill has the same frame (`账务明细列表`,
`#支出合计：N笔，共…元`, `#收入合计：M笔，共…元`). Format and sources: docs/gateway-bills.md.
"""

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime

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
ACCOUNT_START, ACCOUNT_END = "账务明细列表", "账务明细列表结束"
ACCOUNT_COLUMNS = {
    "serial": "账务流水号",
    "order": "商户订单号",
    "at": "发生时间",
    "income": "收入金额(+元)",
    "expense": "支出金额(-元)",
    "kind": "业务类型",
}
_ACCOUNT_COUNT_RE = re.compile(r"#(收入|支出)合计[:：]\s*([0-9]+)\s*笔")
MAX_FILES = 16


def parse_zip(data: bytes, currency: str = "CNY") -> list[BillLine]:
    """The payments and refunds of one trade bill zip; BillError if it is not in Alipay's format."""
    return parse_detail(_member(data, START_MARK, "业务明细"), currency)


def parse_account_zip(data: bytes) -> "list[AccountLine]":
    """The movements of one account bill zip (bill_type=signcustomer, 账务明细)."""
    return parse_account(_member(data, ACCOUNT_START, "账务明细"))


def _member(data: bytes, mark: str, what: str) -> str:
    """The text of the zip's file whose table opens with `mark` (the detail, not the summary)."""
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
            if any(_mark(row) == mark for row in text.splitlines()[:16]):
                return text
    raise BillError(f"alipay bill: no {what} file in the zip")


@dataclass(frozen=True)
class AccountLine:
    """One movement of the Alipay account's balance (账务明细)."""

    number: str  # 商户订单号 (a transfer's out_biz_no), else 账务流水号 (a movement made by hand)
    kind: str  # 业务类型: 转账, 在线支付, 交易退款, 收费, 提现 …
    at: datetime
    cents: int  # signed: money in positive, money out negative


def parse_account(text: str) -> list[AccountLine]:
    rows = text.splitlines()
    table, start = _table(rows, ACCOUNT_START, ACCOUNT_END)
    header = [_name(cell) for cell in table[0]]
    try:
        where = {key: header.index(name) for key, name in ACCOUNT_COLUMNS.items()}
    except ValueError:
        raise BillError("alipay account bill: a documented column is missing") from None
    lines = []
    for number, record in enumerate(table[1:], start=start + 3):
        cells = [cell.strip() for cell in record]
        if not any(cells):
            continue
        at = f"alipay account bill line {number}"
        if len(cells) < len(header):
            raise BillError(f"{at}: too few fields")
        income, expense = cents(cells[where["income"]] or "0", at), cents(cells[where["expense"]] or "0", at)
        if income < 0 or (income and expense):
            raise BillError(f"{at}: not one movement")
        name = cells[where["order"]] or cells[where["serial"]]
        if not name or len(name) > 64:
            raise BillError(f"{at}: no 账务流水号")
        # 支出 is written negative in today's bills and positive in older ones: its sign is the column's.
        amount = income or -abs(expense)
        lines.append(AccountLine(name, cells[where["kind"]], bill_time(cells[where["at"]], at), amount))
    counts = {}
    for row in rows:
        found = _ACCOUNT_COUNT_RE.search(row.replace(",", "，"))
        if found and row.startswith("#"):
            counts[found.group(1)] = int(found.group(2))
    if set(counts) != {"收入", "支出"}:
        raise BillError("alipay account bill: the 收入合计/支出合计 summary lines are missing")
    if counts["收入"] != sum(1 for line in lines if line.cents > 0) or counts["支出"] != sum(
        1 for line in lines if line.cents < 0
    ):
        raise BillError("alipay account bill: the rows do not add up to the summary's counts")
    return lines


def _table(rows: list[str], start_mark: str, end_mark: str) -> tuple[list[list[str]], int]:
    start = next((n for n, row in enumerate(rows) if _mark(row) == start_mark), None)
    end = next((n for n, row in enumerate(rows) if _mark(row) == end_mark), None)
    if start is None or end is None or end <= start + 1:
        raise BillError(f"alipay bill: the {start_mark} marks are missing")
    return list(csv.reader(rows[start + 1 : end])), start


def parse_detail(text: str, currency: str = "CNY") -> list[BillLine]:
    rows = text.splitlines()
    table, start = _table(rows, START_MARK, END_MARK)
    end = next(n for n, row in enumerate(rows) if _mark(row) == END_MARK)
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


def _mark(row: str) -> str:
    row = row.strip()
    return row.strip("#-").strip() if row.startswith("#-") else ""


def _name(cell: str) -> str:
    return cell.strip().replace("（", "(").replace("）", ")")
