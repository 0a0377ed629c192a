"""The open-order caps: what a buyer may hold unpaid at once, counted in PostgreSQL.

Orders per email, orders and units per client address, orders per email and product, and units per
email and product (the caps of miaofa/risk/rules.py). Counted under advisory locks (one per email,
one per address), so they hold across API processes and against a burst of concurrent requests.

The quantity rule: the units of this order plus the units of the same email's unpaid orders for
the same product may not pass `RISK_MAX_UNITS_PER_BUYER_PER_PRODUCT`. Paid and delivered orders do
not count: the rule stops stock being locked for free, not buyers buying.

An order is counted from an admission row written here (before its workflow starts) joined with
its order row: it is open while the order is `awaiting_payment` or `in_review`, or — before the
workflow wrote the order — for the API's wait plus a margin. The API forgets the admission at once
when the order did not open (sold out, bad coupon …), so a refusal never counts against the buyer.
A client address is a keyed hash of its bucket (miaofa/risk/limiters.py).
"""

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.crypto.vault import derive, parse_vault_key
from miaofa.db.models import Order, OrderAdmission
from miaofa.errors import QuantityLimit, TooManyOpenOrders
from miaofa.risk.limiters import client_bucket
from miaofa.risk.rules import Rules

if TYPE_CHECKING:
    from miaofa.settings import Settings

OPEN_STATUSES = (c.AWAITING_PAYMENT, c.IN_REVIEW)  # stock held, nothing paid
PENDING_MARGIN_SECONDS = 30  # past the API's wait, an admission without an order row stops counting
PRUNE_EVERY_SECONDS = 600
KEEP_SECONDS = 86400  # admissions are kept a day at least (only hashes), then pruned


@dataclass(frozen=True)
class Windows:
    """How long an admission may count: the order's payment window, a review before it, and the API's
    wait for the workflow (an order held for review counts until its review ends, then its window)."""

    payment_seconds: float = 900
    review_seconds: float = 0
    pending_seconds: float = 60

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Windows":
        return cls(
            payment_seconds=settings.payment_window_seconds,
            review_seconds=settings.review_window_seconds,
            pending_seconds=settings.update_timeout_seconds + PENDING_MARGIN_SECONDS,
        )

    @property
    def longest(self) -> float:
        """The longest an admission can count (a minute's margin): older ones are never read."""
        return self.review_seconds + self.payment_seconds + self.pending_seconds + 60


@dataclass(frozen=True)
class Applicant:
    order_id: str
    buyer_hash: str
    client_hash: str | None  # None: the per-address rules do not apply (an exempt network)
    product_id: int
    quantity: int


def _lock_id(kind: str, value: str) -> int:
    return int.from_bytes(hashlib.sha256(f"miaofa/risk/{kind}/{value}".encode()).digest()[:8], "big", signed=True)


class Admission:
    """The open-order caps, counted in PostgreSQL (the rates are the rule chain's: miaofa/risk/chain.py)."""

    def __init__(self, windows: Windows, vault_key: str) -> None:
        self.windows = windows
        self._client_key = derive(parse_vault_key(vault_key), "miaofa/risk/client-address")
        self._pruned_at = 0.0

    def client_hash(self, ip: str) -> str:
        return hmac.new(self._client_key, client_bucket(ip).encode(), hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def applies(caps: Rules, client_hash: str | None) -> bool:
        """Whether any open-order cap applies to this request (else no database round trip)."""
        return caps.buyer_caps or (caps.client_caps and client_hash is not None)

    async def admit(self, session: AsyncSession, caps: Rules, applicant: Applicant, at: datetime) -> bool:
        """Check the open-order caps in force and record the admission, in the caller's transaction.

        Returns False when this order id was admitted before (a retried Idempotency-Key): it is
        already counted, so it is not refused for its own reservation. Raises TooManyOpenOrders or
        QuantityLimit otherwise.
        """
        client = applicant.client_hash if caps.client_caps else None
        locks = sorted({_lock_id("buyer", applicant.buyer_hash)} | ({_lock_id("client", client)} if client else set()))
        for lock in locks:  # sorted: two requests never wait on each other in opposite order
            await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
        if await session.get(OrderAdmission, applicant.order_id) is not None:
            return False
        who = OrderAdmission.buyer_hash == applicant.buyer_hash
        if client:
            who = or_(who, OrderAdmission.client_hash == client)
        since = at - timedelta(seconds=self.windows.longest)
        pending_since = at - timedelta(seconds=self.windows.pending_seconds)
        rows = (
            await session.execute(
                select(
                    OrderAdmission.buyer_hash,
                    OrderAdmission.client_hash,
                    OrderAdmission.product_id,
                    OrderAdmission.quantity,
                )
                .outerjoin(Order, Order.id == OrderAdmission.order_id)
                .where(
                    who,
                    OrderAdmission.created_at > since,
                    or_(
                        Order.status.in_(OPEN_STATUSES),
                        and_(Order.id.is_(None), OrderAdmission.created_at > pending_since),
                    ),
                )
            )
        ).all()
        mine = [row for row in rows if row.buyer_hash == applicant.buyer_hash]
        this_product = [row for row in mine if row.product_id == applicant.product_id]
        from_client = [row for row in rows if client and row.client_hash == client]
        minutes = max(1, round(self.windows.payment_seconds / 60))
        if caps.open_per_email and len(mine) >= caps.open_per_email:
            raise TooManyOpenOrders(
                f"this email already has {len(mine)} unpaid orders; pay one, or wait until it expires "
                f"(at most {minutes} min), before opening another"
            )
        if caps.open_per_buyer_product and len(this_product) >= caps.open_per_buyer_product:
            raise TooManyOpenOrders(
                f"this email already has {len(this_product)} unpaid orders for this product; pay one first"
            )
        held = sum(row.quantity for row in this_product)
        if caps.units_per_buyer_product and held + applicant.quantity > caps.units_per_buyer_product:
            raise QuantityLimit(
                f"at most {caps.units_per_buyer_product} units of this product per buyer at a time "
                f"({held} already held in unpaid orders)"
            )
        if caps.open_per_ip and len(from_client) >= caps.open_per_ip:
            raise TooManyOpenOrders("too many unpaid orders from your network; pay one, or wait until it expires")
        units = sum(row.quantity for row in from_client)
        if caps.open_units_per_ip and units + applicant.quantity > caps.open_units_per_ip:
            raise TooManyOpenOrders("too many units held unpaid from your network; pay for them first")
        session.add(
            OrderAdmission(
                order_id=applicant.order_id,
                buyer_hash=applicant.buyer_hash,
                client_hash=applicant.client_hash or "",
                product_id=applicant.product_id,
                quantity=applicant.quantity,
                created_at=at,
            )
        )
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            keep = max(KEEP_SECONDS, self.windows.longest)
            await session.execute(
                delete(OrderAdmission).where(OrderAdmission.created_at < at - timedelta(seconds=keep))
            )
        return True


async def forget(session: AsyncSession, order_id: str) -> None:
    """The order did not open (sold out, refused): its admission stops counting at once."""
    await session.execute(delete(OrderAdmission).where(OrderAdmission.order_id == order_id))
