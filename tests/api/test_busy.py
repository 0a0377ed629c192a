"""Past capacity the shop degrades: order starts past the bound are answered 503 busy at once, with
Retry-After, and nothing is reserved or counted for them (issue 21, section 2). Two API apps on one
database stand for two API processes: the bound in total and the buyer rates hold across them."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import func, select, text

from miaofa.db.models import OrderAdmission
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually

BOUND_ONE = dict(order_starts_per_process=1, order_starts_total=1, busy_retry_after_seconds=3)


@pytest.fixture
async def no_worker(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """A stack whose orders wait for a worker the test starts: an order start stays in flight."""
    async with running_stack(
        dev_env, sessionmaker, sim_url, start_worker=False, **stack_settings(database_url, smtp[0]), **BOUND_ONE
    ) as stack:
        yield stack


async def _held(stack: Stack) -> int:
    async with stack.sessionmaker() as session:
        return int(await session.scalar(text("SELECT count(*) FROM order_start_slots WHERE lease_until > now()")) or 0)


async def _none_held(stack: Stack, what: str) -> None:
    async def none() -> bool:
        return await _held(stack) == 0

    await eventually(none, 5, what)


async def _admissions(stack: Stack, email: str) -> int:
    async with stack.sessionmaker() as session:
        buyer = stack.vault.buyer_hash(email)
        return int(await session.scalar(select(func.count()).where(OrderAdmission.buyer_hash == buyer)) or 0)


async def test_past_the_bound_a_create_is_answered_busy_and_nothing_is_reserved(no_worker: Stack) -> None:
    stack = no_worker
    sku = await stack.product(2)
    gate = stack.app.state.miaofa.gate
    first = asyncio.create_task(stack.order(sku, email="first@example.com"))
    await eventually(lambda: gate.in_flight == 1, 10, "the first order start in flight")
    started = time.perf_counter()
    second = await stack.order(sku, email="second@example.com")
    seconds = time.perf_counter() - started
    assert second.status_code == 503, second.text
    assert second.json()["error"] == "busy"
    assert second.headers["Retry-After"] == "3"
    assert seconds < 0.5  # answered at once, not queued (the bench measures it under load)
    assert await _admissions(stack, "second@example.com") == 0
    async with stack.worker():
        opened = await first
        assert opened.status_code == 201, opened.text
        assert (await stack.stock(sku))["reserved"] == 1
        await eventually(lambda: gate.in_flight == 0, 5, "the place given back")
        await _none_held(stack, "the shared slot given back")
        again = await stack.order(sku, email="second@example.com")
        assert again.status_code == 201, again.text
    assert (await stack.stock(sku))["reserved"] == 2
    await _none_held(stack, "no slot left held")


async def test_a_retried_key_shares_the_place_of_its_order_opening(no_worker: Stack) -> None:
    stack = no_worker
    sku = await stack.product(1)
    gate = stack.app.state.miaofa.gate
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = asyncio.create_task(stack.order(sku, headers=key))
    await eventually(lambda: gate.in_flight == 1, 10, "the first order start in flight")
    duplicate = asyncio.create_task(stack.order(sku, headers=key))  # the same order: not busy
    await eventually(lambda: gate.in_flight == 2, 10, "the retry waiting with it")
    other = await stack.order(sku, email="other@example.com")
    assert other.status_code == 503, other.text
    async with stack.worker():
        answers = [await first, await duplicate]
        assert [answer.status_code for answer in answers] == [201, 201], [answer.text for answer in answers]
        assert answers[0].json()["order_id"] == answers[1].json()["order_id"]
        replay = await stack.order(sku, headers=key)
        assert replay.status_code == 200, replay.text
    assert (await stack.stock(sku))["reserved"] == 1
    await _none_held(stack, "no slot left held")


async def test_bad_input_takes_no_place(no_worker: Stack) -> None:
    stack = no_worker
    sku = await stack.product(1)
    for body in ({"sku": sku + "\x00"}, {"sku": "商品"}, {"email": "a\x00@example.com"}):
        answer = await stack.http.post(
            "/orders", json={"sku": sku, "quantity": 1, "email": "x@example.com", "gateway": "simulator", **body}
        )
        assert answer.status_code in (404, 422), answer.text
    for key in (b"k\x7f", "clé-秒".encode()):  # the server's parser, or the API's plain-text check
        answer = await stack.order(sku, headers=[(b"Idempotency-Key", key)])
        assert answer.status_code in (400, 422), answer.text
    assert stack.app.state.miaofa.gate.in_flight == 0
    assert await _held(stack) == 0


async def test_a_buyer_over_the_rate_is_refused_across_api_processes(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    rates = dict(risk_rate_per_email_per_minute=3, order_starts_total=4)
    async with AsyncExitStack() as stacks:
        one, other = [
            await stacks.enter_async_context(
                running_stack(dev_env, sessionmaker, sim_url, **stack_settings(database_url, smtp[0]), **rates)
            )
            for _ in range(2)
        ]
        sku = await one.product(10)
        email = f"fast-{uuid.uuid4().hex[:8]}@example.com"
        answers = [await api.order(sku, email=email) for api in (one, one, other, other)]
        assert [answer.status_code for answer in answers] == [201, 201, 201, 429], answers[-1].text
        assert answers[-1].json()["error"] == "too_many_requests"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert (await one.stock(sku))["reserved"] == 3


async def test_keys_imported_through_one_api_sell_on_the_other_at_once(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    async with AsyncExitStack() as stacks:
        one, other = [
            await stacks.enter_async_context(
                running_stack(dev_env, sessionmaker, sim_url, **stack_settings(database_url, smtp[0]))
            )
            for _ in range(2)
        ]
        sku = await one.product([])
        assert (await other.order(sku)).status_code == 409  # the other process knows it, sold out
        hint = other.app.state.miaofa.hot
        product = await hint.product(sku)
        imported = await one.http.post(
            f"/admin/products/{sku}/keys", headers={**one.admin, "Content-Type": "text/plain"}, content="K-1\nK-2"
        )
        assert imported.status_code == 200, imported.text
        # Told by PostgreSQL, not by its own once-a-second refresh: well within that second.
        await eventually(lambda: hint.available(product.id) == 2, 0.5, "the other process's hint to see the keys")
        assert (await other.order(sku)).status_code == 201
