"""What every payment gateway adapter offers the shop.

The workflow only ever sees these plain results; the adapters turn each gateway's own protocol
(signatures, amounts in yuan or fen, status names) into them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

PaymentStatus = Literal["pending", "paid", "closed", "refunded", "unknown"]
QueryChannel = Literal["primary", "backup"]


class GatewayError(Exception):
    """The gateway could not be reached or answered with an error; worth retrying."""


class GatewayRefused(GatewayError):
    """The gateway understood and said no (not paid, unknown payment): retrying changes nothing."""


class InvalidNotify(Exception):
    """A notify that must not be trusted (bad signature, stale, malformed)."""


class Unsupported(GatewayError):
    """The gateway has no such operation (a statement, a backup query host): asking again changes nothing."""


class StatementNotReady(GatewayError):
    """The gateway has not published the bill of this day yet (a day bill comes out the next
    morning): try again later; never a sign that a payment is missing."""

    def __init__(self, gateway: str, day: str) -> None:
        super().__init__(f"{gateway}: the bill of {day} is not ready yet")
        self.gateway, self.day = gateway, day


@dataclass(frozen=True)
class PaymentRequest:
    order_id: str
    amount_cents: int
    currency: str
    subject: str
    notify_url: str
    expires_at: datetime
    return_url: str | None = None  # where the buyer's browser goes after paying (never proof)


@dataclass(frozen=True)
class CreatedPayment:
    payment_id: str
    pay_url: str


@dataclass(frozen=True)
class PaymentState:
    payment_id: str
    order_id: str
    status: PaymentStatus
    amount_cents: int
    currency: str
    paid_at: datetime | None = None


@dataclass(frozen=True)
class Notice:
    """A verified notify: the gateway says this payment reached this status."""

    payment_id: str
    order_id: str
    merchant_id: str | None  # None: the gateway authenticates the account itself (Stripe's webhook secret)
    status: PaymentStatus
    amount_cents: int
    currency: str
    paid_at: datetime | None
    event_id: str | None = None  # the gateway's own id of this message (Stripe's evt_…, WeChat's id), for logs


@dataclass(frozen=True)
class Ack:
    """The exact answer a gateway expects to a notify."""

    status_code: int
    body: str
    media_type: str = "text/plain"


class Gateway(Protocol):
    name: str
    merchant_id: str
    # Optional capabilities: the saga and reconciliation ask before they use them.
    query_channels: tuple[QueryChannel, ...]  # ("primary",) or ("primary", "backup") for a second host
    has_statement: bool  # statement() lists payments for reconciliation
    partial_refund: bool  # refund() may return less than the whole amount
    # False where the query answer is unsigned (epay, epusdt): it may say "not paid yet", never prove a
    # payment; only a verified notify does. Stray payments from such a gateway are judged by their notify.
    query_proves_payment: bool

    async def aclose(self) -> None: ...

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment: ...

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState: ...

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        """Close an unpaid payment. If it was paid meanwhile, return the paid state instead."""
        ...

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState: ...

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        """Every payment paid within [start, end), refunded ones included (the bill download).
        Raises Unsupported when has_statement is False, StatementNotReady for a day whose bill is not
        out yet. A gateway with day bills also has `bill_zone` (the zone its days are cut in)."""
        ...

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        """Check signature and freshness and parse; raise InvalidNotify otherwise. Async: some gateways
        fetch the key that signed it (WeChat Pay's platform certificates)."""
        ...

    def ack(self) -> Ack: ...

    def nack(self, reason: str) -> Ack: ...
