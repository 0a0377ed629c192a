"""Issue 17, N2: a coupon is spent by exactly one delivered order, whatever arrives late.

An expired order gives its coupon back; a payment that still comes for it (the gateway could not
close, or has no close: epay, epusdt) must claim the coupon again before its keys go out. When
another order has it, the late payment is refunded with a reason the buyer reads, never delivered
below the price.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from miaofa import coupons
from miaofa.db.models import Coupon, Order
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack, stages
from tests.helpers.waiting import eventually

SPENT_ELSEWHERE = "paid after expiry; its coupon was used by another order"


@pytest.fixture(scope="module")
async def short(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """Real time, a 3 s payment window: orders expire within a test."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=3,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
    ) as stack:
        yield stack


async def _coupon(stack: Stack, percent_off: int = 50) -> str:
    code = "MF-" + uuid.uuid4().hex[:10].upper()
    async with stack.sessionmaker.begin() as session:
        session.add(Coupon(code=code, percent_off=percent_off, expires_at=datetime.now(UTC) + timedelta(days=1)))
    return code


async def _holder(stack: Stack, code: str) -> str | None:
    async with stack.sessionmaker() as session:
        return await session.scalar(select(Coupon.used_by_order_id).where(Coupon.code == code))


async def _expired_with(stack: Stack, sku: str, code: str) -> dict:
    """An order with the coupon whose window ends while the gateway cannot close it (as epay never can)."""
    await stack.control(close_fail=True)
    order = await stack.ordered(sku, email=f"a-{uuid.uuid4().hex[:8]}@example.com", coupon_code=code)
    assert order["amount_cents"] == 500
    await stack.wait_status(order, "expired", timeout=30)
    return order


def _refund_reason(view: dict) -> dict:
    return next(event["detail"] for event in view["timeline"] if event["stage"] == "refunded")


async def test_a_late_payment_whose_coupon_another_order_used_is_refunded(short: Stack) -> None:
    """The attack report's reproduction: A expires, B uses the coupon and is delivered, A is paid late."""
    code = await _coupon(short)
    sku = await short.product(2, price_cents=1000)
    first = await _expired_with(short, sku, code)
    assert await _holder(short, code) is None  # the expired order gave it back
    second = await short.ordered(sku, email="b@example.com", coupon_code=code)
    assert second["amount_cents"] == 500
    await short.pay(second)
    await short.wait_status(second, "delivered")

    assert (await short.pay(first)).status_code == 200  # the signed late notify, 5.00 paid
    view = await short.wait_status(first, "refunded", timeout=30)
    assert stages(view)[-2:] == ["paid_after_expiry", "refunded"]
    assert _refund_reason(view) == {"reason": SPENT_ELSEWHERE, "actor": "system"}
    assert view["keys"] == []
    assert (await short.sim_payment(first["payment"]["payment_id"]))["status"] == "refunded"
    assert await _holder(short, code) == second["order_id"]
    assert await short.stock(sku) == {"available": 1, "reserved": 0, "sold": 1, "refunded": 0}


async def test_two_orders_with_one_coupon_paid_at_once_deliver_one(short: Stack) -> None:
    """One late, one on time, paid in the same instant: the order holding the coupon gets the keys."""
    code = await _coupon(short)
    sku = await short.product(2, price_cents=1000)
    late = await _expired_with(short, sku, code)
    on_time = await short.ordered(sku, email="on-time@example.com", coupon_code=code)
    assert on_time["amount_cents"] == 500
    paid = await asyncio.gather(short.pay(late), short.pay(on_time))
    assert [answer.status_code for answer in paid] == [200, 200]

    delivered = await short.wait_status(on_time, "delivered", timeout=30)
    refunded = await short.wait_status(late, "refunded", timeout=30)
    assert (delivered["amount_cents"], len(delivered["keys"])) == (500, 1)
    assert _refund_reason(refunded) == {"reason": SPENT_ELSEWHERE, "actor": "system"}
    assert (await short.sim_payment(late["payment"]["payment_id"]))["status"] == "refunded"
    assert await _holder(short, code) == on_time["order_id"]
    assert await short.stock(sku) == {"available": 1, "reserved": 0, "sold": 1, "refunded": 0}


async def test_two_late_payments_with_one_coupon_deliver_one(short: Stack) -> None:
    """Both orders expired and gave the coupon back; both are paid late at once: one claims it."""
    code = await _coupon(short)
    sku = await short.product(2, price_cents=1000)
    first = await _expired_with(short, sku, code)
    second = await _expired_with(short, sku, code)
    await asyncio.gather(short.pay(first), short.pay(second))

    async def settled(order: dict) -> dict:
        view = await short.view(order)
        assert view["status"] in ("delivered", "refunded"), stages(view)
        return view

    views = [await eventually(lambda o=o: settled(o), 30, "a settled late payment") for o in (first, second)]
    assert sorted(view["status"] for view in views) == ["delivered", "refunded"]
    winner, loser = sorted(views, key=lambda view: view["status"])
    assert (winner["amount_cents"], len(winner["keys"])) == (500, 1)
    assert _refund_reason(loser) == {"reason": SPENT_ELSEWHERE, "actor": "system"}
    assert await _holder(short, code) == winner["order_id"]
    assert await short.stock(sku) == {"available": 1, "reserved": 0, "sold": 1, "refunded": 0}


async def test_concurrent_claims_of_one_coupon_let_exactly_one_through(short: Stack) -> None:
    """The database's word: two transactions claim the same free coupon for two orders at once."""
    code = await _coupon(short)
    sku = await short.product(2, price_cents=1000)
    orders = [await _expired_with(short, sku, code) for _ in range(2)]
    async with short.sessionmaker() as session:
        rows = (await session.scalars(select(Order).where(Order.id.in_([o["order_id"] for o in orders])))).all()
        coupon_id = rows[0].coupon_id
        assert coupon_id is not None and {row.coupon_id for row in rows} == {coupon_id}
    gate = asyncio.Barrier(2)

    async def claim(order_id: str) -> bool:
        async with short.sessionmaker.begin() as session:
            await gate.wait()
            return await coupons.claim(session, coupon_id, order_id, datetime.now(UTC))

    won = await asyncio.gather(*(claim(o["order_id"]) for o in orders))
    assert sorted(won) == [False, True]
    assert await _holder(short, code) == orders[won.index(True)]["order_id"]


async def test_delivery_sends_no_keys_when_its_coupon_is_held_elsewhere(short: Stack) -> None:
    """The last guard, in the keys' own transaction: were the coupon taken behind the saga's back
    (a run that reserved again on older code), the keys stay unsold and the payment goes back."""
    code = await _coupon(short)
    sku = await short.product(1, price_cents=1000)
    order = await short.ordered(sku, email="guarded@example.com", coupon_code=code)
    async with short.sessionmaker.begin() as session:
        await session.execute(update(Coupon).where(Coupon.code == code).values(used_by_order_id="someone-else"))
    await short.pay(order)
    view = await short.wait_status(order, "refunded", timeout=30)
    failed = next(event for event in view["timeline"] if event["stage"] == "delivery_failed")
    assert failed["detail"] == {"reason": "CouponSpent"}
    assert _refund_reason(view) == {"reason": "delivery failed (CouponSpent)", "actor": "system"}
    assert (await short.sim_payment(order["payment"]["payment_id"]))["status"] == "refunded"
    assert await short.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
