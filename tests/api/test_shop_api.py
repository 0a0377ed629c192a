"""The buyer's API around the saga: the stock hint, live events, coupons, metrics, bad input."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import event

from miaofa.db.models import Coupon
from tests.helpers.stack import Stack
from tests.helpers.waiting import eventually


async def test_sold_out_is_answered_from_memory(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    await dev_stack.ordered(sku)
    first = await dev_stack.order(sku, email="second@example.com")  # learns the product is empty
    assert (first.status_code, first.json()["error"]) == (409, "sold_out")
    statements: list[str] = []
    hot = dev_stack.app.state.miaofa.hot
    await hot.stop()  # its once-a-second refresh is background work, not this request's
    engine = dev_stack.app.state.miaofa.engine.sync_engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        again = await dev_stack.order(sku, email="third@example.com")
    finally:
        event.remove(engine, "before_cursor_execute", listener)
        hot.start()
    assert (again.status_code, again.json()) == (409, {"error": "sold_out", "detail": "this product is sold out"})
    assert statements == []


async def test_order_events_stream_status_changes(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    statuses: list[str] = []

    async def listen() -> None:
        async with dev_stack.http.stream(
            "GET", f"/orders/{order['order_id']}/events", headers={"X-Order-Token": order["access_token"]}
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    statuses.append(json.loads(line[6:])["status"])

    listener = asyncio.create_task(listen())
    await eventually(lambda: statuses, message="the stream's first event")  # listening before the payment
    await dev_stack.pay(order)
    await asyncio.wait_for(listener, timeout=15)  # the stream ends once the order is delivered
    assert statuses[0] == "awaiting_payment" and statuses[-1] == "delivered"
    forbidden = await dev_stack.http.get(f"/orders/{order['order_id']}/events", headers={"X-Order-Token": "no"})
    assert forbidden.status_code == 404


async def test_expired_coupon_is_refused(dev_stack: Stack) -> None:
    async with dev_stack.sessionmaker.begin() as session:
        session.add(Coupon(code="MF-EXPIREDTEST", percent_off=10, expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    sku = await dev_stack.product(1)
    answer = await dev_stack.order(sku, coupon_code="MF-EXPIREDTEST")
    assert answer.status_code == 422
    assert answer.json() == {"error": "coupon_expired", "detail": "this coupon has expired"}
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}


async def test_bad_order_input_gets_clear_errors(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    cases = [
        ({"sku": sku, "quantity": 0, "email": "a@b.co"}, 422, "invalid_input"),
        ({"sku": sku, "quantity": 1, "email": "not-an-email"}, 422, "invalid_input"),
        ({"sku": sku, "quantity": 1, "email": "a@b.co", "gateway": "paypal"}, 404, "unknown_gateway"),
        ({"sku": "no-such-sku", "quantity": 1, "email": "a@b.co"}, 404, "unknown_product"),
    ]
    for body, status, error in cases:
        answer = await dev_stack.http.post("/orders", json=body)
        assert (answer.status_code, answer.json()["error"]) == (status, error), body
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    unknown = await dev_stack.http.get("/orders/nosuchorder", headers={"X-Order-Token": "whatever"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "order_not_found"


async def test_metrics_count_orders_and_notifies(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    text = (await dev_stack.http.get("/metrics")).text
    assert 'miaofa_orders_opened_total{outcome="created"}' in text
    assert 'miaofa_notifies_total{gateway="simulator",outcome="accepted"}' in text
    assert 'miaofa_http_requests_total{method="POST",route="/orders",status="201"}' in text


async def test_a_fully_discounted_order_is_delivered_without_payment(dev_stack: Stack) -> None:
    async with dev_stack.sessionmaker.begin() as session:
        session.add(Coupon(code="MF-FREEORDER1", percent_off=100, expires_at=datetime.now(UTC) + timedelta(days=1)))
    sku = await dev_stack.product(["FREE-KEY-0001"])
    order = await dev_stack.ordered(sku, coupon_code="MF-FREEORDER1")
    assert (order["amount_cents"], order["payment"]) == (0, None)
    view = await dev_stack.wait_status(order, "delivered")
    assert view["keys"] == ["FREE-KEY-0001"]
    refund = await dev_stack.http.post(f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support)
    assert (refund.status_code, refund.json()["detail"]) == (409, "this order was free; there is no payment to refund")


async def test_an_order_claiming_while_the_hint_refreshes_is_not_counted_twice(
    dev_stack: Stack, sessionmaker, monkeypatch
) -> None:
    """Found by `miaofa bench flash-sale`: 199 of 200 keys sold, one answered "sold out" while left."""
    from api import stock_hint as stock_hint_module
    from api.stock_hint import StockHint
    from miaofa import catalog, inventory

    sku = await dev_stack.product(2)
    hot = StockHint(sessionmaker)
    await hot.refresh()
    product = await hot.product(sku)
    real_list, real_count = catalog.list_products, inventory.available_by_product

    async def list_after_a_claim_commits(session, merchant_id=None):
        # The refresh has begun: an order claims now and its reservation commits before the snapshot…
        assert hot.claim("late-claim", product.id, 1)
        async with sessionmaker.begin() as other:
            await _bare_order(other, product, "late-claim")
            await inventory.reserve(
                other, product_id=product.id, order_id="late-claim", quantity=1, at=datetime.now(UTC)
            )
        return await real_list(session, merchant_id=merchant_id)

    async def count_then_settle(session):
        counted = await real_count(session)
        hot.settle("late-claim", reserved=True)  # …and the API hears back while the refresh still runs.
        return counted

    monkeypatch.setattr(stock_hint_module.catalog, "list_products", list_after_a_claim_commits)
    monkeypatch.setattr(stock_hint_module.inventory, "available_by_product", count_then_settle)
    await hot.refresh()
    monkeypatch.undo()
    assert hot.available(product.id) == 1
    assert [hot.claim(f"after-{i}", product.id, 1) for i in range(2)] == [True, False]
    async with sessionmaker.begin() as session:
        await inventory.release(session, "late-claim")


async def _bare_order(session, product, order_id: str) -> None:
    """The order row a reservation needs (a key is only ever held by an order of its own merchant)."""
    from sqlalchemy.dialects.postgresql import insert

    from miaofa.db.models import Order

    row = dict(
        id=order_id,
        merchant_id=product.merchant_id,
        product_id=product.id,
        sku=product.sku,
        quantity=1,
        email="x@example.com",
        buyer_hash="x",
        amount_cents=product.price_cents,
        currency=product.currency,
        gateway="simulator",
        status="awaiting_payment",
        expires_at=datetime.now(UTC),
    )
    await session.execute(insert(Order).values(**row).on_conflict_do_nothing())


async def test_stock_hint_never_counts_a_reservation_twice(dev_stack: Stack, sessionmaker) -> None:
    from api.stock_hint import StockHint
    from miaofa import inventory

    sku = await dev_stack.product(3)
    hot = StockHint(sessionmaker)
    await hot.refresh()
    product = await hot.product(sku)
    assert hot.claim("race-order-1", product.id, 1)
    async with sessionmaker.begin() as session:  # the order's reservation commits…
        await _bare_order(session, product, "race-order-1")
        await inventory.reserve(
            session, product_id=product.id, order_id="race-order-1", quantity=1, at=datetime.now(UTC)
        )
    await hot.refresh()  # …a refresh counts it before the API hears back…
    hot.settle("race-order-1", reserved=True)  # …and then the API settles the claim.
    assert [hot.claim(f"next-{i}", product.id, 1) for i in range(3)] == [True, True, False]
    async with sessionmaker.begin() as session:
        await inventory.release(session, "race-order-1")
