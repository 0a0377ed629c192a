"""WeChat Pay v3 bills: the trade bill (交易账单, /v3/bill/tradebill) and the fund-flow bill
(资金账单, /v3/bill/fundflowbill), checked against the SHA1 the API gave and read into lines.

A bill is UTF-8 text, comma separated: a header row, detail rows whose every field starts with a
backtick (so Excel keeps long numbers as text), then a summary header row and one summary row.
Format and sources: docs/gateway-bills.md.
"""

import gzip
import hashlib
import hmac
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from miaofa.gateways import wechat_wire as wire
from miaofa.gateways.base import GatewayError, StatementNotReady
from miaofa.gateways.bills import (
    BillError,
    BillLine,
    bill_time,
    bounded_read,
    cents,
    check_ready,
    day_window,
    download_url_ok,
    fee_cents,
)

if TYPE_CHECKING:  # the adapter imports this module
    from miaofa.gateways.wechat import WechatGateway

TRADE_COLUMNS = {
    "at": "交易时间",
    "out_trade_no": "商户订单号",
    "state": "交易状态",
    "currency": "货币种类",
    "settled": "应结订单金额",
    "out_refund_no": "商户退款单号",
    "refund": "退款金额",
    "fee": "手续费",
}
TRADE_SUMMARY_COUNT = "总交易单数"
FUND_COLUMNS = {
    "at": "记账时间",
    "business_no": "微信支付业务单号",
    "name": "业务名称",
    "kind": "业务类型",
    "direction": "收支类型",
    "amount": "收支金额(元)",
    "voucher": "业务凭证号",
}
FUND_SUMMARY_COUNT = "资金流水总笔数"
_HEX_RE = re.compile(r"[0-9a-fA-F]{40}")
T = TypeVar("T")
GZIP_MAGIC = b"\x1f\x8b"
SURELY_OUT = timedelta(days=1)  # NO_STATEMENT_EXIST this long after the day: no trade that day


async def fetch_bill(
    gateway: "WechatGateway", op: str, path: str, day: date, params: dict[str, str], now: datetime
) -> str:
    """Ask for a day's bill, download it and check it against the hash WeChat's signed answer gave."""
    check_ready("wechat", day, now)
    response = await gateway.get(op, path, {"bill_date": str(day), **params, "tar_type": "GZIP"})
    code = wire.error_code(response)
    # STATEMENT_CREATING: still being made. NO_STATEMENT_EXIST: not made yet, or a day without a
    # trade: taken as an empty day only once the bill is well past due.
    if code == "STATEMENT_CREATING" or (code == "NO_STATEMENT_EXIST" and now < day_window(day)[1] + SURELY_OUT):
        raise StatementNotReady("wechat", str(day))
    if code == "NO_STATEMENT_EXIST":
        return ""
    data = gateway.expect_json(op, response)
    url = data.get("download_url")
    parts = urlsplit(url if isinstance(url, str) else "")
    if not download_url_ok(url) or f"{parts.scheme}://{parts.netloc}" not in gateway.origins():
        raise GatewayError(f"wechat {op}: malformed download_url")  # our signature goes to WeChat only
    # The link as given, its query unchanged: the signature covers the exact path and query.
    download = await gateway.get(f"{op} download", f"{parts.path}?{parts.query}", {}, verify=False)
    if download.status_code != 200:
        raise GatewayError(f"wechat {op} download: HTTP {download.status_code}")
    try:
        return unpack(
            download.content, download.content[:2] == GZIP_MAGIC, data.get("hash_type"), data.get("hash_value")
        )
    except BillError as exc:
        raise GatewayError(str(exc)) from None


def parsed(parse: Callable[[str], list[T]], text: str) -> list[T]:
    try:
        return parse(text) if text else []
    except BillError as exc:
        raise GatewayError(str(exc)) from None


@dataclass(frozen=True)
class FundLine:
    """One movement of the merchant's funds: money in or out, with the business numbers naming it."""

    at: datetime
    business_no: str  # WeChat's number of the business (a transfer's bill number, a refund id)
    name: str  # 业务名称
    kind: str  # 业务类型
    income: bool
    amount_cents: int
    voucher: str  # 业务凭证号: our own number of it (out_bill_no, out_batch_no …) where WeChat gives one


def unpack(content: bytes, gzipped: bool, hash_type: object, hash_value: object) -> str:
    """The bill's text, once its SHA1 (of the raw bill, after gunzip) matches what the API gave."""
    if hash_type != "SHA1" or not isinstance(hash_value, str) or not _HEX_RE.fullmatch(hash_value):
        raise BillError("wechat bill: no SHA1 to check the download against")
    if gzipped:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(content)) as stream:
                content = bounded_read(stream, "wechat bill")
        except (OSError, EOFError):
            raise BillError("wechat bill: not gzip") from None
    if not hmac.compare_digest(hashlib.sha1(content).hexdigest(), hash_value.lower()):
        raise BillError("wechat bill: the download does not match its hash")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BillError("wechat bill: not UTF-8") from None


def parse_trade(text: str) -> list[BillLine]:
    header, rows = _table(text, TRADE_SUMMARY_COUNT)
    where = _where(header, TRADE_COLUMNS)
    total = header.index("订单金额") if "订单金额" in header else where["settled"]
    asked = header.index("申请退款金额") if "申请退款金额" in header else where["refund"]
    lines = []
    for number, cells in rows:
        at = f"wechat bill line {number}"
        state, order_id = cells[where["state"]], cells[where["out_trade_no"]]
        if not order_id or len(order_id) > 64:
            raise BillError(f"{at}: no 商户订单号")
        currency = cells[where["currency"]]
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise BillError(f"{at}: not a currency")
        when, fee = bill_time(cells[where["at"]], at), fee_cents(cells[where["fee"]], at)
        if state == "SUCCESS":
            amount = cents(cells[total], at)
            if amount <= 0:
                raise BillError(f"{at}: a payment of no amount")
            lines.append(BillLine("payment", order_id, order_id, amount, currency, when, fee))
        elif state in ("REFUND", "REVOKED"):
            # REVOKED: paid, then cancelled (撤销) — its money went back like a whole refund.
            amount = abs(cents(cells[asked] or cells[where["refund"]] or cells[total], at))
            if amount == 0:
                raise BillError(f"{at}: a refund of no amount")
            refund_id = cells[where["out_refund_no"]]
            lines.append(BillLine("refund", order_id, order_id, amount, currency, when, fee, refund_id))
        else:
            raise BillError(f"{at}: unknown 交易状态")
    return lines


def parse_fund_flow(text: str) -> list[FundLine]:
    header, rows = _table(text, FUND_SUMMARY_COUNT)
    where = _where(header, FUND_COLUMNS)
    lines = []
    for number, cells in rows:
        at = f"wechat fund bill line {number}"
        direction = cells[where["direction"]]
        if direction not in ("收入", "支出"):
            raise BillError(f"{at}: unknown 收支类型")
        amount = abs(cents(cells[where["amount"]], at))
        lines.append(
            FundLine(
                bill_time(cells[where["at"]], at),
                cells[where["business_no"]],
                cells[where["name"]],
                cells[where["kind"]],
                direction == "收入",
                amount,
                cells[where["voucher"]],
            )
        )
    return lines


def _table(text: str, count_column: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the detail rows (numbered from 1 at the header), the summary's count checked."""
    raw = [row for row in text.splitlines()]
    while raw and not raw[-1].strip():
        raw.pop()
    if len(raw) < 3:
        raise BillError("wechat bill: no header, summary header and summary row")
    header = [_name(cell) for cell in raw[0].split(",")]
    summary_header = [_name(cell) for cell in raw[-2].split(",")]
    if count_column not in summary_header or raw[-2].startswith("`"):
        raise BillError("wechat bill: the summary header is missing")
    summary = _cells(raw[-1], len(summary_header), "wechat bill summary")
    rows = [(n, _cells(row, len(header), f"wechat bill line {n}")) for n, row in enumerate(raw[1:-2], start=2)]
    count = summary[summary_header.index(count_column)]
    if not count.isdigit() or int(count) != len(rows):
        raise BillError("wechat bill: the rows do not add up to the summary's count")
    return header, rows


def _cells(row: str, width: int, at: str) -> list[str]:
    # Every field starts with a backtick, and the fields are not quoted: a comma inside a product
    # name stays inside its field when the row is split at ",`".
    if not row.startswith("`"):
        raise BillError(f"{at}: a field without its backtick")
    cells = [cell.strip() for cell in row[1:].split(",`")]
    if len(cells) != width:
        raise BillError(f"{at}: {len(cells)} fields where the header has {width}")
    return cells


def _where(header: list[str], columns: dict[str, str]) -> dict[str, int]:
    try:
        return {key: header.index(name) for key, name in columns.items()}
    except ValueError:
        raise BillError("wechat bill: a documented column is missing") from None


def _name(cell: str) -> str:
    return cell.strip().lstrip("\ufeff").replace("（", "(").replace("）", ")")
