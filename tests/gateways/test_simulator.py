"""The payment simulator over real HTTP, driven through SimulatorGateway."""

import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from miaofa.gateways.base import GatewayError, InvalidNotify, Notice, PaymentRequest
from miaofa.gateways.sim_protocol import SIGNATURE_HEADER, TIMESTAMP_HEADER, TOLERANCE_SECONDS, make_signature
from miaofa.gateways.simulator import SimulatorGateway
from miaofa.payments.proof import FOREIGN, Judgement, Proof, judge
from miaofa.simulator.app import create_app
from miaofa.simulator.books import Simulator
from tests.helpers.servers import bind, serve
from tests.helpers.waiting import eventually

MERCHANT = "m_test"
SECRET = "s3cret-for-tests"
CONTROL_TOKEN = "control-token-for-tests"
CONTROL = {"Authorization": f"Bearer {CONTROL_TOKEN}"}
FAST_RETRIES = (0.05, 0.05)


# ---- servers --------------------------------------------------------------------------------


def _bind() -> socket.socket:
    return bind()


@asynccontextmanager
async def _serve(app: FastAPI, sock: socket.socket) -> AsyncIterator[None]:
    async with serve(app, sock):
        yield


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def data(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A stand-in shop notify endpoint: records every notify and answers from a script."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    # Answers to give, in order, before falling back to the proper 200 "success".
    script: list[tuple[int, str]] = field(default_factory=list)

    def for_order(self, order_id: str) -> list[Received]:
        # Filter by order: late retries from an earlier test must not leak into this one.
        return [r for r in self.received if r.data.get("order_id") == order_id]


def _receiver_app(rx: Receiver) -> FastAPI:
    app = FastAPI()

    @app.post("/notify")
    async def notify(request: Request) -> PlainTextResponse:
        rx.received.append(Received(dict(request.headers), await request.body()))
        status, body = rx.script.pop(0) if rx.script else (200, "success")
        return PlainTextResponse(body, status_code=status)

    return app


@dataclass
class Env:
    sim_url: str
    rx: Receiver
    gw: SimulatorGateway
    http: httpx.AsyncClient
    sim: Simulator

    async def quiet(self) -> None:
        """A barrier: the simulator has no notify on its way, so none can still arrive."""
        await eventually(lambda: self.sim.sending == 0, timeout=5, message="the simulator's notifies to finish")


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[str, Receiver, Simulator]]:
    sim_sock, rx_sock = _bind(), _bind()
    sim_url = f"http://127.0.0.1:{sim_sock.getsockname()[1]}"
    rx = Receiver(url=f"http://127.0.0.1:{rx_sock.getsockname()[1]}")
    sim_app = create_app(MERCHANT, SECRET, sim_url, retry_delays=FAST_RETRIES, control_token=CONTROL_TOKEN)
    async with _serve(sim_app, sim_sock), _serve(_receiver_app(rx), rx_sock):
        yield sim_url, rx, sim_app.state.simulator


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
async def env(servers: tuple[str, Receiver, Simulator], http: httpx.AsyncClient) -> AsyncIterator[Env]:
    sim_url, rx, sim = servers
    await http.post(f"{sim_url}/control/reset", headers=CONTROL)
    rx.received.clear()
    rx.script.clear()
    # A shared client the gateway does not own (the owned-client path is used further down).
    gw = SimulatorGateway(sim_url, MERCHANT, SECRET, client=http)
    try:
        yield Env(sim_url, rx, gw, http, sim)
    finally:
        await gw.aclose()


# ---- helpers --------------------------------------------------------------------------------


def _request(rx: Receiver, amount_cents: int = 990) -> PaymentRequest:
    return PaymentRequest(
        order_id="o_" + uuid.uuid4().hex[:12],
        amount_cents=amount_cents,
        currency="CNY",
        subject="Game card key",
        notify_url=f"{rx.url}/notify",
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )


async def _notifies(env: Env, req: PaymentRequest, count: int) -> list[Received]:
    """The order's notifies, once `count` have arrived."""
    return await eventually(
        lambda: len(env.rx.for_order(req.order_id)) >= count and env.rx.for_order(req.order_id),
        timeout=2,
        interval=0.01,
        message=f"{count} notifies for {req.order_id}",
    )


def _signed(body: dict | bytes, timestamp: int, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: make_signature(secret, timestamp, raw)}
    return headers, raw


def _notice_body(**overrides: object) -> dict:
    body = {
        "payment_id": "sim_" + "0" * 24,
        "order_id": "o_1",
        "merchant_id": MERCHANT,
        "status": "paid",
        "amount_cents": 990,
        "currency": "CNY",
        "paid_at": "2025-01-01T00:00:00+00:00",
    }
    body.update(overrides)
    return body


# ---- create and query -----------------------------------------------------------------------


async def test_create_is_idempotent_per_order(env: Env) -> None:
    req = _request(env.rx)
    first = await env.gw.create_payment(req)
    again = await env.gw.create_payment(req)
    other = await env.gw.create_payment(_request(env.rx))

    assert re.fullmatch(r"sim_[0-9a-f]{24}", first.payment_id)
    assert first.pay_url == f"{env.sim_url}/pay/{first.payment_id}"
    assert again == first
    assert other.payment_id != first.payment_id

    state = await env.gw.query(first.payment_id, req.order_id)
    assert (state.status, state.amount_cents, state.currency, state.paid_at) == ("pending", 990, "CNY", None)
    assert state.order_id == req.order_id


async def test_create_rejects_bad_input_and_auth(env: Env) -> None:
    req = _request(env.rx)
    good = {
        "merchant_id": MERCHANT,
        "order_id": req.order_id,
        "amount_cents": 990,
        "currency": "CNY",
        "subject": "x",
        "notify_url": req.notify_url,
        "expires_at": req.expires_at.isoformat(),
    }
    url = f"{env.sim_url}/api/payments"
    auth = {"Authorization": f"Bearer {SECRET}"}

    no_auth = await env.http.post(url, json=good)
    assert no_auth.status_code == 401
    assert no_auth.json()["error"] == "unauthorized"
    wrong_auth = await env.http.post(url, json=good, headers={"Authorization": "Bearer nope"})
    assert wrong_auth.status_code == 401

    wrong_merchant = await env.http.post(url, json={**good, "merchant_id": "m_other"}, headers=auth)
    assert wrong_merchant.status_code == 403
    for bad in ({"amount_cents": 0}, {"amount_cents": 9.9}, {"amount_cents": "990"}, {"currency": "CN"}):
        response = await env.http.post(url, json={**good, **bad}, headers=auth)
        assert response.status_code == 422, bad
        assert response.json()["error"] == "invalid_request"

    created = await env.http.post(url, json=good, headers=auth)
    assert created.status_code == 201
    assert created.json()["status"] == "pending"
    repeated = await env.http.post(url, json=good, headers=auth)
    assert repeated.status_code == 200
    assert repeated.json()["payment_id"] == created.json()["payment_id"]
    # Same order_id, other amount: refused rather than silently returning the old payment.
    mismatch = await env.http.post(url, json={**good, "amount_cents": 1}, headers=auth)
    assert mismatch.status_code == 409

    wrong_key = SimulatorGateway(env.sim_url, MERCHANT, "wrong-secret")
    try:
        with pytest.raises(GatewayError, match="401 unauthorized") as excinfo:
            await wrong_key.create_payment(_request(env.rx))
        assert "wrong-secret" not in str(excinfo.value)
    finally:
        await wrong_key.aclose()


async def test_query_unknown_payment(env: Env) -> None:
    primary = await env.gw.query("sim_" + "f" * 24, "o_missing")
    backup = await env.gw.query("", "o_missing", channel="backup")
    assert primary.status == "unknown"
    assert backup.status == "unknown"
    response = await env.http.post(f"{env.sim_url}/pay/sim_{'f' * 24}")
    assert response.status_code == 404


async def test_query_failure_on_primary_leaves_backup(env: Env) -> None:
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    control = (await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"query_fail_rate": 1.0})).json()
    assert control == {
        "notify": "normal",
        "delay_seconds": 0.0,
        "duplicate": False,
        "query_fail_rate": 1.0,
        "query_fail_channel": "primary",
        "close_fail": False,
        "create_fail": False,
        "payout": "normal",
        "payout_hang_seconds": 3.0,
    }

    with pytest.raises(GatewayError, match="HTTP 503"):
        await env.gw.query(created.payment_id, req.order_id)
    backup = await env.gw.query(created.payment_id, req.order_id, channel="backup")
    assert (backup.payment_id, backup.status) == (created.payment_id, "pending")

    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"query_fail_channel": "both"})
    with pytest.raises(GatewayError):
        await env.gw.query(created.payment_id, req.order_id, channel="backup")


async def test_close_failure_leaves_payment_payable(env: Env) -> None:
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"close_fail": True})
    with pytest.raises(GatewayError, match="HTTP 503"):
        await env.gw.close(created.payment_id, req.order_id)
    paid = await env.http.post(f"{env.sim_url}/pay/{created.payment_id}")
    assert paid.json()["status"] == "paid"


async def test_create_failure_answers_503_until_switched_off(env: Env) -> None:
    req = _request(env.rx)
    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"create_fail": True})
    with pytest.raises(GatewayError, match="HTTP 503"):
        await env.gw.create_payment(req)
    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"create_fail": False})
    created = await env.gw.create_payment(req)
    assert (await env.gw.query(created.payment_id, req.order_id)).status == "pending"


async def test_transport_error_is_gateway_error(env: Env) -> None:
    sock = _bind()  # bound but never listening: connections are refused
    dead = SimulatorGateway(f"http://127.0.0.1:{sock.getsockname()[1]}", MERCHANT, SECRET)
    try:
        with pytest.raises(GatewayError) as excinfo:
            await dead.query("sim_x", "o_x")
        assert SECRET not in str(excinfo.value)
    finally:
        await dead.aclose()
        sock.close()


# ---- pay and notify -------------------------------------------------------------------------


async def test_pay_sends_verifiable_notify(env: Env) -> None:
    req = _request(env.rx, amount_cents=1234)
    created = await env.gw.create_payment(req)

    page = await env.http.get(created.pay_url)
    assert page.status_code == 200
    assert "12.34 CNY" in page.text
    assert f'<form method="post" action="/pay/{created.payment_id}">' in page.text

    paid = await env.http.post(created.pay_url)
    assert paid.status_code == 200
    assert paid.json()["status"] == "paid"
    paid_at = datetime.fromisoformat(paid.json()["paid_at"])

    await _notifies(env, req, 1)
    got = env.rx.for_order(req.order_id)[0]
    assert got.headers["content-type"] == "application/json"
    notice = await env.gw.verify_notify(got.headers, got.body, {})
    assert notice == Notice(
        payment_id=created.payment_id,
        order_id=req.order_id,
        merchant_id=MERCHANT,
        status="paid",
        amount_cents=1234,
        currency="CNY",
        paid_at=paid_at,
    )
    # Header names are matched case-insensitively.
    upper = {k.upper(): v for k, v in got.headers.items()}
    assert await env.gw.verify_notify(upper, got.body, {}) == notice

    state = await env.gw.query(created.payment_id, req.order_id)
    assert (state.status, state.paid_at) == ("paid", paid_at)
    again = await env.http.post(created.pay_url)
    assert again.status_code == 409
    assert again.json()["error"] == "already_paid"


async def test_pay_refuses_a_client_clock_by_default(env: Env) -> None:
    """paid_at is the gateway's own clock: a back-dated payment (a free late-delivery coupon) is refused."""
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    back_dated = await env.http.post(created.pay_url, json={"paid_at": "2025-01-02T03:04:05+00:00"})
    assert back_dated.status_code == 422
    assert back_dated.json()["error"] == "paid_at_refused"
    state = await env.gw.query(created.payment_id, req.order_id, channel="backup")
    assert (state.status, state.paid_at) == ("pending", None)  # nothing changed
    before = datetime.now(UTC)
    paid = await env.http.post(created.pay_url, json={"amount_cents": 990})
    assert paid.status_code == 200
    state = await env.gw.query(created.payment_id, req.order_id, channel="backup")
    assert state.status == "paid" and before - timedelta(seconds=1) <= state.paid_at <= datetime.now(UTC)


async def test_pay_can_be_back_dated_only_by_a_test_app() -> None:
    """trust_client_clock (the time-skipping tests' sim fixture) lets the buyer's clock through."""
    app = create_app(MERCHANT, SECRET, "http://sim.test", trust_client_clock=True, control_token=CONTROL_TOKEN)
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.test") as http:
        await http.post("/control", headers=CONTROL, json={"notify": "drop"})
        created = (
            await http.post(
                "/api/payments",
                headers=auth,
                json={
                    "merchant_id": MERCHANT,
                    "order_id": "o-back-dated",
                    "amount_cents": 990,
                    "currency": "CNY",
                    "subject": "x",
                    "notify_url": "http://127.0.0.1:9/notify",
                    "expires_at": "2030-01-01T00:00:00+00:00",
                },
            )
        ).json()
        paid = await http.post(f"/pay/{created['payment_id']}", json={"paid_at": "2025-01-02T03:04:05+00:00"})
        assert paid.json()["paid_at"] == "2025-01-02T03:04:05+00:00"
        found = (await http.get(f"/api/payments/{created['payment_id']}", headers=auth)).json()
    assert datetime.fromisoformat(found["paid_at"]) == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_miaofa_sim_never_trusts_the_client_clock() -> None:
    import inspect

    from miaofa.cli import run

    source = inspect.getsource(run.sim)
    assert "create_app(" in source and "trust_client_clock" not in source.split("create_app(", 1)[1]


async def test_dropped_notify_still_queries_paid(env: Env) -> None:
    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"notify": "drop"})
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    assert (await env.http.post(created.pay_url)).status_code == 200

    await env.quiet()
    assert env.rx.for_order(req.order_id) == []
    assert (await env.gw.query(created.payment_id, req.order_id)).status == "paid"
    assert (await env.gw.query(created.payment_id, req.order_id, channel="backup")).status == "paid"


async def test_delayed_notify(env: Env) -> None:
    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"notify": "delay", "delay_seconds": 0.3})
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    paid_at = time.monotonic()
    await env.http.post(created.pay_url)

    await _notifies(env, req, 1)
    assert time.monotonic() - paid_at >= 0.3  # held back for the delay
    await env.quiet()
    assert len(env.rx.for_order(req.order_id)) == 1


async def test_duplicate_sends_exactly_two(env: Env) -> None:
    await env.http.post(f"{env.sim_url}/control", headers=CONTROL, json={"duplicate": True})
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    await env.http.post(created.pay_url)

    await _notifies(env, req, 2)
    await env.quiet()  # and no third one
    got = env.rx.for_order(req.order_id)
    assert len(got) == 2
    first, second = [await env.gw.verify_notify(r.headers, r.body, {}) for r in got]
    assert first == second
    assert first.payment_id == created.payment_id


async def test_unacknowledged_notify_is_retried(env: Env) -> None:
    env.rx.script[:] = [(200, "ok"), (500, "success")]  # wrong body, then wrong status
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    await env.http.post(created.pay_url)

    await _notifies(env, req, 3)
    await env.quiet()  # the third was acknowledged: nothing more comes
    got = env.rx.for_order(req.order_id)
    assert len(got) == 3
    assert [json.loads(r.body) for r in got] == [got[0].data] * 3
    for r in got:
        assert (await env.gw.verify_notify(r.headers, r.body, {})).payment_id == created.payment_id


async def test_retries_stop_after_the_schedule(env: Env) -> None:
    env.rx.script[:] = [(503, "busy")] * 10
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    await env.http.post(created.pay_url)

    await _notifies(env, req, 1 + len(FAST_RETRIES))
    await env.quiet()
    assert len(env.rx.for_order(req.order_id)) == 1 + len(FAST_RETRIES)


# ---- close and refund -----------------------------------------------------------------------


async def test_close_pending_then_pay_is_refused(env: Env) -> None:
    req = _request(env.rx)
    created = await env.gw.create_payment(req)

    closed = await env.gw.close(created.payment_id, req.order_id)
    assert closed.status == "closed"
    assert (await env.gw.close(created.payment_id, req.order_id)).status == "closed"

    paid = await env.http.post(created.pay_url)
    assert paid.status_code == 409
    assert paid.json()["error"] == "payment_closed"
    assert (await env.gw.query(created.payment_id, req.order_id)).status == "closed"


async def test_close_after_pay_returns_paid(env: Env) -> None:
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    await env.http.post(created.pay_url)

    state = await env.gw.close(created.payment_id, req.order_id)
    assert state.status == "paid"
    assert state.paid_at is not None


async def test_refund_only_when_paid(env: Env) -> None:
    req = _request(env.rx)
    created = await env.gw.create_payment(req)

    with pytest.raises(GatewayError, match="409 not_paid"):
        await env.gw.refund(created.payment_id, req.order_id, 990, "r_1")

    await env.http.post(created.pay_url)
    await _notifies(env, req, 1)
    refunded = await env.gw.refund(created.payment_id, req.order_id, 990, "r_1")
    assert refunded.status == "refunded"
    again = await env.gw.refund(created.payment_id, req.order_id, 990, "r_1")
    assert again == refunded
    with pytest.raises(GatewayError, match="409"):
        await env.gw.refund(created.payment_id, req.order_id, 990, "r_2")

    await _notifies(env, req, 2)
    await env.quiet()  # the repeated refund sent no second refund notify
    got = env.rx.for_order(req.order_id)
    assert len(got) == 2
    assert (await env.gw.verify_notify(got[1].headers, got[1].body, {})).status == "refunded"

    closed_pay = await env.http.post(created.pay_url)
    assert closed_pay.status_code == 409
    assert closed_pay.json()["error"] == "payment_closed"


# ---- notify verification --------------------------------------------------------------------


async def test_forged_or_stale_notifies_are_refused(env: Env) -> None:
    req = _request(env.rx)
    created = await env.gw.create_payment(req)
    await env.http.post(created.pay_url)
    await _notifies(env, req, 1)
    real = env.rx.for_order(req.order_id)[0]
    assert (await env.gw.verify_notify(real.headers, real.body, {})).status == "paid"

    tampered = real.body.replace(b'"amount_cents":990', b'"amount_cents":1')
    assert tampered != real.body
    with pytest.raises(InvalidNotify, match="bad signature"):
        await env.gw.verify_notify(real.headers, tampered, {})

    timestamp = int(real.headers[TIMESTAMP_HEADER.lower()])
    wrong_sig = {**real.headers, SIGNATURE_HEADER.lower(): make_signature("other-secret", timestamp, real.body)}
    with pytest.raises(InvalidNotify, match="bad signature"):
        await env.gw.verify_notify(wrong_sig, real.body, {})

    late = SimulatorGateway(env.sim_url, MERCHANT, SECRET, clock=lambda: time.time() + TOLERANCE_SECONDS + 1)
    try:
        with pytest.raises(InvalidNotify, match="stale"):
            await late.verify_notify(real.headers, real.body, {})
    finally:
        await late.aclose()

    # Another merchant's notify verifies, but the one payment rule (miaofa.payments.proof.judge) refuses it.
    other_merchant = json.loads(real.body) | {"merchant_id": "m_other"}
    headers, body = _signed(other_merchant, int(time.time()))
    notice = await env.gw.verify_notify(headers, body, {})
    proof = Proof(
        notice.payment_id,
        notice.order_id,
        notice.status,
        notice.amount_cents,
        notice.currency,
        notice.paid_at,
        notice.merchant_id,
    )
    assert judge(None, None, proof, gateway="simulator", merchant_id=env.gw.merchant_id) == Judgement(
        FOREIGN, "another merchant"
    )

    nul = json.loads(real.body) | {"order_id": "o\u0000x"}
    with pytest.raises(InvalidNotify, match="bad order_id"):
        await env.gw.verify_notify(*_signed(nul, int(time.time())), {})

    with pytest.raises(InvalidNotify, match="missing"):
        await env.gw.verify_notify({}, real.body, {})


async def test_timestamp_window_both_directions() -> None:
    now = 1_700_000_000
    gw = SimulatorGateway("http://127.0.0.1:9", MERCHANT, SECRET, clock=lambda: float(now))
    try:
        for ts in (now - TOLERANCE_SECONDS, now, now + TOLERANCE_SECONDS):
            assert (await gw.verify_notify(*_signed(_notice_body(), ts), {})).amount_cents == 990
        for ts in (now - TOLERANCE_SECONDS - 1, now + TOLERANCE_SECONDS + 1):
            with pytest.raises(InvalidNotify, match="stale"):
                await gw.verify_notify(*_signed(_notice_body(), ts), {})
    finally:
        await gw.aclose()


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount_cents": 9.9},
        {"amount_cents": 990.0},
        {"amount_cents": "990"},
        {"amount_cents": True},
        {"status": "TRADE_SUCCESS"},
        {"status": "unknown"},
        {"currency": 156},
        {"payment_id": None},
        {"paid_at": "yesterday"},
        {"paid_at": None},
    ],
)
async def test_malformed_notify_bodies_are_refused(overrides: dict) -> None:
    now = 1_700_000_000
    gw = SimulatorGateway("http://127.0.0.1:9", MERCHANT, SECRET, clock=lambda: float(now))
    try:
        with pytest.raises(InvalidNotify):
            await gw.verify_notify(*_signed(_notice_body(**overrides), now), {})
        with pytest.raises(InvalidNotify, match="not JSON"):
            await gw.verify_notify(*_signed(b"status=paid", now), {})
    finally:
        await gw.aclose()


async def test_ack_and_nack() -> None:
    gw = SimulatorGateway("http://127.0.0.1:9", MERCHANT, SECRET)
    try:
        assert (gw.ack().status_code, gw.ack().body) == (200, "success")
        assert (gw.nack("bad signature").status_code, gw.nack("bad signature").body) == (400, "fail")
    finally:
        await gw.aclose()


async def test_control_state_round_trip(env: Env) -> None:
    url = f"{env.sim_url}/control"
    updated = (
        await env.http.post(url, headers=CONTROL, json={"notify": "delay", "delay_seconds": 2.5, "duplicate": True})
    ).json()
    assert updated == {
        "notify": "delay",
        "delay_seconds": 2.5,
        "duplicate": True,
        "query_fail_rate": 0.0,
        "query_fail_channel": "primary",
        "close_fail": False,
        "create_fail": False,
        "payout": "normal",
        "payout_hang_seconds": 3.0,
    }
    assert (await env.http.get(url, headers=CONTROL)).json() == updated
    assert (await env.http.post(url, headers=CONTROL, json={"query_fail_rate": 1.5})).status_code == 422
    assert (await env.http.post(url, headers=CONTROL, json={"notfy": "drop"})).status_code == 422
    reset = (await env.http.post(f"{url}/reset", headers=CONTROL)).json()
    assert reset["notify"] == "normal" and reset["duplicate"] is False
    assert (await env.http.get(f"{env.sim_url}/healthz")).json() == {"status": "ok"}


async def test_control_needs_its_token(env: Env) -> None:
    url = f"{env.sim_url}/control"
    for headers in (
        {},
        {"Authorization": f"Bearer {SECRET}"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer t\u00f6ken".encode()},
        {"Authorization": CONTROL_TOKEN},
    ):
        for method, path in (("POST", url), ("GET", url), ("POST", f"{url}/reset")):
            answer = await env.http.request(method, path, headers=headers, json={"notify": "drop"})
            assert answer.status_code == 401, (headers, path, answer.text)
            assert answer.json()["error"] == "unauthorized"
    assert (await env.http.get(url, headers=CONTROL)).json()["notify"] == "normal"  # nothing changed
    # No token configured: /control is closed to everyone.
    closed = create_app(MERCHANT, SECRET, "http://sim.test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=closed), base_url="http://sim.test") as http:
        answer = await http.post("/control", headers=CONTROL, json={"notify": "drop"})
    assert (answer.status_code, answer.json()["error"]) == (403, "control_disabled")
    with pytest.raises(ValueError):
        create_app(MERCHANT, "", "http://sim.test")


async def test_books_survive_a_restart(tmp_path) -> None:
    state = tmp_path / "simulator.json"
    first = create_app(MERCHANT, SECRET, "http://sim.test", state_file=state, control_token=CONTROL_TOKEN)
    transport = httpx.ASGITransport(app=first)
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as http:
        created = (
            await http.post(
                "/api/payments",
                headers=auth,
                json={
                    "merchant_id": MERCHANT,
                    "order_id": "o-persist",
                    "amount_cents": 990,
                    "currency": "CNY",
                    "subject": "x",
                    "notify_url": "http://127.0.0.1:9/notify",
                    "expires_at": "2030-01-01T00:00:00+00:00",
                },
            )
        ).json()
        await http.post("/control", headers=CONTROL, json={"notify": "drop"})
        assert (await http.post(f"/pay/{created['payment_id']}")).status_code == 200
    second = create_app(MERCHANT, SECRET, "http://sim.test", state_file=state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://sim.test") as http:
        found = (await http.get(f"/api/payments/{created['payment_id']}", headers=auth)).json()
        again = (
            await http.post(
                "/api/payments",
                headers=auth,
                json={
                    "merchant_id": MERCHANT,
                    "order_id": "o-persist",
                    "amount_cents": 990,
                    "currency": "CNY",
                    "subject": "x",
                    "notify_url": "http://127.0.0.1:9/notify",
                    "expires_at": "2030-01-01T00:00:00+00:00",
                },
            )
        ).json()
    assert (found["status"], found["amount_cents"], found["order_id"]) == ("paid", 990, "o-persist")
    assert again["payment_id"] == created["payment_id"]


async def test_books_are_an_append_only_log(tmp_path) -> None:
    state = tmp_path / "simulator.json"
    state.write_text(
        json.dumps(
            [
                {  # a file in the old format (one JSON array) is read, then compacted
                    "payment_id": "sim_old",
                    "merchant_id": MERCHANT,
                    "order_id": "o-old",
                    "amount_cents": 500,
                    "currency": "CNY",
                    "subject": "x",
                    "notify_url": "http://127.0.0.1:9/n",
                    "expires_at": "2030-01-01T00:00:00+00:00",
                    "status": "paid",
                    "paid_at": "2026-01-01T00:00:00+00:00",
                    "refund_id": None,
                    "refund_cents": None,
                }
            ]
        )
    )
    app = create_app(MERCHANT, SECRET, "http://sim.test", state_file=state, control_token=CONTROL_TOKEN)
    assert len(state.read_text().splitlines()) == 1
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.test") as http:
        await http.post("/control", headers=CONTROL, json={"notify": "drop"})
        for number in range(3):
            created = (
                await http.post(
                    "/api/payments",
                    headers=auth,
                    json={
                        "merchant_id": MERCHANT,
                        "order_id": f"o-log-{number}",
                        "amount_cents": 990,
                        "currency": "CNY",
                        "subject": "x",
                        "notify_url": "http://127.0.0.1:9/notify",
                        "expires_at": "2030-01-01T00:00:00+00:00",
                    },
                )
            ).json()
            assert (await http.post(f"/pay/{created['payment_id']}")).status_code == 200
    assert len(state.read_text().splitlines()) == 1 + 3 * 2  # one line per change, nothing rewritten
    with state.open("a") as log:
        log.write('{"payment_id": "sim_torn", "merch')  # a crash in the middle of the last write
    again = create_app(MERCHANT, SECRET, "http://sim.test", state_file=state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url="http://sim.test") as http:
        old = (await http.get("/api/payments/sim_old", headers=auth)).json()
        last = (await http.get("/api/v2/trade/query", params={"order_id": "o-log-2"}, headers=auth)).json()
    assert (old["status"], old["amount_cents"]) == ("paid", 500)
    assert last["status"] == "paid"
    assert len(state.read_text().splitlines()) == 4  # compacted at start: one line per payment
