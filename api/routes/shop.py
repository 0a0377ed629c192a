"""The buyer's JSON API: products, orders, "I have paid". Live order events: api/routes/order_events.py.

Every text a buyer sends is checked at the edge (api/schemas.py: no control characters, one email
address); the order path itself is api/ordering.py, which the checkout form calls too.
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api import order_client
from api.deps import DeskDep, SessionDep, StateDep
from api.ordering import Asker, Placed
from api.schemas import OrderCreate, OrderId, OrderInReview, OrderOpened, OrderReplayed
from api.state import State
from miaofa import contract as c
from miaofa import orders
from miaofa.errors import NotFound, OrderNotFound, TooManyRequests
from miaofa.text import plain_pattern

router = APIRouter(tags=["shop"])
ANSWERS: dict[int, type[OrderOpened | OrderInReview | OrderReplayed]] = {
    201: OrderOpened,
    202: OrderInReview,
    200: OrderReplayed,
}


@router.get("/products")
async def list_products(
    state: StateDep,
    merchant: Annotated[
        str | None,
        Query(min_length=2, max_length=32, pattern=r"^[a-z0-9][a-z0-9-]{1,31}$", description="a shop's slug"),
    ] = None,
) -> list[dict[str, Any]]:
    """A shop's catalog (absent: the default shop) with what is in stock now, from the stock hint
    (refreshed every second)."""
    shop = await state.shops.shop(merchant)
    if shop is None:
        raise NotFound(f"no shop {merchant!r}", error="unknown_merchant")
    return [
        {
            "sku": p.sku,
            "name": p.name,
            "price_cents": p.price_cents,
            "currency": p.currency,
            "delivery_sla_seconds": p.delivery_sla_seconds,
            "available": state.hot.available(p.id),
        }
        for p in state.hot.products(shop.merchant_id)
    ]


def answer(placed: Placed) -> JSONResponse:
    model = ANSWERS[placed.status_code]
    payment = (
        None
        if placed.payment is None
        else {
            "gateway": placed.payment.gateway,
            "payment_id": placed.payment.payment_id,
            "pay_url": placed.payment.pay_url,
        }
    )
    body = model.model_validate(
        {
            "order_id": placed.order_id,
            "access_token": placed.access_token,
            "status": placed.status,
            "amount_cents": placed.amount_cents,
            "currency": placed.currency,
            "expires_at": placed.expires_at,
            "payment": payment,
        }
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=placed.status_code)


@router.post(
    "/orders",
    status_code=201,
    responses={
        200: {
            "model": OrderReplayed,
            "description": "an Idempotency-Key replay: the same order, without its access token",
        },
        201: {"model": OrderOpened, "description": "stock reserved: pay at `payment.pay_url`"},
        202: {
            "model": OrderInReview,
            "description": "held for review: watch the order page; payment comes on approval",
        },
        403: {
            "description": "refused by a risk rule: email_blocked, network_blocked, device_blocked, quantity_limit, "
            "too_many_open_orders, order_refused"
        },
    },
)
async def create_order(
    body: OrderCreate,
    request: Request,
    state: StateDep,
    desk: DeskDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=16,
            max_length=200,
            description="a random value (e.g. a UUID), 16+ characters; the same email and key are the same order",
            json_schema_extra={"pattern": plain_pattern()},
        ),
    ] = None,
    x_device_id: Annotated[
        str | None,
        Header(
            alias="X-Device-Id",
            min_length=1,
            max_length=128,
            description="the buyer's device id, if the storefront has one (risk rules)",
            json_schema_extra={"pattern": plain_pattern()},
        ),
    ] = None,
) -> JSONResponse:
    """Reserve stock and create the payment in one round trip: 201 with the pay link, or 409 sold_out.

    The risk rules run first, cheapest first (miaofa/risk/chain.py): blocklists, quantity and rates
    in memory, then sold-out (the stock hint), then the open-order caps and the anomaly rules
    (PostgreSQL). A refusal reserves nothing. An order the rules hold for review answers 202,
    status `in_review`, without a payment. A replayed Idempotency-Key answers 200 with the order's
    state and payment link, without its access token (README, "Idempotency-Key").
    """
    return answer(await desk.place(body, Asker.of(request, state, x_device_id), idempotency_key))


def check_token(state: State, order_id: str, token: str | None) -> None:
    # Unknown order and wrong token answer alike, so order ids cannot be probed.
    if not token or not state.vault.check_order_token(order_id, token):
        raise OrderNotFound("no such order")


TokenHeader = Annotated[str | None, Header(alias="X-Order-Token")]


@router.get("/orders/{order_id}")
async def read_order(
    order_id: OrderId, state: StateDep, session: SessionDep, x_order_token: TokenHeader = None, token: str | None = None
) -> JSONResponse:
    """The order's status, timeline, coupon, and its keys once delivered.

    The token comes in the X-Order-Token header, or as `?token=` in the link the buyer was sent."""
    check_token(state, order_id, x_order_token or token)
    view = await orders.order_view(session, state.vault, order_id)
    return JSONResponse(jsonable_encoder(view), headers={"Cache-Control": "no-store"})


@router.post("/orders/{order_id}/check-payment")
async def check_payment(
    order_id: OrderId, state: StateDep, x_order_token: TokenHeader = None, token: str | None = None
) -> dict[str, Any]:
    """The buyer says they paid: ask the gateway now (a return page is never proof).

    At most once per CHECK_PAYMENT_INTERVAL_SECONDS per order (429 with Retry-After otherwise), so
    a script cannot grow the order's history or hammer the gateway."""
    check_token(state, order_id, x_order_token or token)
    if wait := state.guards.check_payment.take(order_id, time.monotonic()):
        raise TooManyRequests(
            f"the gateway was just asked about this order; ask again in {int(wait + 0.999)} s", retry_after=wait
        )
    result: c.CheckPaymentResult = await order_client.run_update(
        state, order_id, c.CHECK_PAYMENT_UPDATE, result_type=c.CheckPaymentResult
    )
    return {"order_id": order_id, "status": result.status, "paid": result.paid}
