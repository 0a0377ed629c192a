"""Order rows: the timeline writer and the buyer's view of an order."""

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import inventory
from miaofa.db.models import Coupon, Order, OrderEvent, Payment
from miaofa.errors import OrderNotFound
from miaofa.messaging import outbox
from miaofa.crypto.vault import Vault


async def add_event(session: AsyncSession, order_id: str, stage: str, at: datetime,
                    detail: dict[str, Any] | None = None, *, once: bool = True) -> bool:
    """Append a stage to the timeline; with once=True a retried step does not write it twice. True when
    written (a step's first run: what counts it in the metrics once).

    The emails and webhooks a stage causes are queued here too, in the same transaction (miaofa.outbox)."""
    if once:
        seen = await session.scalar(select(OrderEvent.id).where(OrderEvent.order_id == order_id,
                                                                OrderEvent.stage == stage).limit(1))
        if seen is not None:
            return False
    session.add(OrderEvent(order_id=order_id, stage=stage, at=at, detail=detail or {}))
    outbox.on_stage(session, order_id, stage, at)
    return True


async def set_status(session: AsyncSession, order_id: str, status: str, **values: Any) -> None:
    await session.execute(update(Order).where(Order.id == order_id).values(status=status, **values))


async def get_order(session: AsyncSession, order_id: str) -> Order:
    order = await session.get(Order, order_id)
    if order is None:
        raise OrderNotFound("no such order")
    return order


async def order_view(session: AsyncSession, vault: Vault, order_id: str, *, with_keys: bool = True) -> dict[str, Any]:
    """GET /orders/{id}: status, timeline, coupon, and the keys (decrypted here, once delivered)."""
    order = await get_order(session, order_id)
    events = await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id)
                                   .order_by(OrderEvent.at, OrderEvent.id))
    payment = await session.scalar(select(Payment).where(Payment.order_id == order_id))
    coupon = await session.scalar(select(Coupon).where(Coupon.issued_for_order_id == order_id))
    delivered = with_keys and order.status == "delivered"
    keys = await inventory.delivered_keys(session, vault, order_id) if delivered else []
    return {
        "order_id": order.id,
        "status": order.status,
        "sku": order.sku,
        "quantity": order.quantity,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "expires_at": order.expires_at,
        "paid_at": order.paid_at,
        "delivered_at": order.delivered_at,
        "payment": None if payment is None else {
            "gateway": payment.gateway, "payment_id": payment.payment_id, "pay_url": payment.pay_url},
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


async def search(session: AsyncSession, *, buyer_hash: str | None = None, status: str | None = None,
                 sku: str | None = None, limit: int = 50) -> list[Order]:
    """Orders for support, newest first; a buyer is found by the hash of their email, never the email."""
    query = select(Order).order_by(Order.created_at.desc(), Order.id).limit(limit)
    if buyer_hash is not None:
        query = query.where(Order.buyer_hash == buyer_hash)
    if status is not None:
        query = query.where(Order.status == status)
    if sku is not None:
        query = query.where(Order.sku == sku)
    return list(await session.scalars(query))


def summary(order: Order) -> dict[str, Any]:
    return {"order_id": order.id, "status": order.status, "sku": order.sku, "quantity": order.quantity,
            "amount_cents": order.amount_cents, "currency": order.currency, "gateway": order.gateway,
            "created_at": order.created_at, "paid_at": order.paid_at, "delivered_at": order.delivered_at}
