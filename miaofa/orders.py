"""Order rows: the status machine, the timeline writer and the buyer's view of an order."""

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa import inventory
from miaofa.crypto.vault import Vault
from miaofa.db.engine import rowcount
from miaofa.db.models import Coupon, Order, OrderEvent, Payment
from miaofa.errors import OrderNotFound
from miaofa.messaging import outbox

# The order's status machine (README, "Order states"): each status and the ones it may move to. A
# status is entered once, by one INSERT (awaiting_payment or in_review); every later move goes
# through `move`, which checks this table in the UPDATE itself, so no step can move an order back.
TRANSITIONS: dict[str, frozenset[str]] = {
    c.IN_REVIEW: frozenset({c.AWAITING_PAYMENT, c.REJECTED}),  # support approves or rejects (or time runs out)
    c.AWAITING_PAYMENT: frozenset({c.PAID, c.EXPIRED, c.CANCELLED}),
    c.PAID: frozenset({c.DELIVERED, c.DELIVERY_FAILED, c.REFUNDED}),  # refunded: paid late, no stock left
    c.DELIVERY_FAILED: frozenset({c.REFUNDED}),
    c.DELIVERED: frozenset({c.REFUNDED}),  # support's refund
    c.EXPIRED: frozenset({c.PAID}),  # a payment after the window
    c.CANCELLED: frozenset({c.PAID}),  # a payment after the cancel
    c.REJECTED: frozenset(),
    c.REFUNDED: frozenset(),
}
_FROM: dict[str, tuple[str, ...]] = {
    to: tuple(sorted(f for f, tos in TRANSITIONS.items() if to in tos)) for to in c.STATUSES
}
# Entering these statuses is news for the outside (webhooks, the refund email).
ANNOUNCED: dict[str, outbox.Event] = {
    c.PAID: outbox.Event.PAID,
    c.DELIVERED: outbox.Event.DELIVERED,
    c.REFUNDED: outbox.Event.REFUNDED,
}

# INSERT … SELECT … WHERE NOT EXISTS: the look and the write in one round trip.
EVENTS = cast(Table, OrderEvent.__table__)  # Core, not the ORM's bulk insert: no unit of work per stage
_ADD_ONCE = (
    insert(EVENTS)
    .from_select(
        ["order_id", "stage", "at", "detail"],
        select(
            bindparam("order_id", type_=OrderEvent.order_id.type),
            bindparam("stage", type_=OrderEvent.stage.type),
            bindparam("at", type_=OrderEvent.at.type),
            bindparam("detail", type_=JSONB),
        ).where(~exists().where(OrderEvent.order_id == bindparam("order_id"), OrderEvent.stage == bindparam("stage"))),
    )
    .returning(OrderEvent.id)
)


class IllegalTransition(Exception):
    """A move the status machine forbids: a broken invariant, never healed by a retry."""

    def __init__(self, order_id: str, current: str | None, to: str) -> None:
        super().__init__(f"order {order_id} cannot move from {current or 'nowhere (no such order)'} to {to}")
        self.order_id, self.current, self.to = order_id, current, to


async def add_event(
    session: AsyncSession,
    order_id: str,
    stage: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
    *,
    once: bool = True,
) -> bool:
    """Append a stage to the timeline; with once=True a retried step does not write it twice. True when
    written (a step's first run: what counts it in the metrics once). One statement either way: the
    order path writes several stages per order (docs/benchmarks.md)."""
    row = {"order_id": order_id, "stage": stage, "at": at, "detail": detail or {}}
    if not once:
        await session.execute(insert(EVENTS).values(row))
        return True
    first = await session.scalar(_ADD_ONCE, row)
    return first is not None


async def add_new_events(
    session: AsyncSession, order_id: str, at: datetime, stages: list[tuple[str, dict[str, Any]]]
) -> None:
    """The first stages of an order inserted in this transaction: nothing to look for, one statement."""
    rows = [{"order_id": order_id, "stage": stage, "at": at, "detail": detail} for stage, detail in stages]
    await session.execute(insert(EVENTS).values(rows))


async def move(session: AsyncSession, order_id: str, to: str, at: datetime, **values: Any) -> bool:
    """The one writer of orders.status: move the order to `to` (with `values`, e.g. paid_at) if the
    table allows it from its status now, checked in the UPDATE, and queue the event it announces.

    True when it moved. False when the order is in `to` already (a retried step whose first run
    committed): nothing is written again. Raises IllegalTransition for any other status, or no order.
    """
    sources = _FROM.get(to, ())
    if sources:
        moved = await session.execute(
            update(Order).where(Order.id == order_id, Order.status.in_(sources)).values(status=to, **values)
        )
        if rowcount(moved) == 1:
            if to in ANNOUNCED:
                outbox.emit(session, ANNOUNCED[to], order_id, at)
            return True
    current = await session.scalar(select(Order.status).where(Order.id == order_id))
    if current == to:
        return False
    raise IllegalTransition(order_id, current, to)


async def get_order(session: AsyncSession, order_id: str, merchant_id: str | None = None) -> Order:
    """The order; with merchant_id, only that merchant's (another's is not found, alike)."""
    order = await session.get(Order, order_id) if len(order_id) <= 40 else None
    if order is None or (merchant_id is not None and order.merchant_id != merchant_id):
        raise OrderNotFound("no such order")
    return order


async def merchant_of(session: AsyncSession, order_id: str) -> str | None:
    """The order's merchant, or None when there is no such order."""
    if len(order_id) > 40:
        return None
    return await session.scalar(select(Order.merchant_id).where(Order.id == order_id))


async def statuses(session: AsyncSession, order_ids: list[str]) -> dict[str, str]:
    """The status of each of these orders (the live streams' one change feed reads them together)."""
    found = await session.execute(select(Order.id, Order.status).where(Order.id.in_(order_ids)))
    return {order_id: status for order_id, status in found.all()}


async def order_view(session: AsyncSession, vault: Vault, order_id: str, *, with_keys: bool = True) -> dict[str, Any]:
    """GET /orders/{id}: status, timeline, coupon, and the keys (decrypted here, once delivered)."""
    order = await get_order(session, order_id)
    events = await session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.at, OrderEvent.id)
    )
    payment = await session.scalar(select(Payment).where(Payment.order_id == order_id))
    coupon = await session.scalar(select(Coupon).where(Coupon.issued_for_order_id == order_id))
    delivered = with_keys and order.status == "delivered"
    keys = await inventory.delivered_keys(session, vault, order_id) if delivered else []
    return {
        "order_id": order.id,
        "merchant_id": order.merchant_id,
        "status": order.status,
        "sku": order.sku,
        "quantity": order.quantity,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "expires_at": order.expires_at,
        "paid_at": order.paid_at,
        "delivered_at": order.delivered_at,
        "payment": None
        if payment is None
        else {"gateway": payment.gateway, "payment_id": payment.payment_id, "pay_url": payment.pay_url},
        "keys": keys,
        "timeline": [{"stage": e.stage, "at": e.at, **({"detail": e.detail} if e.detail else {})} for e in events],
        "coupon": None if coupon is None else coupon_view(coupon),
    }


def coupon_view(coupon: Coupon) -> dict[str, Any]:
    view: dict[str, Any] = {"code": coupon.code, "expires_at": coupon.expires_at}
    if coupon.percent_off is not None:
        view["percent_off"] = coupon.percent_off
    else:
        view["amount_off_cents"] = coupon.amount_off_cents
    return view


async def search(
    session: AsyncSession,
    *,
    buyer_hash: str | None = None,
    status: str | None = None,
    sku: str | None = None,
    merchant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[Order]:
    """Orders for support (every merchant's) or for one merchant, newest first; a buyer is found by
    the hash of their email, never the email."""
    query = select(Order).order_by(Order.created_at.desc(), Order.id).limit(limit)
    if merchant_id is not None:
        query = query.where(Order.merchant_id == merchant_id)
    if since is not None:
        query = query.where(Order.created_at >= since)
    if until is not None:
        query = query.where(Order.created_at < until)
    if buyer_hash is not None:
        query = query.where(Order.buyer_hash == buyer_hash)
    if status is not None:
        query = query.where(Order.status == status)
    if sku is not None:
        query = query.where(Order.sku == sku)
    return list(await session.scalars(query))


def summary(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "merchant_id": order.merchant_id,
        "status": order.status,
        "sku": order.sku,
        "quantity": order.quantity,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "gateway": order.gateway,
        "created_at": order.created_at,
        "paid_at": order.paid_at,
        "delivered_at": order.delivered_at,
    }
