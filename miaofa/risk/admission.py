"""The open-order caps: what a buyer may hold unpaid at once, counted in PostgreSQL.

Orders per email, orders and units per client address, units per IPv6 /56 and /48, orders per email
and product, and units per email and product (the caps of miaofa/risk/rules.py). Counted under
advisory locks (one per email, one per address and network), so they hold across API processes and
against a burst of concurrent requests.

Those caps grow with the addresses an attacker holds. The product's own cap does not: once
`RISK_MAX_UNPAID_SHARE` of a product's unsold keys is held by unpaid orders, the product is contended,
and an order is admitted only from a buyer whose email (and, with the per-address caps on, whose
address, /56 and /48) holds none of it unpaid, for one unit. Honest buyers of a flash sale are each
such a newcomer; a few addresses lock at most the share, plus one unit per address they had not
used yet. The product's count takes no lock (buyers of one product never wait on each other): a
burst may pass the share by the orders admitted at that instant.

The quantity rule: the units of this order plus the units of the same email's unpaid orders for
the same product may not pass `RISK_MAX_UNITS_PER_BUYER_PER_PRODUCT`. Paid and delivered orders do
not count: the rule stops stock being locked for free, not buyers buying.

An order is counted from an admission row written here (before its workflow starts) joined with
its order row: it is open while the order is `awaiting_payment` or `in_review`, or — before the
workflow wrote the order — for the API's wait plus a margin. The API forgets the admission at once
when the order did not open (sold out, bad coupon …), so a refusal never counts against the buyer.
A client address is a keyed hash of its bucket, and of its networks (miaofa/risk/limiters.py).
"""

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa import inventory
from miaofa.crypto.vault import derive, parse_vault_key
from miaofa.db.models import Order, OrderAdmission
from miaofa.errors import QuantityLimit, TooManyOpenOrders
from miaofa.risk.limiters import client_bucket, network_buckets
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
    networks: tuple[str, str] = ("", "")  # keyed hashes of the client's /56 and /48 (Admission.network_hashes)


def _lock_id(kind: str, value: str) -> int:
    return int.from_bytes(hashlib.sha256(f"miaofa/risk/{kind}/{value}".encode()).digest()[:8], "big", signed=True)


class Admission:
    """The open-order caps, counted in PostgreSQL (the rates are the rule chain's: miaofa/risk/chain.py)."""

    def __init__(self, windows: Windows, vault_key: str) -> None:
        self.windows = windows
        self._client_key = derive(parse_vault_key(vault_key), "miaofa/risk/client-address")
        self._pruned_at = 0.0

    def client_hash(self, ip: str) -> str:
        return self._hash(client_bucket(ip))

    def network_hashes(self, ip: str) -> tuple[str, str]:
        fine, coarse = network_buckets(ip)
        return self._hash(fine), self._hash(coarse)

    def _hash(self, bucket: str) -> str:
        return hmac.new(self._client_key, bucket.encode(), hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def applies(caps: Rules, client_hash: str | None) -> bool:
        """Whether any open-order cap applies to this request (else no database round trip)."""
        return caps.buyer_caps or caps.unpaid_share > 0 or (caps.client_caps and client_hash is not None)

    async def admit(self, session: AsyncSession, caps: Rules, applicant: Applicant, at: datetime) -> bool:
        """Check the open-order caps in force and record the admission, in the caller's transaction.

        Returns False when this order id was admitted before (a retried Idempotency-Key): it is
        already counted, so it is not refused for its own reservation. Raises TooManyOpenOrders or
        QuantityLimit otherwise.
        """
        client = applicant.client_hash if caps.client_caps else None
        net56, net48 = applicant.networks if client else ("", "")
        # An IPv4 client's networks are its address: one lock, not three.
        addresses = {_lock_id("client", value) for value in (client, net56, net48) if value}
        locks = sorted({_lock_id("buyer", applicant.buyer_hash)} | addresses)
        for lock in locks:  # sorted: two requests never wait on each other in opposite order
            await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
        if await session.get(OrderAdmission, applicant.order_id) is not None:
            return False
        who = OrderAdmission.buyer_hash == applicant.buyer_hash
        if client:
            who = or_(who, OrderAdmission.client_hash == client)
        for column, value in ((OrderAdmission.net56_hash, net56), (OrderAdmission.net48_hash, net48)):
            if value and value != client:
                who = or_(who, column == value)
        rows = (
            await session.execute(
                select(
                    OrderAdmission.buyer_hash,
                    OrderAdmission.client_hash,
                    OrderAdmission.net56_hash,
                    OrderAdmission.net48_hash,
                    OrderAdmission.product_id,
                    OrderAdmission.quantity,
                )
                .outerjoin(Order, Order.id == OrderAdmission.order_id)
                .where(who, *self._open(at))
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
        for cap, value, of in (
            (caps.open_units_per_net56, net56, "net56_hash"),
            (caps.open_units_per_net48, net48, "net48_hash"),
        ):
            units = sum(row.quantity for row in rows if value and getattr(row, of) == value)
            if cap and units + applicant.quantity > cap:
                raise TooManyOpenOrders("too many units held unpaid from your network; pay for them first")
        if caps.unpaid_share > 0:
            await self._contended(
                session, caps, applicant, [row for row in rows if row.product_id == applicant.product_id], at
            )
        session.add(
            OrderAdmission(
                order_id=applicant.order_id,
                buyer_hash=applicant.buyer_hash,
                client_hash=applicant.client_hash or "",
                net56_hash=applicant.networks[0] if applicant.client_hash else "",
                net48_hash=applicant.networks[1] if applicant.client_hash else "",
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

    def _open(self, at: datetime) -> tuple[ColumnElement[bool], ...]:
        """An admission that still counts (joined with its order): the order is unpaid, or its
        workflow has not written it yet and the API may still be waiting for it."""
        since = at - timedelta(seconds=self.windows.longest)
        pending_since = at - timedelta(seconds=self.windows.pending_seconds)
        return (
            OrderAdmission.created_at > since,
            or_(
                Order.status.in_(OPEN_STATUSES),
                and_(Order.id.is_(None), OrderAdmission.created_at > pending_since),
            ),
        )

    async def _contended(
        self, session: AsyncSession, caps: Rules, applicant: Applicant, holding: list, at: datetime
    ) -> None:
        """The product's cap: past the unpaid share of its unsold keys, newcomers only, one unit each.

        `holding`: this buyer's (and, with the per-address caps, this address's and networks') unpaid
        admissions for the product."""
        held = await session.scalar(
            select(func.coalesce(func.sum(OrderAdmission.quantity), 0))
            .outerjoin(Order, Order.id == OrderAdmission.order_id)
            .where(OrderAdmission.product_id == applicant.product_id, *self._open(at))
        )
        if not held:
            return
        # Count the unsold keys only as far as the comparison needs: a large stock is never scanned.
        unsold = await inventory.unsold_up_to(session, applicant.product_id, math.floor(held / caps.unpaid_share) + 1)
        if not unsold or held < caps.unpaid_share * unsold:
            return  # (sold out: the reservation answers that)
        if holding:
            raise TooManyOpenOrders(
                "most of this product's stock is waiting for payment: pay for the unpaid order you hold "
                "(or wait until it expires) before opening another"
            )
        if applicant.quantity > 1:
            raise QuantityLimit(
                "most of this product's stock is waiting for payment: one unit per order until it is paid for "
                "or released"
            )


async def forget(session: AsyncSession, order_id: str) -> None:
    """The order did not open (sold out, refused): its admission stops counting at once."""
    await session.execute(delete(OrderAdmission).where(OrderAdmission.order_id == order_id))
