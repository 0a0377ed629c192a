"""Every timer path of the order saga, on the time-skipping test server with real activities."""

from datetime import datetime, timedelta, timezone

from tests.stack import Stack


async def test_callback_in_time_delivers(ts_stack: Stack) -> None:
    sku = await ts_stack.product(["GIFT-AAAA-0001"])
    order = await ts_stack.ordered(sku)
    assert order["status"] == "awaiting_payment"
    assert (await ts_stack.pay(order)).status_code == 200
    view = await ts_stack.wait_status(order, "delivered")
    assert view["keys"] == ["GIFT-AAAA-0001"]
    stages = [event["stage"] for event in view["timeline"]]
    assert stages[:5] == ["created", "reserved", "payment_created", "paid", "notified"]
    assert "delivered" in stages
    assert view["coupon"] is None
    assert await ts_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}


async def test_lost_callback_is_recovered_by_polling(ts_stack: Stack) -> None:
    sku = await ts_stack.product(1)
    order = await ts_stack.ordered(sku)
    await ts_stack.control(notify="drop")
    await ts_stack.pay(order)
    await ts_stack.env.sleep(timedelta(seconds=16))  # past the 15 s callback grace
    view = await ts_stack.wait_status(order, "delivered")
    stages = [event["stage"] for event in view["timeline"]]
    assert "polled" in stages and "notified" not in stages
    assert len(view["keys"]) == 1
