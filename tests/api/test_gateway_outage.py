"""Issue 17, N12: a gateway blip while an order opens.

Creating the payment is retried with a backoff for PAYMENT_CREATE_RETRY_SECONDS (within the API's
wait), so a one-second outage only delays the answer. An outage that outlasts it cancels the order
(503 gateway_unavailable, stock and coupon released); the same Idempotency-Key then opens a new
order instead of answering the cancelled one for ever.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from miaofa import orders
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack, stages

RETRY_SECONDS = 4


@pytest.fixture(scope="module")
async def blips(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(database_url, smtp[0], payment_window_seconds=60, payment_create_retry_seconds=RETRY_SECONDS),
    ) as stack:
        yield stack


async def _order_view(stack: Stack, email: str, key: dict[str, str], generation: int) -> dict:
    order_id = stack.vault.idempotent_order_id(email, key["Idempotency-Key"], generation)
    async with stack.sessionmaker() as session:
        return await orders.order_view(session, stack.vault, order_id, with_keys=False)


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"checkout-{uuid.uuid4().hex}"}


async def test_an_order_opened_during_a_short_gateway_outage_opens(blips: Stack) -> None:
    sku = await blips.product(1)
    await blips.control(create_fail=True)
    started = time.monotonic()
    opening = asyncio.create_task(blips.order(sku, email="blip@example.com", headers=_key()))
    await asyncio.sleep(1.5)  # the old three tries, 300 ms apart, were over in under a second
    await blips.control(create_fail=False)
    answer = await opening
    assert answer.status_code == 201, answer.text
    assert 1.5 <= time.monotonic() - started < RETRY_SECONDS + 1
    order = answer.json()
    assert order["status"] == "awaiting_payment" and order["payment"]["payment_id"].startswith("sim_")
    assert stages(await blips.view(order)) == ["created", "risk", "reserved", "payment_created"]
    await blips.pay(order)
    await blips.wait_status(order, "delivered")


async def test_the_same_idempotency_key_opens_a_new_order_after_a_gateway_unavailable_cancel(blips: Stack) -> None:
    sku = await blips.product(1)
    key = _key()
    await blips.control(create_fail=True)
    started = time.monotonic()
    failed = await blips.order(sku, email="outage@example.com", headers=key)
    assert (failed.status_code, failed.json()["error"]) == (503, "gateway_unavailable")
    assert RETRY_SECONDS - 0.5 <= time.monotonic() - started < RETRY_SECONDS + 3
    assert await blips.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    first = await _order_view(blips, "outage@example.com", key, 0)
    assert (first["status"], first["payment"]) == ("cancelled", None)
    cancelled = next(event for event in first["timeline"] if event["stage"] == "cancelled")
    assert cancelled["detail"] == {"released": "1", "reason": "gateway_unavailable"}
    still_down = await blips.order(sku, email="outage@example.com", headers=key)
    assert (still_down.status_code, still_down.json()["error"]) == (503, "gateway_unavailable")

    await blips.control(create_fail=False)
    retried = await blips.order(sku, email="outage@example.com", headers=key)
    assert retried.status_code == 201, retried.text
    order = retried.json()
    assert order["access_token"] and order["payment"] is not None
    # Each outage cancelled one generation of the key's order; the third opened.
    assert order["order_id"] == blips.vault.idempotent_order_id("outage@example.com", key["Idempotency-Key"], 2)
    assert (await _order_view(blips, "outage@example.com", key, 1))["status"] == "cancelled"
    replay = await blips.order(sku, email="outage@example.com", headers=key)
    assert (replay.status_code, replay.json()["order_id"], replay.json()["access_token"]) == (
        200,
        order["order_id"],
        None,
    )
    assert await blips.stock(sku) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
    await blips.pay(order)
    assert len((await blips.wait_status(order, "delivered"))["keys"]) == 1
