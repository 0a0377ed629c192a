"""Single-use coupons: issued as compensation for late delivery, redeemed once at checkout.

A coupon is held by one order at a time (`used_by_order_id`): from its checkout until the order
expires or is cancelled, when it is given back. A payment that still arrives for that order must
claim it again (`claim`), and delivery claims it in the transaction that commits the keys, so
exactly one delivered order ever spends it, whatever arrives late.
"""

import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.engine import rowcount
from miaofa.db.models import DEFAULT_MERCHANT, Coupon, Order
from miaofa.errors import CouponCodeTaken, CouponCurrency, CouponExpired, CouponNotFound, CouponUsed

LATE_DELIVERY_PERCENT_OFF = 10
COUPON_VALID_FOR = timedelta(days=30)
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes get typed by hand
SHOP_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{3,39}$")  # a code a shop chooses: upper-cased before the check
SHOP_REASON = "shop"
MAX_VALID_FOR = timedelta(days=366)
LISTING_LIMIT = 200


def new_code() -> str:
    return "MF-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))


async def issue_for_late_delivery(session: AsyncSession, order_id: str, reason: str, at: datetime) -> Coupon:
    """One coupon per order, whatever the retries."""
    existing = await session.scalar(select(Coupon).where(Coupon.issued_for_order_id == order_id))
    if existing is not None:
        return existing
    coupon = Coupon(
        merchant_id=await session.scalar(select(Order.merchant_id).where(Order.id == order_id)),  # its shop's
        code=new_code(),
        percent_off=LATE_DELIVERY_PERCENT_OFF,
        expires_at=at + COUPON_VALID_FOR,
        issued_for_order_id=order_id,
        reason=reason,
    )
    session.add(coupon)
    await session.flush()
    return coupon


async def create_for_shop(
    session: AsyncSession,
    merchant_id: str,
    *,
    code: str | None,
    percent_off: int | None,
    amount_off_cents: int | None,
    currency: str | None,
    expires_at: datetime,
) -> Coupon:
    """A coupon the shop gives out itself. One INSERT … ON CONFLICT DO NOTHING: of two requests for
    the same code, one makes it and the other is told the code is taken; nothing is overwritten.
    The caller has checked the shape (exactly one kind of discount, a code matching SHOP_CODE)."""
    made = await session.scalar(
        insert(Coupon)
        .values(
            merchant_id=merchant_id,
            code=code or new_code(),
            percent_off=percent_off,
            amount_off_cents=amount_off_cents,
            currency=currency,
            expires_at=expires_at,
            reason=SHOP_REASON,
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "code"])
        .returning(Coupon.id)
    )
    if made is None:
        raise CouponCodeTaken("this shop already has a coupon with that code")
    coupon = await session.get(Coupon, made)
    assert coupon is not None
    return coupon


async def listing(session: AsyncSession, merchant_id: str, limit: int = LISTING_LIMIT) -> list[Coupon]:
    """The shop's coupons, newest first (its own and the late-delivery ones the platform issued)."""
    rows = await session.scalars(
        select(Coupon).where(Coupon.merchant_id == merchant_id).order_by(Coupon.id.desc()).limit(limit)
    )
    return list(rows)


async def check_usable(
    session: AsyncSession, code: str, at: datetime, currency: str, merchant_id: str = DEFAULT_MERCHANT
) -> Coupon:
    """The merchant's own coupon: another shop's code is not found, alike."""
    coupon = await session.scalar(
        select(Coupon).where(Coupon.merchant_id == merchant_id, Coupon.code == code.strip().upper())
    )
    if coupon is None:
        raise CouponNotFound("no such coupon code")
    if coupon.used_at is not None:
        raise CouponUsed("this coupon has already been used")
    if coupon.expires_at <= at:
        raise CouponExpired("this coupon has expired")
    if coupon.amount_off_cents is not None and coupon.currency != currency:
        raise CouponCurrency(f"this coupon is for {coupon.currency} orders")
    return coupon


async def redeem(
    session: AsyncSession, code: str, order_id: str, at: datetime, currency: str, merchant_id: str = DEFAULT_MERCHANT
) -> Coupon:
    """Use the coupon for this order; a conditional UPDATE, so two orders cannot both use it."""
    coupon = await check_usable(session, code, at, currency, merchant_id)
    taken = await session.execute(
        update(Coupon)
        .where(Coupon.id == coupon.id, Coupon.used_at.is_(None))
        .values(used_at=at, used_by_order_id=order_id)
    )
    if rowcount(taken) != 1:
        raise CouponUsed("this coupon has already been used")
    return coupon


async def claim(session: AsyncSession, coupon_id: int, order_id: str, at: datetime) -> bool:
    """Hold the coupon for this order, unless another order holds it: a conditional UPDATE, so of two
    transactions claiming one free coupon, the second waits for the first's row lock and then finds
    it taken. True when this order holds it now (it may have held it already)."""
    taken = await session.execute(
        update(Coupon)
        .where(
            Coupon.id == coupon_id,
            or_(Coupon.used_by_order_id.is_(None), Coupon.used_by_order_id == order_id),
        )
        .values(used_at=func.coalesce(Coupon.used_at, at), used_by_order_id=order_id)
    )
    return rowcount(taken) == 1


async def spend(session: AsyncSession, order_id: str, at: datetime) -> bool:
    """At delivery, in the transaction that commits the keys: the order's coupon (if any) is its own.
    False when another order holds it: these keys must not go out at the discounted price."""
    coupon_id = await session.scalar(select(Order.coupon_id).where(Order.id == order_id))
    return coupon_id is None or await claim(session, coupon_id, order_id, at)


async def give_back(session: AsyncSession, order_id: str) -> None:
    """An order that expired or was cancelled did not really use its coupon."""
    await session.execute(
        update(Coupon).where(Coupon.used_by_order_id == order_id).values(used_at=None, used_by_order_id=None)
    )


def discounted(amount_cents: int, coupon: Coupon | None) -> int:
    if coupon is None:
        return amount_cents
    if coupon.percent_off is not None:
        return amount_cents - (amount_cents * coupon.percent_off) // 100
    return max(0, amount_cents - (coupon.amount_off_cents or 0))
