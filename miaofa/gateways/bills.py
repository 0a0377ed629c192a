"""What every gateway's bill (对账单) comes down to: lines of payments and refunds, the days a bill
covers, when a day's bill is out, and how the lines fold into the statement reconciliation compares.

Formats and sources: docs/gateway-bills.md.
"""

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol, TypeGuard
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from miaofa.gateways.base import PaymentState, StatementNotReady

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Alipay and WeChat Pay cut days at Beijing midnight and publish a day's bill the next morning: WeChat
# "after 10:00", Alipay "T+1, after 9-10:00". Asking earlier gets an error, never an empty bill.
READY_AFTER = timedelta(days=1, hours=10)
MAX_BILL_BYTES = 64 * 1024 * 1024  # a zip or gzip is inflated no further than this
DAYS_KEPT = 8  # parsed day bills an adapter keeps (a past day's bill never changes)


@dataclass(frozen=True)
class BillLine:
    """One row of a bill: a payment (its gross amount) or a refund (the amount refunded)."""

    kind: Literal["payment", "refund"]
    payment_id: str  # our id of the payment at the gateway (Alipay/WeChat: the order id; Stripe: cs_…)
    order_id: str
    amount_cents: int  # positive
    currency: str
    at: datetime  # aware: paid at, or refunded at
    fee_cents: int = 0  # the gateway's fee (a refund's: what it gave back, negative)
    refund_id: str = ""  # the refund's out_request_no / out_refund_no


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BillError(ValueError):
    """A bill that is not in the documented format; the message names the line, never its content."""


def bill_days(start: datetime, end: datetime, zone: ZoneInfo = SHANGHAI) -> list[date]:
    """The days (in the gateway's zone) that [start, end) touches."""
    if end <= start:
        return []
    first, last = start.astimezone(zone).date(), (end - timedelta(microseconds=1)).astimezone(zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_window(day: date, zone: ZoneInfo = SHANGHAI) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), zone)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def day_pieces(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[date, datetime, datetime]]:
    """[start, end) cut at the zone's midnights: each day's bill is compared over its own piece."""
    pieces = []
    for day in bill_days(start, end, zone):
        day_start, day_end = day_window(day, zone)
        pieces.append((day, max(start, day_start), min(end, day_end)))
    return pieces


def check_ready(gateway: str, day: date, now: datetime, zone: ZoneInfo = SHANGHAI) -> None:
    if now < datetime.combine(day, time(), zone) + READY_AFTER:
        raise StatementNotReady(gateway, day.isoformat())


def states(lines: Iterable[BillLine], start: datetime, end: datetime) -> list[PaymentState]:
    """The statement of [start, end): a payment paid in it is `paid` (its gross amount), or `refunded`
    when refunds in it took all of it back; a refund of an earlier payment, or a partial refund, is a
    `refunded` entry of the amount refunded, so a delivered order refunded at the gateway is flagged."""
    paid: OrderedDict[str, BillLine] = OrderedDict()
    refunded: OrderedDict[str, tuple[BillLine, int]] = OrderedDict()
    for line in lines:
        if not start <= line.at < end:
            continue
        if line.kind == "payment":
            paid[line.payment_id] = line
        else:
            first, total = refunded.get(line.payment_id, (line, 0))
            refunded[line.payment_id] = (first, total + line.amount_cents)
    found = []
    for payment_id, line in paid.items():
        refund = refunded.get(payment_id)
        if refund is not None and refund[1] >= line.amount_cents:
            del refunded[payment_id]
            found.append(_state(line, "refunded", line.amount_cents, line.at))
        else:
            found.append(_state(line, "paid", line.amount_cents, line.at))
    for payment_id, (line, total) in refunded.items():
        origin = paid.get(payment_id)
        found.append(_state(line, "refunded", total, origin.at if origin else None))
    return found


def _state(line: BillLine, status: Literal["paid", "refunded"], amount: int, paid_at: datetime | None) -> PaymentState:
    return PaymentState(line.payment_id, line.order_id, status, amount, line.currency, paid_at)


class DayCache:
    """The last few parsed day bills of one account, so each run does not download them again."""

    def __init__(self) -> None:
        self._days: OrderedDict[tuple[str, date], list[BillLine]] = OrderedDict()

    def get(self, kind: str, day: date) -> list[BillLine] | None:
        return self._days.get((kind, day))

    def put(self, kind: str, day: date, lines: list[BillLine]) -> None:
        self._days[(kind, day)] = lines
        while len(self._days) > DAYS_KEPT * 2:
            self._days.popitem(last=False)


_AMOUNT_RE = re.compile(r"-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?")
_FEE_RE = re.compile(r"-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?")


def cents(text: str, where: str) -> int:
    """A bill's yuan ("9.90", "-9.90", "0.00") in fen, sign kept; more than two decimals is refused."""
    if not _AMOUNT_RE.fullmatch(text):
        raise BillError(f"{where}: not an amount")
    return int(Decimal(text).scaleb(2))


def fee_cents(text: str, where: str) -> int:
    """A fee in yuan, to the fen: WeChat writes fees to five decimals ("0.00060"); half a fen rounds up."""
    if text == "":
        return 0
    if not _FEE_RE.fullmatch(text):
        raise BillError(f"{where}: not a fee")
    return int(Decimal(text).scaleb(2).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def bill_time(text: str, where: str, zone: ZoneInfo = SHANGHAI) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).astimezone(UTC)
    except ValueError:
        raise BillError(f"{where}: not a time") from None


def bounded_read(stream: Readable, where: str) -> bytes:
    """At most MAX_BILL_BYTES of an inflating stream: a bomb is refused, not inflated."""
    data = stream.read(MAX_BILL_BYTES + 1)
    if len(data) > MAX_BILL_BYTES:
        raise BillError(f"{where}: larger than {MAX_BILL_BYTES} bytes")
    return data


def download_url_ok(url: object) -> TypeGuard[str]:
    """A download link we may follow: https, or http to loopback (the tests' fakes)."""
    if not isinstance(url, str) or len(url) > 4096:
        return False
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return True
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
