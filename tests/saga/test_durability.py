"""Our own processes dying: the order waits in Temporal and finishes when a worker comes back."""

import uuid

import httpx

from tests.conftest import stack_settings
from tests.helpers.stack import running_stack


async def test_order_survives_the_worker_and_api_going_down(dev_env, sessionmaker, sim_url, database_url, smtp) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    settings = stack_settings(database_url, smtp[0], callback_grace_seconds=1, poll_interval_seconds=1)
    async with running_stack(dev_env, sessionmaker, sim_url, task_queue=task_queue, **settings) as first:
        sku = await first.product(["SURVIVOR-KEY-1"])
        order = await first.ordered(sku)
    # Worker and API are gone. The buyer pays; the gateway's notifies find nobody and give up.
    async with httpx.AsyncClient(base_url=sim_url) as gateway:
        paid = await gateway.post(f"/pay/{order['payment']['payment_id']}")
    assert paid.status_code == 200
    async with running_stack(dev_env, sessionmaker, sim_url, task_queue=task_queue, **settings) as second:
        view = await second.wait_status(order, "delivered", timeout=30)
        assert view["keys"] == ["SURVIVOR-KEY-1"]
        stages = [event["stage"] for event in view["timeline"]]
        assert "polled" in stages and "notified" not in stages


async def test_no_worker_means_a_clear_503_not_a_hung_request(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    settings = stack_settings(database_url, smtp[0], update_timeout_seconds=1)
    async with running_stack(dev_env, sessionmaker, sim_url, start_worker=False, **settings) as stack:
        sku = await stack.product(1)
        answer = await stack.order(sku)
        assert answer.status_code == 503
        assert answer.json()["error"] == "order_timeout"
        assert await stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
