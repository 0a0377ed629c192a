"""Order admission: the open-order caps, and the small in-memory pieces the rule chain is built of.

The rule chain (miaofa/risk_chain.py) runs the cheap memory rules first — blocklists, quantity, the
rates per address, email and device in sliding windows (`SlidingWindow` here, per API process: with
N API processes a client gets at most N times the rate; a brake on bursts) — then these caps:

**Open-order caps** — what a buyer may hold unpaid at once: orders per email, orders and units
per client address, orders per email and product, and units per email and product. Counted in
PostgreSQL under advisory locks (one per email, one per address), so they hold across API
processes and against a burst of concurrent requests.

The quantity rule: the units of this order plus the units of the same email's unpaid orders for
the same product may not pass `RISK_MAX_UNITS_PER_BUYER_PER_PRODUCT`. Paid and delivered orders do
not count: the rule stops stock being locked for free, not buyers buying.

An order is counted from an admission row written here (before its workflow starts) joined with
its order row: it is open while the order is `awaiting_payment`, or — before the workflow wrote the
order — for the API's wait plus a margin. The API forgets the admission at once when the order did
not open (sold out, bad coupon …), so a refusal never counts against the buyer.

Also here: the small in-memory guards of other buyer endpoints (live streams per address, the
"I have paid" interval per order). A client address is a keyed hash, an IPv6 address counted by
its /64 (one subscriber's network); an email only ever appears as its buyer hash.
"""

import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.db.models import Order, OrderAdmission
from miaofa.errors import QuantityLimit, TooManyOpenOrders, TooManyRequests
from miaofa.vault import derive, parse_vault_key

OPEN_STATUSES = (c.AWAITING_PAYMENT, c.IN_REVIEW)  # stock held, nothing paid
PENDING_MARGIN_SECONDS = 30  # past the API's wait, an admission without an order row stops counting
PRUNE_EVERY_SECONDS = 600
KEEP_SECONDS = 86400  # admissions are kept a day at least (only hashes), then pruned
WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    open_per_email: int = 0
    open_per_ip: int = 0
    open_units_per_ip: int = 0
    open_per_buyer_product: int = 0
    units_per_buyer_product: int = 0
    payment_window_seconds: float = 900
    review_window_seconds: float = 0  # an order held for review counts until its review ends, then its window
    pending_seconds: float = 60

    @property
    def buyer_caps(self) -> bool:
        return bool(self.open_per_email or self.open_per_buyer_product or self.units_per_buyer_product)

    @property
    def client_caps(self) -> bool:
        return bool(self.open_per_ip or self.open_units_per_ip)


# ---- in memory ---------------------------------------------------------------------------------


class SlidingWindow:
    """At most `limit` hits per key in any `window` seconds (a log of hit times per key).

    Memory is bounded: past `max_keys` keys, the least recently hit are dropped (they can only
    have been under their limit for longer)."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS, max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may hit again; 0 when it may now."""
        if self.limit <= 0:
            return 0.0
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return 0.0 if len(hits) < self.limit else hits[0] + self.window - now

    def hit(self, key: str, now: float) -> None:
        if self.limit <= 0:
            return
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        hits.append(now)


class MinInterval:
    """One pass per key every `seconds` (e.g. "I have paid" per order)."""

    def __init__(self, seconds: float, max_keys: int = 100_000) -> None:
        self.seconds, self.max_keys = seconds, max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0 and counts the pass when `key` may pass now; otherwise the seconds left to wait."""
        if self.seconds <= 0:
            return 0.0
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return self.seconds - (now - last)
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return 0.0


class Slots:
    """At most `limit` concurrent holders per key (e.g. live event streams per client address)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        held = self._held.get(key, 0)
        if self.limit > 0 and held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


# ---- the admission -------------------------------------------------------------------------------


def client_bucket(ip: str) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


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
    """The open-order caps, counted in PostgreSQL (the rates are the rule chain's: miaofa/risk_chain.py)."""

    def __init__(self, limits: Limits, vault_key: str) -> None:
        self.limits = limits
        self._client_key = derive(parse_vault_key(vault_key), "miaofa/risk/client-address")
        self._pruned_at = 0.0

    def client_hash(self, ip: str) -> str:
        return hmac.new(self._client_key, client_bucket(ip).encode(), hashlib.sha256).hexdigest()[:32]

    def applies(self, client_hash: str | None) -> bool:
        """Whether any open-order cap applies to this request (else no database round trip)."""
        return self.limits.buyer_caps or (self.limits.client_caps and client_hash is not None)

    async def admit(self, session: AsyncSession, applicant: Applicant, at: datetime) -> bool:
        """Check the open-order caps and record the admission, in the caller's transaction.

        Returns False when this order id was admitted before (a retried Idempotency-Key): it is
        already counted, so it is not refused for its own reservation. Raises TooManyOpenOrders or
        QuantityLimit otherwise.
        """
        limits = self.limits
        client = applicant.client_hash if limits.client_caps else None
        locks = sorted({_lock_id("buyer", applicant.buyer_hash)} | ({_lock_id("client", client)} if client else set()))
        for lock in locks:  # sorted: two requests never wait on each other in opposite order
            await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
        if await session.get(OrderAdmission, applicant.order_id) is not None:
            return False
        who = OrderAdmission.buyer_hash == applicant.buyer_hash
        if client:
            who = or_(who, OrderAdmission.client_hash == client)
        since = at - timedelta(seconds=limits.review_window_seconds + limits.payment_window_seconds
                               + limits.pending_seconds + 60)
        pending_since = at - timedelta(seconds=limits.pending_seconds)
        rows = (await session.execute(
            select(OrderAdmission.buyer_hash, OrderAdmission.client_hash, OrderAdmission.product_id,
                   OrderAdmission.quantity)
            .outerjoin(Order, Order.id == OrderAdmission.order_id)
            .where(who, OrderAdmission.created_at > since,
                   or_(Order.status.in_(OPEN_STATUSES),
                       and_(Order.id.is_(None), OrderAdmission.created_at > pending_since))))).all()
        mine = [row for row in rows if row.buyer_hash == applicant.buyer_hash]
        this_product = [row for row in mine if row.product_id == applicant.product_id]
        from_client = [row for row in rows if client and row.client_hash == client]
        minutes = max(1, round(limits.payment_window_seconds / 60))
        if limits.open_per_email and len(mine) >= limits.open_per_email:
            raise TooManyOpenOrders(
                f"this email already has {len(mine)} unpaid orders; pay one, or wait until it expires "
                f"(at most {minutes} min), before opening another")
        if limits.open_per_buyer_product and len(this_product) >= limits.open_per_buyer_product:
            raise TooManyOpenOrders(
                f"this email already has {len(this_product)} unpaid orders for this product; pay one first")
        held = sum(row.quantity for row in this_product)
        if limits.units_per_buyer_product and held + applicant.quantity > limits.units_per_buyer_product:
            raise QuantityLimit(
                f"at most {limits.units_per_buyer_product} units of this product per buyer at a time "
                f"({held} already held in unpaid orders)")
        if limits.open_per_ip and len(from_client) >= limits.open_per_ip:
            raise TooManyOpenOrders("too many unpaid orders from your network; pay one, or wait until it expires")
        units = sum(row.quantity for row in from_client)
        if limits.open_units_per_ip and units + applicant.quantity > limits.open_units_per_ip:
            raise TooManyOpenOrders("too many units held unpaid from your network; pay for them first")
        session.add(OrderAdmission(order_id=applicant.order_id, buyer_hash=applicant.buyer_hash,
                                   client_hash=applicant.client_hash or "", product_id=applicant.product_id,
                                   quantity=applicant.quantity, created_at=at))
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            keep = max(KEEP_SECONDS, limits.review_window_seconds + limits.payment_window_seconds
                       + limits.pending_seconds + 60)
            await session.execute(delete(OrderAdmission).where(OrderAdmission.created_at < at - timedelta(seconds=keep)))
        return True


async def forget(session: AsyncSession, order_id: str) -> None:
    """The order did not open (sold out, refused): its admission stops counting at once."""
    await session.execute(delete(OrderAdmission).where(OrderAdmission.order_id == order_id))


class Guards:
    """This API process's buyer-endpoint guards, built once from the settings."""

    def __init__(self, settings) -> None:
        self.streams = Slots(settings.sse_max_streams_per_ip)
        self.check_payment = MinInterval(settings.check_payment_interval_seconds)


class LookupRate:
    """`POST /orders/lookup`: per client address in a sliding minute, per email in a sliding hour.

    Counted alike whether the email has orders or not, so the limit reveals nothing."""

    def __init__(self, settings) -> None:
        self._per_ip = SlidingWindow(settings.lookup_rate_per_ip_per_minute, 60.0)
        self._per_email = SlidingWindow(settings.lookup_rate_per_email_per_hour, 3600.0)

    def check(self, client: str | None, buyer_hash: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if client is not None and (wait := self._per_ip.wait(client, now)):
            raise TooManyRequests(f"too many lookups from your address; try again in {int(wait + 0.999)} s",
                                  retry_after=wait)
        if wait := self._per_email.wait(buyer_hash, now):
            raise TooManyRequests(f"too many lookups for this email; try again in {int(wait + 0.999)} s",
                                  retry_after=wait)
        if client is not None:
            self._per_ip.hit(client, now)
        self._per_email.hit(buyer_hash, now)
