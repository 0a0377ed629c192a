"""The buyer's JSON API: products, orders, live order events, "I have paid".

Every text a buyer sends is checked at the edge (no control characters, one email address), and
every order passes the admission rules of miaofa/risk.py before anything is reserved.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from api import http_metrics as metrics, order_client
from api.client_ip import client_ip
from api.deps import SessionDep, StateDep
from api.stock_hint import ProductInfo
from api.state import State
from miaofa import contract as c, coupons, orders
from miaofa.risk import admission, limiters
from miaofa.risk import chain as risk_chain
from miaofa import errors
from miaofa.errors import OrderTimeout, InvalidInput, MiaofaError, NotFound, OrderNotFound, SoldOut, TooManyRequests, Unavailable
from miaofa.messaging.emails import pick_lang
from miaofa.netaddr import networks, within
from miaofa.text import control_character, email_problem

router = APIRouter(tags=["shop"])
log = logging.getLogger("miaofa.api.shop")
MAX_QUANTITY = 10
STREAM_TERMINAL = frozenset({c.DELIVERED, c.REFUNDED, c.REJECTED, c.EXPIRED, c.CANCELLED})


def _no_control(value: Any) -> Any:
    if isinstance(value, str) and control_character(value):
        raise PydanticCustomError("control_character", "must not contain control characters")
    return value


def _one_address(value: str) -> str:
    if problem := email_problem(value):
        raise PydanticCustomError("email", problem)
    return value


Plain = BeforeValidator(_no_control)


class OrderCreate(BaseModel):
    sku: Annotated[str, Plain, Field(min_length=1, max_length=64)]
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    email: Annotated[str, Plain, Field(max_length=254), AfterValidator(_one_address)] = Field(
        description="one address (name@domain); no display name, no list")
    gateway: Annotated[str, Plain, Field(max_length=32)] = "simulator"
    coupon_code: Annotated[str | None, Plain] = Field(default=None, min_length=1, max_length=40)
    lang: Literal["zh", "en"] | None = Field(
        default=None, description="language of the buyer's emails; else from Accept-Language, else both")


def _plain(name: str, value: str) -> str:
    """A header or path parameter, checked like the body's text fields."""
    if control_character(value):
        raise InvalidInput(f"{name}: must not contain control characters")
    return value


def _order_id(order_id: Annotated[str, Path(min_length=1, max_length=64)]) -> str:
    return _plain("order_id", order_id)


OrderId = Annotated[str, Depends(_order_id)]


def _guards(request: Request, state: State) -> limiters.Guards:
    # One per app, built on first use from the app's settings.
    guards = getattr(request.app.state, "buyer_guards", None)
    if guards is None:
        guards = request.app.state.buyer_guards = limiters.Guards(state.settings)
    return guards


def _chain(request: Request, state: State) -> risk_chain.Chain:
    chain = getattr(request.app.state, "risk_chain", None)
    if chain is None:
        chain = request.app.state.risk_chain = risk_chain.Chain(state.settings)
    return chain


def _denied(exc: MiaofaError) -> JSONResponse:
    """A deny of the rule chain: counted and logged by rule and code (never the email or address)."""
    metrics.ORDERS.labels(exc.error).inc()
    log.info("order denied by risk rule %s: %s", getattr(exc, "risk_rule", "?"), exc.error)
    return _refused(exc)


def _client(request: Request, state: State) -> str | None:
    """The client's address, or None when it is in an exempt network (no admission rules, no caps)."""
    ip = client_ip(request, state.settings.trusted_proxies)
    return None if within(ip, networks(state.settings.risk_exempt_networks)) else ip


def _refused(exc: MiaofaError) -> JSONResponse:
    """A refusal with its headers (Retry-After)."""
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


@router.get("/products")
async def list_products(state: StateDep) -> list[dict[str, Any]]:
    """The catalog with what is in stock now, from the stock hint (refreshed every second)."""
    return [{"sku": p.sku, "name": p.name, "price_cents": p.price_cents, "currency": p.currency,
             "delivery_sla_seconds": p.delivery_sla_seconds, "available": state.hot.available(p.id)}
            for p in state.hot.products()]


class OrderInReview(BaseModel):
    """202: the order is held for a review by support (no payment yet); its stock is reserved."""

    order_id: str
    access_token: str
    status: Literal["in_review"]
    amount_cents: int
    currency: str
    expires_at: datetime = Field(description="when the review ends: an order not approved by then is rejected")
    payment: None = Field(default=None, description="none until support approves the order")


@router.post("/orders", status_code=201, responses={
    200: {"description": "an Idempotency-Key replay: the same order, without its access token"},
    202: {"model": OrderInReview, "description": "held for review: watch the order page; payment comes on approval"},
    403: {"description": "refused by a risk rule: email_blocked, network_blocked, device_blocked, quantity_limit, "
                         "too_many_open_orders, order_refused"}})
async def create_order(body: OrderCreate, request: Request, state: StateDep,
                       idempotency_key: Annotated[str | None, Header(
                           min_length=16, max_length=200, description="a random value (e.g. a UUID), 16+ characters; "
                           "the same email and key are the same order")] = None,
                       x_device_id: Annotated[str | None, Header(
                           alias="X-Device-Id", min_length=1, max_length=128,
                           description="the buyer's device id, if the storefront has one (risk rules)")] = None
                       ) -> JSONResponse:
    """Reserve stock and create the payment in one round trip: 201 with the pay link, or 409 sold_out.

    The risk rules run first, cheapest first (miaofa/risk_chain.py): blocklists, quantity and rates
    in memory, then sold-out (the stock hint), then the open-order caps and the anomaly rules
    (PostgreSQL). A refusal reserves nothing. An order the rules hold for review answers 202,
    status `in_review`, without a payment. A replayed Idempotency-Key answers 200 with the order's
    state and payment link, without its access token (README, "Idempotency-Key").
    """
    # Timed from the handler's start, by answer: a sold-out answer's own cost, apart from the time a
    # request queues for the event loop (which miaofa_http_request_seconds includes).
    started, status = time.perf_counter(), 500
    try:
        response = await _create_order(body, request, state, idempotency_key, x_device_id)
        status = response.status_code
        return response
    except MiaofaError as exc:
        status = exc.status_code
        raise
    finally:
        metrics.ORDER_ANSWER.labels(str(status)).observe(time.perf_counter() - started)


async def _create_order(body: OrderCreate, request: Request, state: State, idempotency_key: str | None,
                        device: str | None) -> JSONResponse:
    """The order path itself; create_order times it."""
    if idempotency_key is not None:
        _plain("Idempotency-Key", idempotency_key)
    if device is not None:
        _plain("X-Device-Id", device)
    chain = _chain(request, state)
    ip = _client(request, state)  # None: an exempt network (a load generator) skips the risk rules
    attempt = chain.attempt(email=body.email, buyer_hash=state.vault.buyer_hash(body.email), ip=ip, device=device,
                            quantity=body.quantity)
    try:
        screened = chain.screen(attempt)  # memory only: a flood is refused without a database round trip
    except MiaofaError as exc:
        return _denied(exc)
    product = await state.hot.product(body.sku)
    if product is None:
        raise NotFound(f"no product with sku {body.sku!r}", error="unknown_product")
    if body.gateway not in state.gateways:
        raise InvalidInput(f"unknown gateway {body.gateway!r}; use one of {', '.join(state.gateways)}",
                           error="unknown_gateway")
    order_id = (state.vault.idempotent_order_id(body.email, idempotency_key) if idempotency_key
                else uuid.uuid4().hex[:20])
    if idempotency_key:
        if (replayed := await _replayed(state, order_id, body)) is not None:
            metrics.ORDERS.labels("replayed").inc()
            return replayed
    elif not state.hot.has_stock(product.id, body.quantity):  # answered from memory
        metrics.ORDERS.labels("sold_out_hint").inc()
        raise SoldOut("this product is sold out")
    if body.coupon_code:
        async with state.sessionmaker() as session:
            await coupons.check_usable(session, body.coupon_code, datetime.now(timezone.utc), product.currency)
    attempt.order_id, attempt.product_id, attempt.currency = order_id, product.id, product.currency
    attempt.amount_cents = product.price_cents * body.quantity
    try:  # open-order caps and anomalies, in PostgreSQL; a deny rolls its admission row back
        decision = await chain.judge(state.sessionmaker, attempt, screened)
    except MiaofaError as exc:
        return _denied(exc)
    capped = decision.admitted
    # A retried Idempotency-Key must reach its order, so it skips the stock hint.
    if not idempotency_key and not state.hot.claim(order_id, product.id, body.quantity):
        if capped:
            await _forget(state, order_id)
        metrics.ORDERS.labels("sold_out_hint").inc()
        raise SoldOut("this product is sold out")
    reserved = False
    try:
        lang = pick_lang(body.lang, request.headers.get("accept-language"))  # stored with the order itself
        opened = await order_client.open_order(state, _order_input(state, product, body, order_id,
                                                                   decision.contract(attempt.device_hash), lang))
        reserved = opened is not None and opened.outcome == c.OPENED
    finally:  # however the request ends (answer, timeout, error, cancelled): the claim goes back
        if not idempotency_key:
            state.hot.settle(order_id, reserved)
    if capped and opened is not None and opened.outcome != c.OPENED:
        await _forget(state, order_id)  # nothing is held: it must not count against the buyer
    metrics.ORDERS.labels(opened.outcome if opened else "replayed").inc()
    if opened is None:
        return await _existing_order(state, order_id)
    if opened.outcome == c.SOLD_OUT:
        state.hot.sold_out(product.id)
        raise SoldOut("this product is sold out")
    if opened.outcome in (c.COUPON_INVALID, c.INVALID_ORDER):
        raise errors.from_code(opened.error, opened.detail or "the order cannot be made", InvalidInput)
    if opened.outcome == c.GATEWAY_UNAVAILABLE:
        raise Unavailable(opened.detail, error="gateway_unavailable")
    if (opened.sku, opened.quantity) != (body.sku, body.quantity):
        raise InvalidInput("this Idempotency-Key was used for another order (different product or quantity)",
                           error="idempotency_key_reused")
    assert opened.expires_at is not None
    payment = opened.payment  # None when a coupon made the order free, or held for review
    return JSONResponse(status_code=202 if opened.status == c.IN_REVIEW else 201, content={
        "order_id": order_id, "access_token": state.vault.order_token(order_id), "status": opened.status,
        "amount_cents": opened.amount_cents, "currency": opened.currency,
        "expires_at": opened.expires_at.isoformat(),
        "payment": None if payment is None else {
            "gateway": payment.gateway, "payment_id": payment.payment_id, "pay_url": payment.pay_url}})


async def _forget(state: State, order_id: str) -> None:
    async with state.sessionmaker.begin() as session:
        await admission.forget(session, order_id)


def _order_input(state: State, product: ProductInfo, body: OrderCreate, order_id: str,
                 decision: c.RiskDecision | None = None, lang: str | None = None) -> c.OrderInput:
    settings = state.settings
    return c.OrderInput(
        order_id=order_id, product_id=product.id, sku=product.sku, product_name=product.name,
        unit_price_cents=product.price_cents, currency=product.currency, quantity=body.quantity,
        email=body.email, buyer_hash=state.vault.buyer_hash(body.email), gateway=body.gateway,
        delivery_sla_seconds=product.delivery_sla_seconds, coupon_code=body.coupon_code, risk=decision, lang=lang,
        timing=c.Timing(payment_window_seconds=settings.payment_window_seconds,
                        callback_grace_seconds=settings.callback_grace_seconds,
                        poll_interval_seconds=settings.poll_interval_seconds,
                        late_payment_watch_seconds=settings.late_payment_watch_seconds,
                        late_poll_interval_seconds=settings.late_poll_interval_seconds,
                        support_window_seconds=settings.support_window_seconds,
                        review_window_seconds=settings.review_window_seconds))


async def _replayed(state: State, order_id: str, body: OrderCreate) -> JSONResponse | None:
    """The answer to an Idempotency-Key whose order exists already; None when it does not (yet)."""
    async with state.sessionmaker() as session:
        try:
            view = await orders.order_view(session, state.vault, order_id, with_keys=False)
        except NotFound:
            return None
    if (view["sku"], view["quantity"]) != (body.sku, body.quantity):
        raise InvalidInput("this Idempotency-Key was used for another order (different product or quantity)",
                           error="idempotency_key_reused")
    return _replay_answer(order_id, view)


async def _existing_order(state: State, order_id: str) -> JSONResponse:
    async with state.sessionmaker() as session:
        try:
            view = await orders.order_view(session, state.vault, order_id, with_keys=False)
        except NotFound:
            raise SoldOut("this product is sold out") from None
    return _replay_answer(order_id, view)


def _replay_answer(order_id: str, view: dict[str, Any]) -> JSONResponse:
    # Email + Idempotency-Key are not proof of being the buyer: no access token here. The buyer has
    # it from the first answer, from the gateway's return link after paying, and in the email.
    if view["payment"] is None and view["status"] == c.AWAITING_PAYMENT and view["amount_cents"] > 0:
        raise OrderTimeout("the order is still opening; try again with the same Idempotency-Key")
    return JSONResponse(status_code=200, content=jsonable_encoder({
        "order_id": order_id, "access_token": None, "replayed": True, "status": view["status"],
        "amount_cents": view["amount_cents"], "currency": view["currency"], "expires_at": view["expires_at"],
        "payment": view["payment"]}))


def _check_token(state: State, order_id: str, token: str | None) -> None:
    # Unknown order and wrong token answer alike, so order ids cannot be probed.
    if not token or not state.vault.check_order_token(order_id, token):
        raise OrderNotFound("no such order")


TokenHeader = Annotated[str | None, Header(alias="X-Order-Token")]


@router.get("/orders/{order_id}")
async def read_order(order_id: OrderId, state: StateDep, session: SessionDep,
                     x_order_token: TokenHeader = None, token: str | None = None) -> JSONResponse:
    """The order's status, timeline, coupon, and its keys once delivered.

    The token comes in the X-Order-Token header, or as `?token=` in the link the buyer was sent."""
    _check_token(state, order_id, x_order_token or token)
    view = await orders.order_view(session, state.vault, order_id)
    return JSONResponse(jsonable_encoder(view), headers={"Cache-Control": "no-store"})


@router.post("/orders/{order_id}/check-payment")
async def check_payment(order_id: OrderId, request: Request, state: StateDep, x_order_token: TokenHeader = None,
                        token: str | None = None) -> dict[str, Any]:
    """The buyer says they paid: ask the gateway now (a return page is never proof).

    At most once per CHECK_PAYMENT_INTERVAL_SECONDS per order (429 with Retry-After otherwise), so
    a script cannot grow the order's history or hammer the gateway."""
    _check_token(state, order_id, x_order_token or token)
    if wait := _guards(request, state).check_payment.take(order_id, time.monotonic()):
        return _refused(TooManyRequests(  # type: ignore[return-value]
            f"the gateway was just asked about this order; ask again in {int(wait + 0.999)} s", retry_after=wait))
    result: c.CheckPaymentResult = await order_client.run_update(state, order_id, c.CHECK_PAYMENT_UPDATE,
                                                                 result_type=c.CheckPaymentResult)
    return {"order_id": order_id, "status": result.status, "paid": result.paid}


class _HeldStream(StreamingResponse):
    """A stream holding a slot of its client's stream cap until it ends, however it ends."""

    def __init__(self, content: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


@router.get("/orders/{order_id}/events")
async def order_events(order_id: OrderId, request: Request, state: StateDep,
                       x_order_token: TokenHeader = None, token: str | None = None) -> StreamingResponse:
    """Server-Sent Events: one `status` event per change, until the order settles (delivered,
    expired, cancelled, rejected or refunded). At most SSE_MAX_STREAMS_PER_IP at once per address."""
    _check_token(state, order_id, x_order_token or token)
    guards = _guards(request, state)
    ip = _client(request, state)
    slot = limiters.client_bucket(ip) if ip is not None else None
    if slot is not None and not guards.streams.acquire(slot):
        return _refused(TooManyRequests(  # type: ignore[return-value]
            "too many live order streams from your address; close one first", retry_after=5))

    def release() -> None:
        if slot is not None:
            guards.streams.release(slot)

    try:
        async with state.sessionmaker() as session:
            await orders.get_order(session, order_id)
    except BaseException:
        release()
        raise

    async def stream():
        last = None
        for _ in range(3600):  # at most ~30 minutes per connection; the browser reconnects
            if await request.is_disconnected():
                return
            async with state.sessionmaker() as session:
                order = await orders.get_order(session, order_id)
            if order.status != last:
                last = order.status
                yield f"event: status\ndata: {json.dumps({'order_id': order_id, 'status': last})}\n\n"
            if last in STREAM_TERMINAL:
                return
            await asyncio.sleep(0.5)

    return _HeldStream(stream(), release, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
