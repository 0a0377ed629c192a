"""The transactional outbox: emails and merchant webhooks, written in the transaction of what causes them.

A row is inserted in the transaction of the event that causes it (`emit`, with a typed `Event`), so
a rolled-back step sends nothing and a committed one is never forgotten. The worker's dispatcher
(miaofa.messaging.dispatcher) claims due rows with FOR UPDATE SKIP LOCKED, pushing their due time
forward by a lease, so two dispatchers never hold the same row at once; a dispatcher that dies
mid-send leaves the row due again when the lease ends.
"""

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Text, cast, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from miaofa.db.engine import rowcount
from miaofa.db.models import Merchant, Order, OutboxMessage, Product

EMAIL, WEBHOOK = "email", "webhook"
PENDING, SENT, SKIPPED, FAILED = "pending", "sent", "skipped", "failed"


class Event(StrEnum):
    """What happened to an order that someone outside hears about. Each is queued by the owner of
    the fact, by name: a status change by miaofa.orders.move, the late-delivery coupon by its step."""

    PAID = "order.paid"
    DELIVERED = "order.delivered"
    REFUNDED = "order.refunded"
    COUPON_ISSUED = "order.coupon_issued"


# Event → what it sends (channel, topic). The delivery email is not here: the saga sends it itself
# (an activity: it decrypts the keys), and support's resend re-runs it.
SENDS: dict[Event, tuple[tuple[str, str], ...]] = {
    Event.PAID: ((WEBHOOK, "order.paid"),),
    Event.DELIVERED: ((WEBHOOK, "order.delivered"),),
    Event.REFUNDED: ((WEBHOOK, "order.refunded"), (EMAIL, "email.refunded")),
    Event.COUPON_ISSUED: ((WEBHOOK, "order.coupon_issued"), (EMAIL, "email.coupon")),
}
LOOKUP_TOPIC = "email.lookup"


def _webhook_detail(order_id: str, at: datetime) -> ColumnElement[Any]:
    """{"at", "url"}: the product's webhook URL now, else its shop's (null: MIAOFA_WEBHOOK_URL for the
    default shop, nowhere for another), read inside the INSERT itself (no round trip), so every retry
    goes where the event was queued for."""
    url = (
        select(func.coalesce(Product.webhook_url, Merchant.webhook_url))
        .join(Order, Order.product_id == Product.id)
        .join(Merchant, Merchant.id == Order.merchant_id)
        .where(Order.id == order_id)
        .scalar_subquery()
    )
    return func.jsonb_build_object(
        cast(literal("at"), Text), cast(literal(at.isoformat()), Text), cast(literal("url"), Text), url
    )


def emit(session: AsyncSession, event: Event, order_id: str, at: datetime) -> None:
    """Queue what an event sends, in the caller's transaction (the one that makes it true)."""
    for channel, topic in SENDS[event]:
        detail: Any = _webhook_detail(order_id, at) if channel == WEBHOOK else {"at": at.isoformat()}
        session.add(
            OutboxMessage(
                event_id=uuid.uuid4().hex,
                channel=channel,
                topic=topic,
                order_id=order_id,
                detail=detail,
                status=PENDING,
                attempts=0,
                last_error="",
            )
        )


def queue_lookup(session: AsyncSession, buyer_hash: str, lang: str | None) -> None:
    """The buyer asked for links to their orders: the sender finds them (if any) by the buyer hash."""
    session.add(
        OutboxMessage(
            event_id=uuid.uuid4().hex,
            channel=EMAIL,
            topic=LOOKUP_TOPIC,
            buyer_hash=buyer_hash,
            detail={"lang": lang} if lang else {},
            status=PENDING,
            attempts=0,
            last_error="",
        )
    )


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    channel: str
    topic: str
    order_id: str | None
    buyer_hash: str | None
    detail: dict[str, Any]
    attempts: int  # counting this one
    created_at: datetime


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 5
    max_seconds: float = 3600
    give_up_seconds: float = 86400

    def delay(self, attempts: int) -> float:
        """Exponential from base, capped, with ±20 % jitter so a burst of failures spreads out."""
        delay = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.2)


_CLAIM = text("""
    UPDATE outbox SET next_attempt_at = now() + make_interval(secs => :lease), attempts = attempts + 1
    WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED)
    RETURNING id, event_id, channel, topic, order_id, buyer_hash, detail, attempts, created_at""")


async def claim(session: AsyncSession, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due rows for `lease_seconds` (commit right after, then send)."""
    rows = await session.execute(_CLAIM, {"limit": limit, "lease": lease_seconds})
    return [Claimed(**row._mapping) for row in rows]


async def skip_unsendable(session: AsyncSession, *, no_webhook_url: bool, no_mail: bool) -> None:
    """Mark at once, in one statement each, what has nowhere to go: webhooks queued for no URL of
    their product's own when no global URL is set, and every email when no SMTP server is. Cheaper
    than claiming and reading each row, and most shops have no webhook."""
    # A row without "url" was queued before rows kept theirs: its product's URL now decides. A shop
    # other than the default never falls back to the platform's URL.
    await session.execute(
        text("""
        UPDATE outbox o SET status = 'skipped', sent_at = now()
        FROM orders r JOIN products p ON p.id = r.product_id
        WHERE o.status = 'pending' AND o.channel = 'webhook' AND r.id = o.order_id
          AND (CASE WHEN o.detail -> 'url' IS NULL THEN p.webhook_url ELSE o.detail ->> 'url' END) IS NULL
          AND (:no_global OR r.merchant_id <> 'default')"""),
        {"no_global": no_webhook_url},
    )
    if no_mail:
        await session.execute(
            text("UPDATE outbox SET status = 'skipped', sent_at = now() WHERE status = 'pending' AND channel = 'email'")
        )


async def finish(session: AsyncSession, message: Claimed, status: str) -> bool:
    """Mark sent (or skipped). False when the row is no longer ours (its lease ran out and it was
    claimed again): the newer claim decides."""
    done = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.id, OutboxMessage.attempts == message.attempts, OutboxMessage.status == PENDING
        )
        .values(status=status, sent_at=text("now()"), last_error="")
    )
    return rowcount(done) == 1


async def retry_or_fail(
    session: AsyncSession, message: Claimed, error: str, backoff: Backoff, *, final: bool = False
) -> str | None:
    """After a failed send: due again after the backoff, or failed for good past the give-up age (or
    at once when `final`: retrying cannot help).

    Returns the new status (pending or failed), None when the row is no longer ours."""
    age = await session.scalar(text("SELECT extract(epoch FROM now() - :created)"), {"created": message.created_at})
    status = FAILED if final or float(age) >= backoff.give_up_seconds else PENDING
    values: dict[str, Any] = {"status": status, "last_error": error[:80]}
    if status == PENDING:
        values["next_attempt_at"] = text(f"now() + make_interval(secs => {backoff.delay(message.attempts):.3f})")
    done = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.id, OutboxMessage.attempts == message.attempts, OutboxMessage.status == PENDING
        )
        .values(**values)
    )
    return status if rowcount(done) == 1 else None


async def prune(session: AsyncSession, older_than: timedelta) -> int:
    """Sent and skipped rows are history after a while; failed ones stay for a person to look at."""
    pruned = await session.execute(
        text(
            "DELETE FROM outbox WHERE status IN ('sent','skipped') AND created_at < now() - make_interval(secs => :s)"
        ),
        {"s": older_than.total_seconds()},
    )
    return rowcount(pruned)
