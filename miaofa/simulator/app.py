"""A local payment gateway for development and tests.

It keeps payments in memory and behaves like the real ones where it matters to the shop: signed
notifies that may be late, lost, duplicated or retried, a query API that can fail on one channel,
and the close-versus-pay race. `POST /control` switches those behaviours at run time.

It is an outside party, and a test double that can mark payments paid, so it trusts nobody:
- the merchant API (`/api/...`) needs the shared secret as a bearer token;
- `/control` needs its own token (`control_token`); without one configured it is refused;
- `POST /pay/{id}` stamps `paid_at` with the simulator's own clock. A client clock (a back-dated
  payment, to earn a late-delivery coupon) is accepted only by an app built with
  `trust_client_clock=True`, which the time-skipping tests use and `miaofa sim` never does.
- What a buyer may still do, because it moves the buyer's own money and is what real buyers do:
  pay a different amount (JSON `amount_cents`) and pay the same order twice (`/pay/{id}/again`).
  The shop must refund both; tests/saga/test_stray_payments.py and tests/saga/test_reconcile.py prove it.
"""

import hmac
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from miaofa.simulator import page, payouts
from miaofa.simulator.books import (
    NOTIFY_RETRY_DELAYS,
    Control,
    FailChannel,
    NotifyMode,
    Payment,
    PayoutMode,
    SimError,
    Simulator,
    _utc,
)


def _error_response(status_code: int, error: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code)


# ---- request bodies -------------------------------------------------------------------------


class CreatePaymentIn(BaseModel):
    merchant_id: str = Field(min_length=1, max_length=64)
    order_id: str = Field(min_length=1, max_length=64)
    amount_cents: StrictInt = Field(gt=0)  # strict: 9.9 or "990" are mistakes, not amounts
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    subject: str = Field(min_length=1, max_length=256)
    notify_url: str = Field(pattern=r"^https?://", max_length=2048)
    return_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2048)
    expires_at: datetime


class MerchantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    secret: str = Field(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")


class RefundIn(BaseModel):
    refund_id: str = Field(min_length=1, max_length=64)
    amount_cents: StrictInt = Field(gt=0)


class PayIn(BaseModel):
    paid_at: datetime | None = None
    amount_cents: StrictInt | None = Field(default=None, gt=0)  # a buyer who pays the wrong amount


class ControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a test knob should fail loudly

    notify: NotifyMode | None = None
    delay_seconds: float | None = Field(default=None, ge=0, le=3600)
    duplicate: StrictBool | None = None
    query_fail_rate: float | None = Field(default=None, ge=0, le=1)
    query_fail_channel: FailChannel | None = None
    close_fail: StrictBool | None = None
    create_fail: StrictBool | None = None
    payout: PayoutMode | None = None
    payout_hang_seconds: float | None = Field(default=None, ge=0, le=60)


# ---- the app --------------------------------------------------------------------------------


def create_app(
    merchant_id: str,
    secret: str,
    public_url: str,
    *,
    retry_delays: Sequence[float] = NOTIFY_RETRY_DELAYS,
    rng: Callable[[], float] = random.random,
    state_file: Path | None = None,
    control_token: str = "",
    trust_client_clock: bool = False,
) -> FastAPI:
    """The simulator as an ASGI app. `retry_delays` and `rng` exist so tests can be fast and exact;
    with `state_file` its books survive a restart. `/control` answers `control_token` holders only
    (none configured: nobody). `trust_client_clock` is for time-skipping tests only: it lets
    `POST /pay` take the buyer's `paid_at`, so the gateway's clock agrees with the workflows'."""
    if not secret:
        raise ValueError("the simulator needs a signing secret")
    sim = Simulator(merchant_id, secret, public_url, retry_delays, rng, state_file)

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
        path = request.url.path
        if path.startswith("/api/"):
            merchant = sim.merchant_of(_bearer(request))
            if merchant is None:
                return _error_response(401, "unauthorized", "missing or wrong bearer token")
            request.state.merchant_id = merchant  # each account sees only its own payments
        elif path == "/control" or path.startswith("/control/"):
            if not control_token:
                return _error_response(403, "control_disabled", "this simulator has no control token configured")
            if not _bearer_is(request, control_token):
                return _error_response(401, "unauthorized", "missing or wrong control token")
        return await call_next(request)

    # -- merchant API --

    @app.post("/api/payments")
    async def create_payment(body: CreatePaymentIn, request: Request) -> JSONResponse:
        if body.merchant_id != request.state.merchant_id:
            raise SimError(403, "wrong_merchant", "merchant_id does not match this key")
        if sim.control.create_fail:
            raise SimError(503, "unavailable", "payment creation is failing (simulated)")
        currency = body.currency.upper()
        async with sim.lock:
            existing = sim.by_order.get((body.merchant_id, body.order_id))
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
                    return_url=body.return_url,
                )
                sim.payments[payment.payment_id] = payment
                sim.by_order[(payment.merchant_id, payment.order_id)] = payment.payment_id
                sim.save(payment)
                status_code = 201
        content = {"payment_id": payment.payment_id, "pay_url": sim.pay_url(payment), "status": payment.status}
        return JSONResponse(content, status_code=status_code)

    @app.get("/api/payments/{payment_id}")
    async def query_primary(payment_id: str, request: Request) -> dict[str, Any]:
        sim.check_query_channel("primary")
        return sim.get(payment_id, request.state.merchant_id).state()

    @app.get("/api/v2/trade/query")
    async def query_backup(order_id: str, request: Request) -> dict[str, Any]:
        sim.check_query_channel("backup")
        payment_id = sim.by_order.get((request.state.merchant_id, order_id))
        if payment_id is None:
            raise SimError(404, "not_found", "no payment for this order")
        return sim.payments[payment_id].state()

    @app.get("/api/statements")
    async def statement(start: datetime, end: datetime, request: Request) -> list[dict[str, Any]]:
        """The bill download: every payment of this account paid within [start, end), refunded ones included."""
        since, until = _utc(start), _utc(end)
        return [
            p.state()
            for p in sim.payments.values()
            if p.merchant_id == request.state.merchant_id
            and p.paid_at is not None
            and since <= p.paid_at < until
            and p.status in ("paid", "refunded")
        ]

    @app.post("/api/payments/{payment_id}/close")
    async def close_payment(payment_id: str, request: Request) -> dict[str, Any]:
        if sim.control.close_fail:
            raise SimError(503, "unavailable", "close is failing (simulated)")
        async with sim.lock:
            payment = sim.get(payment_id, request.state.merchant_id)
            # Paid (or refunded) wins: the caller sees that state and learns it lost the race.
            if payment.status == "pending":
                payment.status = "closed"
                sim.save(payment)
            return payment.state()

    @app.post("/api/payments/{payment_id}/refund")
    async def refund_payment(payment_id: str, body: RefundIn, request: Request) -> dict[str, Any]:
        async with sim.lock:
            payment = sim.get(payment_id, request.state.merchant_id)
            if payment.status == "refunded" and payment.refund_id == body.refund_id:
                if payment.refund_cents != body.amount_cents:
                    raise SimError(409, "refund_mismatch", "refund_id already used with another amount")
                return payment.state()  # a repeat: no second refund, no second notify
            if payment.status != "paid":
                raise SimError(409, "not_paid", f"cannot refund a {payment.status} payment")
            if body.amount_cents > payment.state()["amount_cents"]:
                raise SimError(422, "invalid_request", "refund exceeds the paid amount")
            payment.status = "refunded"
            payment.refund_id = body.refund_id
            payment.refund_cents = body.amount_cents
            sim.save(payment)
            sim.schedule_notify(payment)
            return payment.state()

    payouts.install(app, sim)

    # -- buyer --

    @app.get("/pay/{payment_id}", response_class=HTMLResponse)
    async def pay_page(payment_id: str) -> HTMLResponse:
        payment = sim.get(payment_id)
        return HTMLResponse(
            page.pay_page(payment, sim.pay_url(payment)),
            headers={
                "Content-Security-Policy": page.CSP,
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    @app.post("/pay/{payment_id}/fail", response_model=None)
    async def fail(payment_id: str, request: Request) -> dict[str, Any] | Response:
        """The buyer's payment is declined: nothing is paid, the payment stays open for another try."""
        payment = sim.get(payment_id)
        if payment.return_url and _from_browser(request):
            return RedirectResponse(payment.return_url, status_code=303)
        return {"payment_id": payment.payment_id, "status": payment.status, "declined": True}

    @app.post("/pay/{payment_id}", response_model=None)
    async def pay(payment_id: str, request: Request) -> dict[str, Any] | Response:
        paid_at = datetime.now(UTC)
        raw = await request.body()
        wants_json = request.headers.get("content-type", "").startswith("application/json")
        paid_cents = None
        # The HTML form posts an empty form body; a buyer may post JSON to pay the wrong amount.
        # `paid_at` is the simulator's own clock: a client's is taken only by a time-skipping test app.
        if raw.strip() and wants_json:
            try:
                requested = PayIn.model_validate_json(raw)
            except ValidationError as exc:
                raise SimError(422, "invalid_request", _describe(exc.errors())) from None
            if requested.paid_at is not None:
                if not trust_client_clock:
                    raise SimError(422, "paid_at_refused", "paid_at is the gateway's own clock; leave it out")
                paid_at = _utc(requested.paid_at)
            paid_cents = requested.amount_cents
        async with sim.lock:
            payment = sim.get(payment_id)
            if payment.status in ("closed", "refunded"):
                raise SimError(409, "payment_closed", f"payment is {payment.status}")
            if payment.status == "paid":
                raise SimError(409, "already_paid", "payment is already paid")
            payment.status = "paid"
            payment.paid_at = paid_at
            if paid_cents is not None and paid_cents != payment.amount_cents:
                payment.paid_cents = paid_cents
            sim.save(payment)
            sim.schedule_notify(payment)
        if payment.return_url and _from_browser(request):
            # Like a real gateway: the buyer's browser goes back to the shop (never proof of payment).
            return RedirectResponse(payment.return_url, status_code=303)
        return {"payment_id": payment.payment_id, "status": payment.status, "paid_at": paid_at.isoformat()}

    @app.post("/pay/{payment_id}/again")
    async def pay_again(payment_id: str) -> dict[str, Any]:
        """The buyer pays the same order a second time (two QR codes, two tabs): a new paid payment."""
        async with sim.lock:
            first = sim.get(payment_id)
            paid_at = datetime.now(UTC)
            second = replace(
                first,
                payment_id="sim_" + secrets.token_hex(12),
                status="paid",
                paid_at=paid_at,
                paid_cents=None,
                refund_id=None,
                refund_cents=None,
            )
            sim.payments[second.payment_id] = second
            sim.save(second)
            sim.schedule_notify(second)
        return {"payment_id": second.payment_id, "status": second.status, "paid_at": paid_at.isoformat()}

    # -- test controls (bearer control token, checked in the middleware above) --

    @app.get("/control")
    async def get_control() -> dict[str, Any]:
        return asdict(sim.control)

    @app.post("/control")
    async def set_control(body: ControlIn) -> dict[str, Any]:
        sim.control = replace(sim.control, **body.model_dump(exclude_none=True))
        return asdict(sim.control)

    @app.post("/control/merchants", status_code=201)
    async def add_merchant(body: MerchantIn) -> dict[str, str]:
        """Open another merchant account (a direct merchant of the shop); its secret is never echoed."""
        known = sim.accounts.get(body.merchant_id)
        if known is not None and not hmac.compare_digest(known.encode(), body.secret.encode()):
            raise SimError(409, "merchant_exists", "this merchant id has another secret")
        sim.accounts[body.merchant_id] = body.secret
        return {"merchant_id": body.merchant_id}

    @app.post("/control/reset")
    async def reset_control() -> dict[str, Any]:
        sim.control = Control()
        return asdict(sim.control)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _from_browser(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") or request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    )


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        token.encode("ascii")
    except UnicodeEncodeError:
        return ""
    return token.strip() if scheme.lower() == "bearer" else ""


def _bearer_is(request: Request, expected: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # Bytes: compare_digest refuses non-ASCII str, and a stranger's header must not make a 500.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def _describe(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Pydantic's own error dicts may hold exception objects; keep what serialises.
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]
