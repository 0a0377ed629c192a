"""The buyer's JSON API: products, orders, live order events, "I have paid"."""

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from api import metrics, order_client
from api.deps import SessionDep, StateDep
from api.hot import ProductInfo
from api.state import State
from miaofa import catalog, contract as c, coupons, inventory, orders
from miaofa import errors
from miaofa.errors import InvalidInput, NotFound, OrderNotFound, SoldOut, Unavailable

router = APIRouter(tags=["shop"])
MAX_QUANTITY = 10
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"


class OrderCreate(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    email: str = Field(max_length=254, pattern=EMAIL_PATTERN)
    gateway: str = Field(default="simulator", max_length=32)
    coupon_code: str | None = Field(default=None, min_length=1, max_length=40)


@router.get("/products")
async def list_products(state: StateDep, session: SessionDep) -> list[dict[str, Any]]:
    """The catalog with what is in stock now."""
    products = await catalog.list_products(session)
    available = await inventory.available_by_product(session)
    return [{"sku": p.sku, "name": p.name, "price_cents": p.price_cents, "currency": p.currency,
             "delivery_sla_seconds": p.delivery_sla_seconds, "available": available.get(p.id, 0)}
            for p in products]


@router.post("/orders", status_code=201)
async def create_order(body: OrderCreate, state: StateDep,
                       idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
    """Reserve stock and create the payment in one round trip: 201 with the pay link, or 409 sold_out."""
    product = await state.hot.product(body.sku)
    if product is None:
        raise NotFound(f"no product with sku {body.sku!r}", error="unknown_product")
    if body.gateway not in state.gateways:
        raise InvalidInput(f"unknown gateway {body.gateway!r}; use one of {', '.join(state.gateways)}",
                           error="unknown_gateway")
    if body.coupon_code:
        async with state.sessionmaker() as session:
            await coupons.check_usable(session, body.coupon_code, datetime.now(timezone.utc), product.currency)
    order_id = (state.vault.idempotent_order_id(body.email, idempotency_key) if idempotency_key
                else uuid.uuid4().hex[:20])
    # A replayed Idempotency-Key must reach its existing order, so it skips the admission hint.
    if not idempotency_key and not state.hot.claim(order_id, product.id, body.quantity):
        metrics.ORDERS.labels("sold_out_hint").inc()
        raise SoldOut("this product is sold out")
    reserved = False
    try:
        opened = await order_client.open_order(state, _order_input(state, product, body, order_id))
        reserved = opened is not None and opened.outcome == c.OPENED
    finally:
        if not idempotency_key:
            state.hot.settle(order_id, reserved)
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
    payment = opened.payment  # None when a coupon made the order free: nothing to pay
    return JSONResponse(status_code=201, content={
        "order_id": order_id, "access_token": state.vault.order_token(order_id), "status": opened.status,
        "amount_cents": opened.amount_cents, "currency": opened.currency,
        "expires_at": opened.expires_at.isoformat(),
        "payment": None if payment is None else {
            "gateway": payment.gateway, "payment_id": payment.payment_id, "pay_url": payment.pay_url}})


def _order_input(state: State, product: ProductInfo, body: OrderCreate, order_id: str) -> c.OrderInput:
    settings = state.settings
    return c.OrderInput(
        order_id=order_id, product_id=product.id, sku=product.sku, product_name=product.name,
        unit_price_cents=product.price_cents, currency=product.currency, quantity=body.quantity,
        email=body.email, buyer_hash=state.vault.buyer_hash(body.email), gateway=body.gateway,
        delivery_sla_seconds=product.delivery_sla_seconds, coupon_code=body.coupon_code,
        timing=c.Timing(payment_window_seconds=settings.payment_window_seconds,
                        callback_grace_seconds=settings.callback_grace_seconds,
                        poll_interval_seconds=settings.poll_interval_seconds,
                        late_payment_watch_seconds=settings.late_payment_watch_seconds,
                        late_poll_interval_seconds=settings.late_poll_interval_seconds,
                        support_window_seconds=settings.support_window_seconds))


async def _existing_order(state: State, order_id: str) -> JSONResponse:
    async with state.sessionmaker() as session:
        try:
            view = await orders.order_view(session, state.vault, order_id, with_keys=False)
        except NotFound:
            raise SoldOut("this product is sold out") from None
    payment = view["payment"]
    return JSONResponse(status_code=200, content=jsonable_encoder({
        "order_id": order_id, "access_token": state.vault.order_token(order_id), "status": view["status"],
        "amount_cents": view["amount_cents"], "currency": view["currency"], "expires_at": view["expires_at"],
        "payment": payment}))


def _check_token(state: State, order_id: str, token: str | None) -> None:
    # Unknown order and wrong token answer alike, so order ids cannot be probed.
    if not token or not state.vault.check_order_token(order_id, token):
        raise OrderNotFound("no such order")


TokenHeader = Annotated[str | None, Header(alias="X-Order-Token")]


@router.get("/orders/{order_id}")
async def read_order(order_id: str, state: StateDep, session: SessionDep,
                     x_order_token: TokenHeader = None, token: str | None = None) -> JSONResponse:
    """The order's status, timeline, coupon, and its keys once delivered.

    The token comes in the X-Order-Token header, or as `?token=` in the link the buyer was sent."""
    _check_token(state, order_id, x_order_token or token)
    view = await orders.order_view(session, state.vault, order_id)
    return JSONResponse(jsonable_encoder(view), headers={"Cache-Control": "no-store"})


@router.post("/orders/{order_id}/check-payment")
async def check_payment(order_id: str, state: StateDep, x_order_token: TokenHeader = None,
                        token: str | None = None) -> dict[str, Any]:
    """The buyer says they paid: ask the gateway now (a return page is never proof)."""
    _check_token(state, order_id, x_order_token or token)
    result: c.CheckPaymentResult = await order_client.run_update(state, order_id, c.CHECK_PAYMENT_UPDATE,
                                                                 result_type=c.CheckPaymentResult)
    return {"order_id": order_id, "status": result.status, "paid": result.paid}


@router.get("/orders/{order_id}/events")
async def order_events(order_id: str, request: Request, state: StateDep,
                       x_order_token: TokenHeader = None, token: str | None = None) -> StreamingResponse:
    """Server-Sent Events: one `status` event per change, until the order settles."""
    _check_token(state, order_id, x_order_token or token)
    async with state.sessionmaker() as session:
        await orders.get_order(session, order_id)

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
            if last in (c.DELIVERED, c.REFUNDED, c.REJECTED):
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
