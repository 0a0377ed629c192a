"""The invariants under a race: a key is sold once, stock is never oversold."""

import asyncio
from collections import Counter
from datetime import UTC

from api.http_metrics import ORDERS
from miaofa.contract import SA_AMOUNT_CENTS
from tests.helpers.stack import Stack


async def test_200_buyers_race_for_50_keys(dev_stack: Stack) -> None:
    sku = await dev_stack.product(50)
    hinted = ORDERS.labels("sold_out_hint")._value.get()
    answers = await asyncio.gather(*(dev_stack.order(sku, email=f"buyer{i}@example.com") for i in range(200)))
    codes = Counter(answer.status_code for answer in answers)
    assert codes == {201: 50, 409: 150}
    # Surplus buyers were turned away by the API's stock hint, before any workflow started.
    assert ORDERS.labels("sold_out_hint")._value.get() - hinted == 150
    assert {answer.json()["error"] for answer in answers if answer.status_code == 409} == {"sold_out"}
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 50, "sold": 0, "refunded": 0}

    orders = [answer.json() for answer in answers if answer.status_code == 201]
    await asyncio.gather(*(dev_stack.pay(order) for order in orders))
    views = await asyncio.gather(*(dev_stack.wait_status(order, "delivered", timeout=60) for order in orders))
    keys = [key for view in views for key in view["keys"]]
    assert len(keys) == 50 and len(set(keys)) == 50
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 50, "refunded": 0}


async def test_a_coupon_is_redeemed_once_under_a_race(dev_stack: Stack) -> None:
    from datetime import datetime, timedelta

    from miaofa.db.models import Coupon

    async with dev_stack.sessionmaker.begin() as session:
        session.add(Coupon(code="MF-RACETEST01", percent_off=50, expires_at=datetime.now(UTC) + timedelta(days=1)))
    sku = await dev_stack.product(10, price_cents=1000)
    answers = await asyncio.gather(
        *(dev_stack.order(sku, email=f"c{i}@example.com", coupon_code="MF-RACETEST01") for i in range(10))
    )
    created = [answer.json() for answer in answers if answer.status_code == 201]
    assert [order["amount_cents"] for order in created] == [500]
    described = await dev_stack.handle(created[0]).describe()
    assert described.typed_search_attributes.get(SA_AMOUNT_CENTS) == 500  # ops see what is really charged
    assert {answer.json()["error"] for answer in answers if answer.status_code != 201} == {"coupon_used"}
    assert await dev_stack.stock(sku) == {"available": 9, "reserved": 1, "sold": 0, "refunded": 0}


async def test_idempotency_key_returns_the_same_order(dev_stack: Stack) -> None:
    sku = await dev_stack.product(5)
    headers = {"Idempotency-Key": "checkout-7f3a-5c1e9b20"}
    first, second = await asyncio.gather(dev_stack.order(sku, headers=headers), dev_stack.order(sku, headers=headers))
    assert first.json()["order_id"] == second.json()["order_id"]
    # Both opened it at once (201, each with the token), or one came after the order existed: a
    # replay answers 200 without the token (README, "Idempotency-Key").
    assert sorted((a.status_code, a.json()["access_token"] is not None) for a in (first, second)) in (
        [(201, True), (201, True)],
        [(200, False), (201, True)],
    )
    replay = await dev_stack.order(sku, headers=headers)
    assert (replay.status_code, replay.json()["access_token"], replay.json()["order_id"]) == (
        200,
        None,
        first.json()["order_id"],
    )
    other = await dev_stack.order(sku, email="someone-else@example.com", headers=headers)
    assert other.json()["order_id"] != first.json()["order_id"]
    changed = await dev_stack.order(sku, quantity=2, headers=headers)
    assert (changed.status_code, changed.json()["error"]) == (409, "idempotency_key_reused")
    assert await dev_stack.stock(sku) == {"available": 3, "reserved": 2, "sold": 0, "refunded": 0}
