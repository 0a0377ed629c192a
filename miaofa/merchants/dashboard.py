"""What a merchant's console shows at a glance: today's orders and sales, orders by status, late
deliveries and low stock. Every query is scoped to one merchant; money stays in integer minor units."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.db.models import CardKey, Order, Product

LOW_STOCK = 10  # fewer available keys than this: the dashboard warns


@dataclass(frozen=True)
class StockRow:
    sku: str
    name: str
    active: bool
    price_cents: int
    currency: str
    delivery_sla_seconds: int
    available: int
    reserved: int
    sold: int


@dataclass(frozen=True)
class LateRow:
    order_id: str
    sku: str
    paid_at: datetime
    delivered_at: datetime | None
    sla_seconds: int


async def stock_rows(session: AsyncSession, merchant_id: str) -> list[StockRow]:
    """Each product of the merchant with its live key counts, in one query."""
    counts = (
        select(
            CardKey.product_id,
            func.count().filter(CardKey.status == "available").label("available"),
            func.count().filter(CardKey.status == "reserved").label("reserved"),
            func.count().filter(CardKey.status == "sold").label("sold"),
        )
        .where(CardKey.merchant_id == merchant_id)
        .group_by(CardKey.product_id)
        .subquery()
    )
    rows = await session.execute(
        select(
            Product,
            func.coalesce(counts.c.available, 0),
            func.coalesce(counts.c.reserved, 0),
            func.coalesce(counts.c.sold, 0),
        )
        .outerjoin(counts, counts.c.product_id == Product.id)
        .where(Product.merchant_id == merchant_id)
        .order_by(Product.id)
    )
    return [
        StockRow(p.sku, p.name, p.active, p.price_cents, p.currency, p.delivery_sla_seconds, a, r, s)
        for p, a, r, s in rows.all()
    ]


async def today(session: AsyncSession, merchant_id: str, since: datetime) -> tuple[int, dict[str, int]]:
    """Orders opened since `since`, and the delivered amounts since then per currency (minor units)."""
    opened = await session.scalar(
        select(func.count()).where(Order.merchant_id == merchant_id, Order.created_at >= since)
    )
    sales = await session.execute(
        select(Order.currency, func.sum(Order.amount_cents))
        .where(Order.merchant_id == merchant_id, Order.status == c.DELIVERED, Order.delivered_at >= since)
        .group_by(Order.currency)
        .order_by(Order.currency)
    )
    return int(opened or 0), {currency: int(total) for currency, total in sales.all()}


async def by_status(session: AsyncSession, merchant_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(Order.status, func.count()).where(Order.merchant_id == merchant_id).group_by(Order.status)
    )
    return dict(sorted((status, int(n)) for status, n in rows.all()))


async def late(session: AsyncSession, merchant_id: str, now: datetime, days: int = 7) -> list[LateRow]:
    """Orders of the last `days` whose delivery missed the product's SLA (counted from payment), or
    paid and still waiting past it."""
    sla = func.make_interval(0, 0, 0, 0, 0, 0, Product.delivery_sla_seconds)
    rows = await session.execute(
        select(Order.id, Order.sku, Order.paid_at, Order.delivered_at, Product.delivery_sla_seconds)
        .join(Product, and_(Product.id == Order.product_id, Product.merchant_id == Order.merchant_id))
        .where(
            Order.merchant_id == merchant_id,
            Order.paid_at.is_not(None),
            Order.paid_at >= now - timedelta(days=days),
            or_(
                Order.delivered_at > Order.paid_at + sla,
                and_(Order.delivered_at.is_(None), Order.status == c.PAID, Order.paid_at + sla < now),
            ),
        )
        .order_by(Order.paid_at.desc())
        .limit(20)
    )
    return [
        LateRow(order_id, sku, paid_at, delivered_at, sla)
        for order_id, sku, paid_at, delivered_at, sla in rows.all()
        if paid_at is not None
    ]
