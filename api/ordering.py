"""The order's front door: one service that POST /orders and the checkout form (POST /buy) both call.

`OrderDesk.place` runs the order path once: the risk rules, cheapest first (miaofa/risk/chain.py),
the stock hint, the coupon, the workflow's reservation, and the Idempotency-Key replay. It returns
`Placed` (opened, held for review, or replayed) or raises one error family, miaofa.errors, for every
refusal: a denial or rate limit of the rules, sold out, an invalid coupon or order, the gateway or
Temporal unavailable. Each door renders these its own way (JSON, or a page).
"""

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Request

from api import http_metrics, order_client
from api.client_ip import ruled_ip
from api.schemas import OrderCreate, plain
from api.state import State
from api.stock_hint import ProductInfo
from miaofa import contract as c
from miaofa import coupons, errors, lang, orders
from miaofa.errors import (
    Conflict,
    InvalidInput,
    MerchantSuspended,
    MiaofaError,
    NotFound,
    OrderTimeout,
    SoldOut,
    Unavailable,
)
from miaofa.risk import admission

log = logging.getLogger("miaofa.api.shop")

Outcome = Literal["opened", "in_review", "replayed"]
MAX_KEY_GENERATIONS = 5  # orders one Idempotency-Key may open after gateway outages (then it replays the last)
STATUS_CODES: dict[Outcome, int] = {"opened": 201, "in_review": 202, "replayed": 200}


@dataclass(frozen=True)
class Asker:
    """Who places the order, as the edge saw them."""

    ip: str | None  # None: an exempt network (a load generator): no risk rules, no caps
    device: str | None = None
    accept_language: str | None = None

    @classmethod
    def of(cls, request: Request, state: State, device: str | None = None) -> "Asker":
        return cls(ruled_ip(request, state.settings), device, request.headers.get("accept-language"))


@dataclass(frozen=True)
class Placed:
    """An order that exists: opened (201), held for review (202), or an Idempotency-Key replay (200)."""

    outcome: Outcome
    order_id: str
    access_token: str | None  # None on a replay: email + key are no proof of being the buyer
    status: str
    amount_cents: int
    currency: str
    expires_at: datetime
    payment: c.PaymentLink | None  # None: free, held for review, or still opening

    @property
    def status_code(self) -> int:
        return STATUS_CODES[self.outcome]


@contextmanager
def _denials() -> Iterator[None]:
    """A deny of the rule chain: counted and logged by rule and code (never the email or address)."""
    try:
        yield
    except MiaofaError as exc:
        http_metrics.ORDERS.labels(exc.error).inc()
        log.info("order denied by risk rule %s: %s", getattr(exc, "risk_rule", "?"), exc.error)
        raise


def _key_reused() -> Conflict:
    # 409: the request is well formed; it conflicts with the order this key already made.
    return Conflict(
        "this Idempotency-Key was used for another order (different product or quantity)",
        error="idempotency_key_reused",
    )


class OrderDesk:
    def __init__(self, state: State) -> None:
        self.settings, self.vault, self.sessionmaker = state.settings, state.vault, state.sessionmaker
        self.hot, self.chain, self.gateways = state.hot, state.chain, state.gateways
        self._state = state  # for the workflow client (order_client)
        self._gate = state.gate

    async def place(self, body: OrderCreate, asker: Asker, idempotency_key: str | None = None) -> Placed:
        """Place an order, timed by its answer: a sold-out answer's own cost, apart from the time a
        request queues for the event loop (which miaofa_http_request_seconds includes)."""
        started, status = time.perf_counter(), 500
        try:
            async with self._gate.ticket():  # the place enter() takes below goes back however this ends
                placed = await self._place(body, asker, idempotency_key)
            status = placed.status_code
            return placed
        except MiaofaError as exc:
            status = exc.status_code
            raise
        finally:
            http_metrics.ORDER_ANSWER.labels(str(status)).observe(time.perf_counter() - started)

    async def _place(self, body: OrderCreate, asker: Asker, key: str | None) -> Placed:
        if key is not None:
            plain("Idempotency-Key", key)
        if asker.device is not None:
            plain("X-Device-Id", asker.device)
        buyer_hash = self.vault.buyer_hash(body.email)
        attempt = self.chain.attempt(
            email=body.email, buyer_hash=buyer_hash, ip=asker.ip, device=asker.device, quantity=body.quantity
        )
        with _denials():
            screened = self.chain.screen(attempt)  # memory only: a flood is refused without a database round trip
        shop = await self._state.shops.shop(body.merchant)
        if shop is None:
            raise NotFound(f"no shop {body.merchant!r}", error="unknown_merchant")
        if not shop.open:  # its open orders finish; it takes no new ones
            raise MerchantSuspended("this shop is not taking orders right now")
        with _denials():
            screened = self.chain.screen_shop(attempt, shop.risk, screened)
        product = await self.hot.product(body.sku, shop.merchant_id)
        if product is None or not product.active:
            raise NotFound(f"no product with sku {body.sku!r}", error="unknown_product")
        if shop.settlement == "direct":  # only the gateways the merchant brought its own account for
            if await self._state.book.for_account(body.gateway, shop.merchant_id) is None:
                raise NotFound(f"this shop takes no payments by {body.gateway!r}", error="unknown_gateway")
        elif body.gateway not in self.gateways:  # a well-formed name that is not configured: not found
            raise NotFound(
                f"unknown gateway {body.gateway!r}; use one of {', '.join(self.gateways)}", error="unknown_gateway"
            )
        order_id = uuid.uuid4().hex[:20]
        if key:  # a retried key must reach its order, so it skips the stock hint
            order_id, replayed = await self._replayed(body, key, product.merchant_id)
            if replayed is not None:
                http_metrics.ORDERS.labels("replayed").inc()
                return replayed
        elif not self.hot.has_stock(product.id, body.quantity):  # answered from memory
            raise self._sold_out("sold_out_hint")
        await self._gate.enter(order_id, attempt)  # past capacity: 503 busy at once; then the shared rates
        if body.coupon_code:
            async with self.sessionmaker() as session:
                await coupons.check_usable(
                    session, body.coupon_code, datetime.now(UTC), product.currency, product.merchant_id
                )
        attempt.order_id, attempt.product_id, attempt.currency = order_id, product.id, product.currency
        attempt.amount_cents = product.price_cents * body.quantity
        with _denials():  # open-order caps and anomalies, in PostgreSQL; a deny rolls its admission back
            decision = await self.chain.judge(self.sessionmaker, attempt, screened, shop=shop.risk)
        order = self.order_input(
            product,
            body,
            order_id,
            buyer_hash,
            decision.contract(attempt.device_hash),
            lang.pick(body.lang, asker.accept_language),
        )  # the language is stored with it
        if not key and not self.hot.claim(order_id, product.id, body.quantity):
            if decision.admitted:
                await self._forget(order_id)
            raise self._sold_out("sold_out_hint")
        reserved = False
        try:
            opened = await order_client.open_order(self._state, order, product.merchant_id)
            reserved = opened is not None and opened.outcome == c.OPENED
        finally:  # however the request ends (answer, timeout, error, cancelled): the claim goes back
            if not key:
                self.hot.settle(order_id, reserved)
        if decision.admitted and opened is not None and opened.outcome != c.OPENED:
            await self._forget(order_id)  # nothing is held: it must not count against the buyer
        http_metrics.ORDERS.labels(opened.outcome if opened else "replayed").inc()
        if reserved:
            http_metrics.shop_order_opened(product.merchant_id)
        if opened is None:  # its workflow has closed: the order is as the database has it
            return await self._existing(order_id)
        return self._answer(order_id, opened, body, product)

    def _answer(self, order_id: str, opened: c.OpenOrderResult, body: OrderCreate, product: ProductInfo) -> Placed:
        """The workflow's reservation outcome: the truth about stock, coupon and gateway."""
        if opened.outcome == c.SOLD_OUT:
            self.hot.sold_out(product.id)
            raise self._sold_out()
        if opened.outcome in (c.COUPON_INVALID, c.INVALID_ORDER):
            raise errors.from_code(opened.error, opened.detail or "the order cannot be made", InvalidInput)
        if opened.outcome == c.GATEWAY_UNAVAILABLE:
            raise Unavailable(opened.detail, error="gateway_unavailable")
        if (opened.sku, opened.quantity) != (body.sku, body.quantity):
            raise _key_reused()
        assert opened.expires_at is not None
        return Placed(
            "in_review" if opened.status == c.IN_REVIEW else "opened",
            order_id,
            self.vault.order_token(order_id),
            opened.status,
            opened.amount_cents,
            opened.currency,
            opened.expires_at,
            opened.payment,
        )

    @staticmethod
    def _sold_out(counted_as: str | None = None) -> SoldOut:
        """Every sold-out answer: the stock hint's, before or after the rules, and the reservation's."""
        if counted_as is not None:  # the reservation's outcome is counted with the others
            http_metrics.ORDERS.labels(counted_as).inc()
        return SoldOut("this product is sold out")

    async def _forget(self, order_id: str) -> None:
        async with self.sessionmaker.begin() as session:
            await admission.forget(session, order_id)

    def order_input(
        self,
        product: ProductInfo,
        body: OrderCreate,
        order_id: str,
        buyer_hash: str,
        decision: c.RiskDecision | None = None,
        buyer_lang: str | None = None,
    ) -> c.OrderInput:
        """The order workflow's input."""
        settings = self.settings
        return c.OrderInput(
            order_id=order_id,
            product_id=product.id,
            sku=product.sku,
            product_name=product.name,
            unit_price_cents=product.price_cents,
            currency=product.currency,
            quantity=body.quantity,
            email=body.email,
            buyer_hash=buyer_hash,
            gateway=body.gateway,
            delivery_sla_seconds=product.delivery_sla_seconds,
            coupon_code=body.coupon_code,
            risk=decision,
            lang=buyer_lang,
            timing=c.Timing(
                payment_window_seconds=settings.payment_window_seconds,
                callback_grace_seconds=settings.callback_grace_seconds,
                poll_interval_seconds=settings.poll_interval_seconds,
                late_payment_watch_seconds=settings.late_payment_watch_seconds,
                late_poll_interval_seconds=settings.late_poll_interval_seconds,
                support_window_seconds=settings.support_window_seconds,
                review_window_seconds=settings.review_window_seconds,
                payment_create_seconds=settings.payment_create_retry_seconds,
            ),
        )

    # ---- replays ---------------------------------------------------------------------------------

    async def _view(self, order_id: str) -> dict[str, Any] | None:
        async with self.sessionmaker() as session:
            try:
                return await orders.order_view(session, self.vault, order_id, with_keys=False)
            except NotFound:
                return None

    async def _replayed(self, body: OrderCreate, key: str, merchant_id: str) -> tuple[str, Placed | None]:
        """The Idempotency-Key's order id, and the answer when that order exists already (None when
        it does not, yet). An order the gateway could not open (cancelled, gateway_unavailable) took
        no money and holds nothing: the key's retry opens the next one, under the next generation's id."""
        generation = 0
        while True:
            order_id = self.vault.idempotent_order_id(body.email, key, generation)
            view = await self._view(order_id)
            if view is None:
                return order_id, None
            if (view["merchant_id"], view["sku"], view["quantity"]) != (merchant_id, body.sku, body.quantity):
                raise _key_reused()
            generation += 1
            if not _gateway_gave_up(view) or generation == MAX_KEY_GENERATIONS:
                return order_id, _replay(order_id, view)

    async def _existing(self, order_id: str) -> Placed:
        view = await self._view(order_id)
        if view is None:  # the workflow closed without keeping a row: its reservation found no stock
            raise self._sold_out()
        return _replay(order_id, view)


def _gateway_gave_up(view: dict[str, Any]) -> bool:
    """Cancelled because its payment could not be created (the release says why on the timeline)."""
    return view["status"] == c.CANCELLED and any(
        event["stage"] == c.CANCELLED and event.get("detail", {}).get("reason") == c.GATEWAY_UNAVAILABLE
        for event in view["timeline"]
    )


def _replay(order_id: str, view: dict[str, Any]) -> Placed:
    # Email + Idempotency-Key are not proof of being the buyer: no access token here. The buyer has
    # it from the first answer, from the gateway's return link after paying, and in the email.
    if view["payment"] is None and view["status"] == c.AWAITING_PAYMENT and view["amount_cents"] > 0:
        raise OrderTimeout("the order is still opening; try again with the same Idempotency-Key")
    payment = view["payment"]
    return Placed(
        "replayed",
        order_id,
        None,
        view["status"],
        view["amount_cents"],
        view["currency"],
        view["expires_at"],
        None if payment is None else c.PaymentLink(**payment),
    )
