"""Live order streams (issue 17, N9): capped per order and in total, and fed by one change feed per
API process, so a crowd of streams on one order costs the database what one stream does."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually

FEED_SECONDS = 0.5


@pytest.fixture(scope="module")
async def streams_stack(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url, smtp[0], payment_window_seconds=120, callback_grace_seconds=60, poll_interval_seconds=60
        ),
        trusted_proxies="127.0.0.1/32",  # many clients through X-Forwarded-For
        sse_max_streams_per_ip=2,
        sse_max_streams_per_order=40,
        sse_max_streams=45,
        sse_feed_interval_seconds=FEED_SECONDS,
    ) as stack:
        yield stack


def _address() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


class Stream:
    """One buyer's open stream, reading its status events in the background."""

    def __init__(self, stack: Stack, order: dict, address: str | None = None) -> None:
        self.stack, self.order, self.address = stack, order, address or _address()
        self.statuses: list[str] = []
        self.answer: httpx.Response | None = None

    async def __aenter__(self) -> "Stream":
        self._cm = self.stack.http.stream(
            "GET",
            f"/orders/{self.order['order_id']}/events",
            headers={"X-Order-Token": self.order["access_token"], "X-Forwarded-For": self.address},
        )
        self.answer = await self._cm.__aenter__()
        if self.answer.status_code == 200:
            self._reading = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.answer is not None
        async for line in self.answer.aiter_lines():
            if line.startswith("data: "):
                self.statuses.append(json.loads(line[6:])["status"])

    async def __aexit__(self, *exc) -> None:
        if self.answer is not None and self.answer.status_code == 200:
            self._reading.cancel()
        await self._cm.__aexit__(None, None, None)


class Statements:
    """When the API process sent each SQL statement, while inside."""

    def __init__(self, stack: Stack) -> None:
        self.engine = stack.app.state.miaofa.engine.sync_engine
        self.at: list[float] = []

    def _seen(self, *args) -> None:
        self.at.append(time.monotonic())

    def __enter__(self) -> "Statements":
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


async def test_many_streams_on_one_order_cost_one_feed_of_queries(streams_stack: Stack) -> None:
    stack = streams_stack
    order = await stack.ordered(await stack.product(1))
    hot = stack.app.state.miaofa.hot
    await hot.stop()  # the stock hint's own refresh is not the streams' cost
    try:
        with Statements(stack) as seen:
            async with AsyncExitStack() as streams:
                opened = [await streams.enter_async_context(Stream(stack, order)) for _ in range(30)]
                assert [s.answer.status_code for s in opened] == [200] * 30
                await eventually(
                    lambda: all(s.statuses == ["awaiting_payment"] for s in opened), message="first events"
                )
                start = time.monotonic()
                await asyncio.sleep(3.0)
                during = [at for at in seen.at if at >= start]
                # 30 streams polling twice a second each were 180 statements in these 3 s; one feed is 6.
                assert len(during) <= 3.0 / FEED_SECONDS + 2, len(during)
                # ... and still tells every stream at once when the order changes.
                cancel = await stack.http.post(f"/support/orders/{order['order_id']}/cancel", headers=stack.support)
                assert cancel.status_code == 200
                await eventually(
                    lambda: all(s.statuses == ["awaiting_payment", "cancelled"] for s in opened),
                    timeout=10,
                    message="every stream told of the cancel",
                )
    finally:
        hot.start()


async def test_streams_are_capped_per_order_and_in_total_with_429(streams_stack: Stack) -> None:
    stack = streams_stack
    sku = await stack.product(3)
    first, second, third = [await stack.ordered(sku, email=f"b-{uuid.uuid4().hex[:8]}@example.com") for _ in range(3)]
    settings = stack.settings
    async with AsyncExitStack() as streams:
        on_first = [await streams.enter_async_context(Stream(stack, first)) for _ in range(40)]
        assert [s.answer.status_code for s in on_first] == [200] * 40
        refused = await streams.enter_async_context(Stream(stack, first))
        assert (refused.answer.status_code, refused.answer.headers["Retry-After"]) == (429, "5")
        assert json.loads(await refused.answer.aread()) == {
            "error": "too_many_requests",
            "detail": "too many live streams for this order; close one first",
        }
        # Another order still gets streams, up to the total (SSE_MAX_STREAMS).
        on_second = [await streams.enter_async_context(Stream(stack, second)) for _ in range(5)]
        assert [s.answer.status_code for s in on_second] == [200] * 5
        full = await streams.enter_async_context(Stream(stack, third))
        assert full.answer.status_code == 429
        assert json.loads(await full.answer.aread()) == {
            "error": "too_many_requests",
            "detail": "too many live order streams right now; try again shortly",
        }
        assert (settings.sse_max_streams_per_order, settings.sse_max_streams) == (40, 45)

    async def slots_back() -> bool:  # the closed streams give their slots back once the server sees it
        async with Stream(stack, third) as again, Stream(stack, first) as more:
            assert (again.answer.status_code, more.answer.status_code) == (200, 200)
        return True

    await eventually(slots_back, timeout=10, interval=0.2, message="the slots given back")
