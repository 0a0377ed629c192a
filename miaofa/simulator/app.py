"""A local payment gateway for development and tests.

It keeps payments in memory and behaves like the real ones where it matters to the shop: signed
notifies that may be late, lost, duplicated or retried, a query API that can fail on one channel,
and the close-versus-pay race. `POST /control` switches those behaviours at run time.
"""

import asyncio
import hmac
import html
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from miaofa.gateways.sim_protocol import ACK_BODY, SIGNATURE_HEADER, TIMESTAMP_HEADER, make_signature

logger = logging.getLogger("miaofa.simulator")

# Waits before each retry of an unacknowledged notify (so 1 + 5 attempts in all), like real
# gateways' growing back-off, only much shorter.
NOTIFY_RETRY_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16)
NOTIFY_TIMEOUT_SECONDS = 5.0

SimStatus = Literal["pending", "paid", "closed", "refunded"]
NotifyMode = Literal["normal", "drop", "delay"]
FailChannel = Literal["primary", "backup", "both"]


class SimError(Exception):
    """An API error answered as JSON `{"error", "detail"}`."""

    def __init__(self, status_code: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail


def _error_response(status_code: int, error: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code)


def _utc(dt: datetime) -> datetime:
    # Naive datetimes from callers are taken as UTC rather than local time.
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


# ---- request bodies -------------------------------------------------------------------------


class CreatePaymentIn(BaseModel):
    merchant_id: str = Field(min_length=1, max_length=64)
    order_id: str = Field(min_length=1, max_length=64)
    amount_cents: StrictInt = Field(gt=0)  # strict: 9.9 or "990" are mistakes, not amounts
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    subject: str = Field(min_length=1, max_length=256)
    notify_url: str = Field(pattern=r"^https?://", max_length=2048)
    expires_at: datetime


class RefundIn(BaseModel):
    refund_id: str = Field(min_length=1, max_length=64)
    amount_cents: StrictInt = Field(gt=0)


class PayIn(BaseModel):
    paid_at: datetime | None = None


class ControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a test knob should fail loudly

    notify: NotifyMode | None = None
    delay_seconds: float | None = Field(default=None, ge=0, le=3600)
    duplicate: StrictBool | None = None
    query_fail_rate: float | None = Field(default=None, ge=0, le=1)
    query_fail_channel: FailChannel | None = None
    close_fail: StrictBool | None = None


# ---- state ----------------------------------------------------------------------------------


@dataclass
class Control:
    notify: NotifyMode = "normal"
    delay_seconds: float = 0.0
    duplicate: bool = False
    query_fail_rate: float = 0.0
    query_fail_channel: FailChannel = "primary"
    close_fail: bool = False  # the gateway cannot close: the buyer may still pay after our window


@dataclass
class Payment:
    payment_id: str
    merchant_id: str
    order_id: str
    amount_cents: int
    currency: str
    subject: str
    notify_url: str
    expires_at: datetime
    status: SimStatus = "pending"
    paid_at: datetime | None = None
    refund_id: str | None = None
    refund_cents: int | None = None

    def state(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "order_id": self.order_id,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
        }

    def notice(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "order_id": self.order_id,
            "merchant_id": self.merchant_id,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
        }


class Simulator:
    """The gateway's books plus its notify sender."""

    def __init__(
        self,
        merchant_id: str,
        secret: str,
        public_url: str,
        retry_delays: Sequence[float],
        rng: Callable[[], float],
    ) -> None:
        self.merchant_id = merchant_id
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.retry_delays = tuple(retry_delays)
        self.rng = rng
        self.payments: dict[str, Payment] = {}
        # One merchant only, so its order_id alone is the idempotency key.
        self.by_order: dict[str, str] = {}
        # Handlers await between reading and writing a record only under this lock.
        self.lock = asyncio.Lock()
        self.control = Control()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def get(self, payment_id: str) -> Payment:
        payment = self.payments.get(payment_id)
        if payment is None:
            raise SimError(404, "not_found", "no such payment")
        return payment

    def pay_url(self, payment: Payment) -> str:
        return f"{self.public_url}/pay/{payment.payment_id}"

    def check_query_channel(self, channel: Literal["primary", "backup"]) -> None:
        control = self.control
        if control.query_fail_rate <= 0 or control.query_fail_channel not in (channel, "both"):
            return
        if self.rng() < control.query_fail_rate:
            raise SimError(503, "service_unavailable", f"simulated {channel} query failure")

    # -- notify sending --

    def schedule_notify(self, payment: Payment) -> None:
        """Send the payment's current state to its notify_url in the background, per the control."""
        control = replace(self.control)  # the knobs as they were when the event happened
        if control.notify == "drop":
            logger.info("notify %s status=%s dropped (control)", payment.payment_id, payment.status)
            return
        body = json.dumps(payment.notice(), separators=(",", ":")).encode()
        self._spawn(self._deliver(payment.notify_url, body, payment.payment_id, control))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # a bare task may be garbage-collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, payment_id: str, control: Control) -> None:
        if control.notify == "delay" and control.delay_seconds > 0:
            await asyncio.sleep(control.delay_seconds)
        copies = 2 if control.duplicate else 1
        for copy in range(1, copies + 1):
            # Each copy gets its own retry chain, so the second copy follows the first at once.
            if not await self._send_once(url, body, payment_id, copy, attempt=1):
                self._spawn(self._retry(url, body, payment_id, copy))

    async def _retry(self, url: str, body: bytes, payment_id: str, copy: int) -> None:
        for attempt, delay in enumerate(self.retry_delays, start=2):
            await asyncio.sleep(delay)
            if await self._send_once(url, body, payment_id, copy, attempt):
                return
        logger.warning("notify %s copy=%d gave up after %d attempts", payment_id, copy, len(self.retry_delays) + 1)

    async def _send_once(self, url: str, body: bytes, payment_id: str, copy: int, attempt: int) -> bool:
        # A fresh timestamp per attempt, so a retry is never stale at the receiver.
        timestamp = int(time.time())
        headers = {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: make_signature(self.secret, timestamp, body),
            "Content-Type": "application/json",
        }
        where = url.split("?", 1)[0]
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.info("notify %s copy=%d attempt=%d to %s failed: %s", payment_id, copy, attempt, where, type(exc).__name__)
            return False
        ok = response.status_code == 200 and response.content == ACK_BODY.encode()
        logger.info(
            "notify %s copy=%d attempt=%d to %s -> HTTP %d%s",
            payment_id, copy, attempt, where, response.status_code, "" if ok else " (not acknowledged)",
        )
        return ok

    def _http(self) -> httpx.AsyncClient:
        # Created lazily so the app also works under transports that skip the lifespan.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=NOTIFY_TIMEOUT_SECONDS)
        return self._client

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# ---- the app --------------------------------------------------------------------------------

_PAY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Simulator payment</title></head>
<body>
<h1>{subject}</h1>
<p>Order {order_id}: <strong>{amount}</strong></p>
<p>Status: {status}</p>
{form}
</body></html>
"""


def _money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


def create_app(
    merchant_id: str,
    secret: str,
    public_url: str,
    *,
    retry_delays: Sequence[float] = NOTIFY_RETRY_DELAYS,
    rng: Callable[[], float] = random.random,
) -> FastAPI:
    """The simulator as an ASGI app. `retry_delays` and `rng` exist so tests can be fast and exact."""
    sim = Simulator(merchant_id, secret, public_url, retry_delays, rng)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sim.shutdown()

    app = FastAPI(title="Miaofa payment simulator", lifespan=lifespan)
    app.state.simulator = sim

    @app.exception_handler(SimError)
    async def _sim_error(_: Request, exc: SimError) -> JSONResponse:
        return _error_response(exc.status_code, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, "invalid_request", _describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, error, exc.detail)

    @app.middleware("http")
    async def _merchant_auth(request: Request, call_next: Callable[[Request], Any]) -> Response:
        # Checked before any body parsing, so an anonymous caller learns nothing but 401.
        if request.url.path.startswith("/api/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), secret.encode()):
                return _error_response(401, "unauthorized", "missing or wrong bearer token")
        return await call_next(request)

    # -- merchant API --

    @app.post("/api/payments")
    async def create_payment(body: CreatePaymentIn) -> JSONResponse:
        if body.merchant_id != sim.merchant_id:
            raise SimError(403, "wrong_merchant", "merchant_id does not match this key")
        currency = body.currency.upper()
        async with sim.lock:
            existing = sim.by_order.get(body.order_id)
            if existing is not None:
                payment = sim.payments[existing]
                # Reusing an order_id for another amount is a shop bug; refuse, like real gateways.
                if payment.amount_cents != body.amount_cents or payment.currency != currency:
                    raise SimError(409, "order_mismatch", "order_id already used with another amount")
                status_code = 200
            else:
                payment = Payment(
                    payment_id="sim_" + secrets.token_hex(12),
                    merchant_id=body.merchant_id,
                    order_id=body.order_id,
                    amount_cents=body.amount_cents,
                    currency=currency,
                    subject=body.subject,
                    notify_url=body.notify_url,
                    expires_at=_utc(body.expires_at),
                )
                sim.payments[payment.payment_id] = payment
                sim.by_order[payment.order_id] = payment.payment_id
                status_code = 201
        content = {"payment_id": payment.payment_id, "pay_url": sim.pay_url(payment), "status": payment.status}
        return JSONResponse(content, status_code=status_code)

    @app.get("/api/payments/{payment_id}")
    async def query_primary(payment_id: str) -> dict[str, Any]:
        sim.check_query_channel("primary")
        return sim.get(payment_id).state()

    @app.get("/api/v2/trade/query")
    async def query_backup(order_id: str) -> dict[str, Any]:
        sim.check_query_channel("backup")
        payment_id = sim.by_order.get(order_id)
        if payment_id is None:
            raise SimError(404, "not_found", "no payment for this order")
        return sim.payments[payment_id].state()

    @app.post("/api/payments/{payment_id}/close")
    async def close_payment(payment_id: str) -> dict[str, Any]:
        if sim.control.close_fail:
            raise SimError(503, "unavailable", "close is failing (simulated)")
        async with sim.lock:
            payment = sim.get(payment_id)
            # Paid (or refunded) wins: the caller sees that state and learns it lost the race.
            if payment.status == "pending":
                payment.status = "closed"
            return payment.state()

    @app.post("/api/payments/{payment_id}/refund")
    async def refund_payment(payment_id: str, body: RefundIn) -> dict[str, Any]:
        async with sim.lock:
            payment = sim.get(payment_id)
            if payment.status == "refunded" and payment.refund_id == body.refund_id:
                if payment.refund_cents != body.amount_cents:
                    raise SimError(409, "refund_mismatch", "refund_id already used with another amount")
                return payment.state()  # a repeat: no second refund, no second notify
            if payment.status != "paid":
                raise SimError(409, "not_paid", f"cannot refund a {payment.status} payment")
            if body.amount_cents > payment.amount_cents:
                raise SimError(422, "invalid_request", "refund exceeds the paid amount")
            payment.status = "refunded"
            payment.refund_id = body.refund_id
            payment.refund_cents = body.amount_cents
            sim.schedule_notify(payment)
            return payment.state()

    # -- buyer --

    @app.get("/pay/{payment_id}", response_class=HTMLResponse)
    async def pay_page(payment_id: str) -> HTMLResponse:
        payment = sim.get(payment_id)
        form = (
            f'<form method="post" action="/pay/{html.escape(payment.payment_id)}"><button type="submit">Pay</button></form>'
            if payment.status == "pending"
            else ""
        )
        page = _PAY_PAGE.format(
            subject=html.escape(payment.subject),
            order_id=html.escape(payment.order_id),
            amount=html.escape(_money(payment.amount_cents, payment.currency)),
            status=html.escape(payment.status),
            form=form,
        )
        return HTMLResponse(page)

    @app.post("/pay/{payment_id}")
    async def pay(payment_id: str, request: Request) -> dict[str, Any]:
        paid_at = datetime.now(timezone.utc)
        raw = await request.body()
        # The HTML form posts an empty form body; tests may post JSON to back-date the payment.
        if raw.strip() and request.headers.get("content-type", "").startswith("application/json"):
            try:
                requested = PayIn.model_validate_json(raw).paid_at
            except ValidationError as exc:
                raise SimError(422, "invalid_request", _describe(exc.errors())) from None
            if requested is not None:
                paid_at = _utc(requested)
        async with sim.lock:
            payment = sim.get(payment_id)
            if payment.status in ("closed", "refunded"):
                raise SimError(409, "payment_closed", f"payment is {payment.status}")
            if payment.status == "paid":
                raise SimError(409, "already_paid", "payment is already paid")
            payment.status = "paid"
            payment.paid_at = paid_at
            sim.schedule_notify(payment)
        return {"payment_id": payment.payment_id, "status": payment.status, "paid_at": paid_at.isoformat()}

    # -- test controls (loopback only, no auth) --

    @app.get("/control")
    async def get_control() -> dict[str, Any]:
        return asdict(sim.control)

    @app.post("/control")
    async def set_control(body: ControlIn) -> dict[str, Any]:
        sim.control = replace(sim.control, **body.model_dump(exclude_none=True))
        return asdict(sim.control)

    @app.post("/control/reset")
    async def reset_control() -> dict[str, Any]:
        sim.control = Control()
        return asdict(sim.control)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _describe(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Pydantic's own error dicts may hold exception objects; keep what serialises.
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]
