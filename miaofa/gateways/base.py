"""What every payment gateway adapter offers the shop.

The workflow only ever sees these plain results; the adapters turn each gateway's own protocol
(signatures, amounts in yuan or fen, status names) into them.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Mapping, Protocol

PaymentStatus = Literal["pending", "paid", "closed", "refunded", "unknown"]
QueryChannel = Literal["primary", "backup"]


class GatewayError(Exception):
    """The gateway could not be reached or answered with an error; worth retrying."""


class GatewayRefused(GatewayError):
    """The gateway understood and said no (not paid, unknown payment): retrying changes nothing."""


class InvalidNotify(Exception):
    """A notify that must not be trusted (bad signature, stale, malformed)."""


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
    merchant_id: str
    status: PaymentStatus
    amount_cents: int
    currency: str
    paid_at: datetime | None


@dataclass(frozen=True)
class Ack:
    """The exact answer a gateway expects to a notify."""

    status_code: int
    body: str
    media_type: str = "text/plain"


class Gateway(Protocol):
    name: str
    merchant_id: str

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment: ...

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState: ...

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        """Close an unpaid payment. If it was paid meanwhile, return the paid state instead."""
        ...

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState: ...

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        """Every payment paid within [start, end), refunded ones included (the bill download)."""
        ...

    def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        """Check signature and freshness and parse; raise InvalidNotify otherwise."""
        ...

    def ack(self) -> Ack: ...

    def nack(self, reason: str) -> Ack: ...
