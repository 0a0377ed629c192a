"""Issue 7 items 5 and 6: every body has a size limit, authentication comes before the body, and a
flood of rejected notifies is stored compactly and at a bounded rate."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Text, cast, func, select

from miaofa.db.models import NotifyLog
from miaofa.payments.records import MAX_STORED_REJECTED_BODY, MAX_STORED_REJECTED_HEADERS, _stored_headers
from miaofa.rate_bound import RateBound
from tests.helpers.stack import Stack

MB = 1024 * 1024


async def _raw(
    stack: Stack, method: str, path: str, headers: dict[str, str], first_bytes: bytes
) -> tuple[bytes, float]:
    """Send the headers and only the first bytes of the body; the answer must come at once, and the
    server must then close the connection rather than wait for (or read) the rest."""
    url = urlsplit(str(stack.http.base_url))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    started = time.monotonic()
    try:
        head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": "shop", **headers}.items())
        writer.write(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + first_bytes)
        await writer.drain()
        answer = b""
        while not answer.endswith(b"}") or b"\r\n\r\n" not in answer:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=5)
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
        # Connection: close — the server hangs up instead of reading the declared 50 MB.
        assert await asyncio.wait_for(reader.read(65536), timeout=5) == b""
        return answer, elapsed
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _json(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


async def test_anonymous_big_bodies_to_admin_and_support_get_401_before_the_body_is_read(dev_stack: Stack) -> None:
    chunk = b"x" * 65536
    declared = {"Content-Type": "application/json", "Content-Length": str(50 * 1000 * 1000)}
    for path in ("/admin/products", "/support/orders/abc/refund", "/support/orders/abc/cancel"):
        answer, elapsed = await _raw(dev_stack, "POST", path, declared, chunk)
        assert _status(answer) == 401, answer[:300]
        assert _json(answer) == {"error": "missing_token", "detail": "send Authorization: Bearer <token>"}
        assert elapsed < 2
        wrong, _ = await _raw(
            dev_stack, "POST", path, {**declared, "Authorization": "Bearer not-the-token-000000"}, chunk
        )
        assert _status(wrong) == 401 and _json(wrong)["error"] == "invalid_token"
    # The support token opens /support, not /admin.
    answer, _ = await _raw(dev_stack, "POST", "/admin/products", {**declared, **dev_stack.support}, chunk)
    assert _status(answer) == 401 and _json(answer)["error"] == "invalid_token"


async def test_a_declared_size_over_the_route_limit_is_refused_at_once(dev_stack: Stack) -> None:
    chunk = b"{" + b" " * 65535
    cases = [
        ("/orders", {}, 50 * 1000 * 1000),  # anonymous JSON API
        ("/payments/simulator/notify", {}, 200 * 1000 * 1000),  # anonymous notify
        ("/admin/products", dev_stack.admin, 50 * 1000 * 1000),  # authenticated JSON API
        ("/support/orders/abc/refund", dev_stack.support, dev_stack.settings.max_json_body_bytes + 1),
        ("/codec/decode", dev_stack.support, dev_stack.settings.max_codec_body_bytes + 1),
    ]
    for path, auth, size in cases:
        answer, elapsed = await _raw(
            dev_stack, "POST", path, {"Content-Type": "application/json", "Content-Length": str(size), **auth}, chunk
        )
        assert _status(answer) == 413, (path, answer[:300])
        body = _json(answer)
        assert body["error"] == "payload_too_large" and ("KiB" in body["detail"] or "MiB" in body["detail"])
        assert elapsed < 2, path


async def _chunks(size: int, piece: int = 16384) -> AsyncIterator[bytes]:
    """No Content-Length: the limit is counted while the route reads."""
    sent = 0
    while sent < size:
        yield b" " * min(piece, size - sent)
        sent += piece


async def test_a_chunked_body_over_the_limit_stops_while_streaming(dev_stack: Stack) -> None:
    over = dev_stack.settings.max_json_body_bytes + 1
    cases = [
        ("/orders", {}, over),
        ("/payments/simulator/notify", {}, dev_stack.settings.max_notify_body_bytes + 1),
        ("/admin/products", dev_stack.admin, over),
        ("/support/orders/abc/refund", dev_stack.support, over),
        ("/codec/decode", dev_stack.support, dev_stack.settings.max_codec_body_bytes + 1),
    ]
    for path, auth, size in cases:
        answer = await dev_stack.http.post(
            path, content=_chunks(size), headers={"Content-Type": "application/json", **auth}
        )
        assert answer.status_code == 413, (path, answer.text[:300])
        assert answer.json()["error"] == "payload_too_large", path
    # Under the limit, the same routes read the body as usual.
    fits = await dev_stack.http.post("/orders", content=_chunks(1000), headers={"Content-Type": "application/json"})
    assert fits.status_code == 422 and fits.json()["error"] == "invalid_input"


async def test_bodies_within_the_limits_work(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)  # a JSON admin call and a key upload
    order = await dev_stack.ordered(sku)
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"


def test_rate_bound_allows_a_burst_then_the_rate_per_key() -> None:
    now = [100.0]
    bound = RateBound(5, clock=lambda: now[0])
    assert [bound.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert bound.allow("b")  # each key has its own bucket
    now[0] += 0.2
    assert bound.allow("a") and not bound.allow("a")
    now[0] += 10
    assert sum(bound.allow("a") for _ in range(20)) == 5
    assert not RateBound(0).allow("a")


def test_stored_headers_of_a_rejected_notify_fit_the_budget() -> None:
    headers = {f"X-Pad-{i:02d}": "h" * 1000 for i in range(60)} | {"Authorization": "Bearer secret"}
    stored = _stored_headers(headers, MAX_STORED_REJECTED_HEADERS)
    assert sum(len(k) + len(v) for k, v in stored.items()) <= MAX_STORED_REJECTED_HEADERS
    assert "Authorization" not in stored and stored  # something is kept, never the credentials


async def _rejected_since(stack: Stack, first_id: int) -> tuple[int, int, int]:
    async with stack.sessionmaker() as session:
        size = (
            func.octet_length(NotifyLog.body)
            + func.octet_length(cast(NotifyLog.headers, Text))
            + func.octet_length(NotifyLog.detail)
        )
        row = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(size), 0), func.coalesce(func.max(size), 0)).where(
                    NotifyLog.id > first_id, NotifyLog.outcome == "rejected"
                )
            )
        ).one()
        return int(row[0]), int(row[1]), int(row[2])


async def _last_notify_id(stack: Stack) -> int:
    async with stack.sessionmaker() as session:
        return int(await session.scalar(select(func.coalesce(func.max(NotifyLog.id), 0))))


@pytest.fixture
def fresh_bound(dev_stack: Stack) -> Iterator[None]:
    """A rate bound of the test's own, so a flood does not eat into the next test's allowance."""
    state = dev_stack.app.state.miaofa
    kept = state.rejected_notifies
    state.rejected_notifies = RateBound(dev_stack.settings.rejected_notify_log_per_second)
    try:
        yield
    finally:
        state.rejected_notifies = kept


async def test_a_flood_of_rejected_notifies_stores_little_and_answers_fast(dev_stack: Stack, fresh_bound: None) -> None:
    first = await _last_notify_id(dev_stack)
    tag = uuid.uuid4().hex
    body = json.dumps({"order_id": tag, "pad": "b" * 20000}).encode()  # 20 KB
    headers = {f"X-Pad-{i:02d}": "h" * 1000 for i in range(60)}  # 60 KB
    slowest = 0.0
    statuses: list[int] = []
    gate = asyncio.Semaphore(8)

    async def forge(i: int) -> None:
        nonlocal slowest
        async with gate:
            started = time.monotonic()
            answer = await dev_stack.http.post(
                "/payments/simulator/notify", content=body, headers={**headers, "Content-Type": "application/json"}
            )
            slowest = max(slowest, time.monotonic() - started)
            statuses.append(answer.status_code)

    started = time.monotonic()
    await asyncio.gather(*(forge(i) for i in range(1000)))
    elapsed = time.monotonic() - started
    assert set(statuses) == {400}  # the simulator's nack, every time
    assert slowest < 5, slowest
    count, total, largest = await _rejected_since(dev_stack, first)
    assert total < 2 * MB, total
    assert largest <= MAX_STORED_REJECTED_BODY + MAX_STORED_REJECTED_HEADERS + 300, largest
    rate = dev_stack.settings.rejected_notify_log_per_second
    assert 1 <= count <= rate * (elapsed + 1) + rate, (count, elapsed)
    metrics = (await dev_stack.http.get("/metrics")).text
    assert 'miaofa_notifies_rejected_unlogged_total{gateway="simulator"}' in metrics


async def test_a_rejected_notify_is_stored_compactly(dev_stack: Stack, fresh_bound: None) -> None:
    first = await _last_notify_id(dev_stack)
    answer = await dev_stack.http.post(
        "/payments/simulator/notify",
        content=b"\x00" * 5000 + "é".encode() * 4000,
        headers={"X-Big": "v" * 5000, "Authorization": "Bearer hush-hush-hush"},
    )
    assert answer.status_code == 400
    async with dev_stack.sessionmaker() as session:
        rows = list(await session.scalars(select(NotifyLog).where(NotifyLog.id > first)))
    assert len(rows) == 1 and rows[0].outcome == "rejected"
    assert len(rows[0].body) <= MAX_STORED_REJECTED_BODY and "\x00" not in rows[0].body
    assert "authorization" not in {k.lower() for k in rows[0].headers}
    assert sum(len(k) + len(v) for k, v in rows[0].headers.items()) <= MAX_STORED_REJECTED_HEADERS
