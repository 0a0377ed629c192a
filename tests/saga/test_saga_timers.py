"""Every timer path of the order saga, on the time-skipping test server with real activities."""

from datetime import timedelta

from miaofa.contract import SA_DELIVERY_LATE
from tests.helpers.stack import Stack, stages
from tests.helpers.waiting import eventually
from workflows.order import OrderWorkflow


async def test_callback_in_time_delivers(ts_stack: Stack) -> None:
    sku = await ts_stack.product(["GIFT-AAAA-0001"])
    order = await ts_stack.ordered(sku)
    assert order["status"] == "awaiting_payment"
    assert (await ts_stack.pay(order)).status_code == 200
    view = await ts_stack.wait_status(order, "delivered")
    assert view["keys"] == ["GIFT-AAAA-0001"]
    assert stages(view)[:6] == ["created", "risk", "reserved", "payment_created", "paid", "notified"]
    assert "delivered" in stages(view)
    assert view["coupon"] is None
    assert await ts_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}
    await ts_stack.record_history(order, "callback_in_time")


async def test_lost_callback_is_recovered_by_polling(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku)
    await ts_stack.control(notify="drop")
    await ts_stack.pay(order)
    await ts_stack.env.sleep(timedelta(seconds=16))  # past the 15 s callback grace
    view = await ts_stack.wait_status(order, "delivered")
    assert "polled" in stages(view) and "notified" not in stages(view)
    assert len(view["keys"]) == 1
    await ts_stack.record_history(order, "lost_callback_polled")


async def test_primary_query_channel_failing_fails_over_to_backup(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku)
    await ts_stack.control(notify="drop", query_fail_rate=1.0, query_fail_channel="primary")
    await ts_stack.pay(order)
    await ts_stack.env.sleep(timedelta(seconds=16))
    view = await ts_stack.wait_status(order, "delivered")
    assert "polled_backup" in stages(view) and "polled" not in stages(view)
    await ts_stack.record_history(order, "backup_channel")


async def test_never_paid_expires_and_returns_stock(ts_stack: Stack) -> None:
    sku = await ts_stack.product(2)
    order = await ts_stack.ordered(sku)
    assert await ts_stack.stock(sku) == {"available": 1, "reserved": 1, "sold": 0, "refunded": 0}
    await ts_stack.env.sleep(timedelta(seconds=901))
    view = await ts_stack.wait_status(order, "expired")
    assert view["keys"] == []
    assert await ts_stack.stock(sku) == {"available": 2, "reserved": 0, "sold": 0, "refunded": 0}
    # The gateway payment was closed: the buyer can no longer pay it.
    late = await ts_stack.pay(order)
    assert (late.status_code, late.json()["error"]) == (409, "payment_closed")
    await ts_stack.record_history(order, "never_paid_expired")


async def test_paid_after_expiry_is_delivered_when_stock_remains(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku)
    await ts_stack.control(close_fail=True)  # the close cannot reach the gateway
    await ts_stack.env.sleep(timedelta(seconds=901))
    await ts_stack.wait_status(order, "expired")
    assert await ts_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    assert (await ts_stack.pay(order)).status_code == 200  # the buyer pays late; the notify comes
    view = await ts_stack.wait_status(order, "delivered")
    timeline = stages(view)
    assert timeline.index("expired") < timeline.index("paid_after_expiry") < timeline.index("reserved_again")
    assert len(view["keys"]) == 1
    assert await ts_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}
    await ts_stack.record_history(order, "paid_after_expiry_delivered")


async def test_paid_after_expiry_without_stock_is_refunded(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    late_order = await ts_stack.ordered(sku, email="late@example.com")
    await ts_stack.control(close_fail=True)
    await ts_stack.env.sleep(timedelta(seconds=901))
    await ts_stack.wait_status(late_order, "expired")
    await ts_stack.control(close_fail=False)
    await ts_stack.rival_buys(sku)  # takes the released key
    await ts_stack.pay(late_order)
    view = await ts_stack.wait_status(late_order, "refunded")
    assert "paid_after_expiry" in stages(view) and "delivered" not in stages(view)
    assert view["keys"] == []
    assert (await ts_stack.sim_payment(late_order["payment"]["payment_id"]))["status"] == "refunded"
    await ts_stack.record_history(late_order, "paid_after_expiry_refunded")


async def test_late_delivery_earns_a_single_use_coupon(ts_stack: Stack) -> None:
    sku = await ts_stack.product(3, price_cents=1000, sla=60)
    order = await ts_stack.ordered(sku)
    # The gateway reports the buyer paid two minutes ago (a bank batch window): delivery is past the SLA.
    await ts_stack.pay(order, paid_at=await ts_stack.now() - timedelta(seconds=120))
    await ts_stack.wait_status(order, "delivered")
    view = await ts_stack.wait_stage(order, "coupon")  # the coupon is issued just after the delivery lands
    coupon = view["coupon"]
    assert coupon["percent_off"] == 10

    async def marked_late() -> bool | None:  # the search attribute reaches the server with its workflow task
        return (await ts_stack.handle(order).describe()).typed_search_attributes.get(SA_DELIVERY_LATE)

    assert await eventually(marked_late, message="the DeliveryLate search attribute") is True

    discounted = await ts_stack.ordered(sku, email="again@example.com", coupon_code=coupon["code"])
    assert discounted["amount_cents"] == 900
    reused = await ts_stack.order(sku, email="third@example.com", coupon_code=coupon["code"])
    assert (reused.status_code, reused.json()["error"]) == (422, "coupon_used")
    unknown = await ts_stack.order(sku, coupon_code="MF-NOSUCHCODE")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "coupon_not_found")
    await ts_stack.record_history(order, "late_delivery_coupon")


async def test_on_time_delivery_earns_no_coupon(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1, sla=60)
    order = await ts_stack.ordered(sku)
    await ts_stack.pay(order)
    await ts_stack.wait_status(order, "delivered")

    async def delivered_state():
        state = await ts_stack.handle(order).query(OrderWorkflow.state)
        return state if state.status == "delivered" else None

    state = await eventually(delivered_state, message="the status query to say delivered")
    assert (state.status, state.coupon_issued, state.delivery_late) == ("delivered", False, False)


async def test_sla_timer_fires_while_delivery_is_still_retrying(
    ts_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    from temporalio import activity

    from activities.orders import OrderActivities
    from miaofa import steps
    from tests.conftest import stack_settings
    from tests.helpers.stack import running_stack

    real = OrderActivities(sessionmaker)
    database_down = True

    @activity.defn(name=steps.DELIVER_KEYS)
    async def deliver_keys(step: steps.DeliverStep) -> steps.Delivered:
        # Stands in for a database outage: delivery fails until the test lets it through.
        if database_down:
            raise RuntimeError("database unavailable (simulated)")
        return await real.deliver_keys(step)

    @activity.defn(name=steps.ACCEPT_AND_DELIVER)
    async def accept_and_deliver(step: steps.AcceptAndDeliverStep) -> steps.AcceptedAndDelivered:
        if database_down:  # its one attempt fails: the payment is accepted alone, the delivery retried
            raise RuntimeError("database unavailable (simulated)")
        return await real.accept_and_deliver(step)

    replaced = [deliver_keys, accept_and_deliver]
    async with running_stack(
        ts_env, sessionmaker, sim_url, replace_activities=replaced, **stack_settings(database_url, smtp[0])
    ) as stack:
        sku = await stack.product(1, sla=60)
        order = await stack.ordered(sku)
        await stack.pay(order)
        await stack.wait_status(order, "paid")
        await stack.env.sleep(timedelta(seconds=61))  # the SLA passes with delivery still failing
        view = await stack.wait_stage(order, "coupon")
        assert view["status"] == "paid" and view["keys"] == []
        assert view["coupon"]["percent_off"] == 10
        coupon_stage = [e for e in view["timeline"] if e["stage"] == "coupon"]
        assert coupon_stage[0]["detail"] == {"reason": "sla_timer"}

        database_down = False
        await stack.env.sleep(timedelta(seconds=15))  # the next retry delivers
        view = await stack.wait_status(order, "delivered")
        assert len(view["keys"]) == 1
        assert len([e for e in view["timeline"] if e["stage"] == "coupon"]) == 1  # one coupon, not two
        # This stack's worker goes with the test: a workflow task left on a queue nobody polls would
        # stop the shared test server from skipping time for the tests after this one.
        await stack.handle(order).terminate("test over")
