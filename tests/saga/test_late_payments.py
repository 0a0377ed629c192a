"""Every proof of payment while the order is open ends in delivery or a refund (time-skipping)."""

from datetime import timedelta

from tests.helpers.stack import Stack, stages

WINDOW = 900
WATCH = 3600  # the ts_stack's late-payment watch
SUPPORT_WINDOW = 7 * 86400


async def test_the_watch_looks_for_a_payment_whose_notify_was_lost(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku)
    await ts_stack.control(close_fail=True, notify="drop")  # the close fails and the notify is lost
    await ts_stack.env.sleep(timedelta(seconds=WINDOW + 1))
    await ts_stack.wait_status(order, "expired")
    assert (await ts_stack.pay(order)).status_code == 200  # nobody presses "I have paid"
    await ts_stack.env.sleep(timedelta(seconds=61))  # the watch's first look, a minute in
    view = await ts_stack.wait_status(order, "delivered")
    timeline = stages(view)
    assert (
        timeline.index("close_failed")
        < timeline.index("expired")
        < timeline.index("polled_late")
        < timeline.index("paid_after_expiry")
        < timeline.index("reserved_again")
        < timeline.index("delivered")
    )
    assert len(view["keys"]) == 1
    await ts_stack.record_history(order, "late_poll_delivered")


async def test_a_payment_one_second_after_the_watch_is_delivered(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku)
    await ts_stack.control(close_fail=True)
    await ts_stack.env.sleep(timedelta(seconds=WINDOW + 1))
    await ts_stack.wait_status(order, "expired")
    await ts_stack.env.sleep(timedelta(seconds=WATCH + 1))  # the watch has ended: nobody polls any more
    assert (await ts_stack.pay(order)).status_code == 200  # the notify still comes
    view = await ts_stack.wait_status(order, "delivered")
    assert "paid_after_expiry" in stages(view) and "notified" in stages(view)
    assert len(view["keys"]) == 1
    assert await ts_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}


async def test_a_payment_a_second_before_the_order_closes_is_refunded_when_out_of_stock(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku, email="late@example.com")
    await ts_stack.control(close_fail=True)
    await ts_stack.env.sleep(timedelta(seconds=WINDOW + 1))
    expired = await ts_stack.wait_status(order, "expired")
    await ts_stack.control(close_fail=False)
    released_at = next(e["at"] for e in expired["timeline"] if e["stage"] == "expired")
    rival = await ts_stack.rival_buys(sku)
    # The order closes SUPPORT_WINDOW after its release; stop just short of it.
    now = await ts_stack.now()
    from datetime import datetime

    closes_at = datetime.fromisoformat(released_at) + timedelta(seconds=SUPPORT_WINDOW)
    await ts_stack.skip(closes_at - now - timedelta(seconds=2))
    assert (await ts_stack.pay(order)).status_code == 200
    view = await ts_stack.wait_status(order, "refunded")
    timeline = stages(view)
    assert timeline.index("paid_after_expiry") < timeline.index("refunded")
    refunded = next(e for e in view["timeline"] if e["stage"] == "refunded")
    assert refunded["detail"] == {"reason": "paid after expiry and out of stock", "actor": "system"}
    assert view["keys"] == []
    assert (await ts_stack.sim_payment(order["payment"]["payment_id"]))["status"] == "refunded"
    assert (await ts_stack.view(rival))["status"] == "delivered"
    await ts_stack.record_history(order, "paid_before_close_refunded")
