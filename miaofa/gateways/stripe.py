"""Adapter for Stripe Checkout: hosted Checkout Sessions, webhooks signed with the endpoint's whsec_ secret.

Speaks the HTTP API by hand (form-encoded POSTs, Bearer key): the `stripe` package is a test-only
dependency, and inside this module `import stripe` would import it, so it never appears here.
"""

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from miaofa.gateways.base import (
    Ack,
    CreatedPayment,
    GatewayError,
    GatewayRefused,
    InvalidNotify,
    Notice,
    PaymentRequest,
    PaymentState,
    QueryChannel,
    Unsupported,
)
from miaofa.gateways.bills import states
from miaofa.gateways.config import StripeSettings
from miaofa.gateways.http import GatewayHttp
from miaofa.gateways.stripe_bill import bill_lines
from miaofa.gateways.stripe_wire import (
    ERROR_WORD_RE,
    ID_RE,
    SIGNATURE_HEADER,
    amount_field,
    check_signature,
    currency_field,
    event_json,
    notice_of,
    order_of,
    path_id,
    session_status,
    stripe_id,
)

log = logging.getLogger("miaofa.gateways.stripe")
REQUEST_TIMEOUT_SECONDS = 10.0
# Stripe accepts expires_at 30 min … 24 h after creation. The value must also be the same on every
# retry of the create (a replayed Idempotency-Key with other parameters is refused), so it is derived
# from our window's end only, never from "now": close() expires the session when our window ends.
SESSION_EXPIRY_MARGIN = timedelta(minutes=31)
SESSION_MAX_LIFETIME = timedelta(hours=23, minutes=59)


class _Missing(GatewayRefused):
    """Stripe answered 404 (resource_missing)."""


class StripeGateway:
    name = "stripe"
    query_channels: tuple[QueryChannel, ...] = ("primary",)
    has_statement = True
    partial_refund = True
    query_proves_payment = True
    # Stripe events carry no merchant id: the webhook secret authenticates the account, so every
    # Notice says merchant_id None ("already checked") and judge skips the comparison.
    merchant_id = ""

    def __init__(
        self, settings: StripeSettings, client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret_key = settings.secret_key.get_secret_value()
        self._webhook_secret = settings.webhook_secret.get_secret_value().encode()
        self._base_url = settings.api_base.rstrip("/")
        self._tolerance = settings.tolerance_seconds
        # Events say which mode they come from; a live key must never take a test payment, nor the reverse.
        self._livemode = self._secret_key.startswith(("sk_live_", "rk_live_"))
        self._http = GatewayHttp("stripe", client, REQUEST_TIMEOUT_SECONDS)
        self._clock = clock

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- merchant API ----

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        expires_at = request.expires_at + SESSION_EXPIRY_MARGIN
        latest = datetime.fromtimestamp(self._clock(), UTC) + SESSION_MAX_LIFETIME
        form = {
            "mode": "payment",
            "line_items[0][price_data][currency]": request.currency.lower(),
            "line_items[0][price_data][unit_amount]": str(request.amount_cents),  # the order's total
            "line_items[0][price_data][product_data][name]": request.subject,
            "line_items[0][quantity]": "1",
            "client_reference_id": request.order_id,
            "metadata[order_id]": request.order_id,
            # Copied onto the charge when the payment is confirmed, so charge.refunded names the order.
            "payment_intent_data[metadata][order_id]": request.order_id,
            "expires_at": str(int(min(expires_at, latest).timestamp())),
        }
        if request.return_url:
            form["success_url"] = form["cancel_url"] = request.return_url
        response = await self._call(
            "create", "POST", "/v1/checkout/sessions", data=form, idempotency_key=request.order_id
        )
        session = self._json("create", response)
        state = self._state("create", session, "", request.order_id)
        url = session.get("url")
        if not isinstance(url, str) or not url.startswith("https://") or len(url) > 2048:
            raise GatewayError("stripe create: malformed response (url)")
        return CreatedPayment(payment_id=state.payment_id, pay_url=url)

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState:
        if channel != "primary":
            raise Unsupported("stripe has no backup query host")
        session = await self._session("query", payment_id)
        if session is None:
            return PaymentState(payment_id=payment_id, order_id=order_id, status="unknown", amount_cents=0, currency="")
        return self._state("query", session, payment_id, order_id)

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        try:
            response = await self._call("close", "POST", f"/v1/checkout/sessions/{path_id(payment_id)}/expire")
        except GatewayRefused:
            # Only an open session can be expired: this one was completed (paid) or expired meanwhile.
            state = await self.query(payment_id, order_id)
            if state.status == "pending":
                raise GatewayError("stripe close: refused, yet the session is still open") from None
            return state
        return self._state("close", self._json("close", response), payment_id, order_id)

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState:
        session = await self._session("refund", payment_id)
        if session is None:
            raise GatewayRefused("stripe refund: no such session")
        state = self._state("refund", session, payment_id, order_id)
        intent = session.get("payment_intent")
        if state.status != "paid" or not isinstance(intent, str) or not ID_RE.fullmatch(intent):
            raise GatewayRefused("stripe refund: the session has no paid payment")
        form = {"payment_intent": intent, "amount": str(amount_cents), "metadata[order_id]": state.order_id}
        response = await self._call("refund", "POST", "/v1/refunds", data=form, idempotency_key=refund_id)
        refund = self._json("refund", response)
        status = refund.get("status")
        if status in ("failed", "canceled"):
            raise GatewayRefused(f"stripe refund: {status}")
        if status not in ("pending", "succeeded", "requires_action"):
            raise GatewayError("stripe refund: malformed response (status)")
        try:
            amount, currency = amount_field(refund.get("amount")), currency_field(refund.get("currency"))
        except ValueError as exc:
            raise GatewayError(f"stripe refund: malformed response ({exc})") from None
        return PaymentState(
            payment_id=state.payment_id,
            order_id=state.order_id,
            status="refunded",
            amount_cents=amount,
            currency=currency,
            paid_at=state.paid_at,
        )

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        async def get(op: str, method: str, path: str, params: dict[str, str]) -> httpx.Response:
            return await self.send(op, method, path, params=params)

        lines, foreign = await bill_lines(get, start, end)
        if foreign:
            log.info("stripe statement: %d charges of no Checkout Session of ours left out", foreign)
        return states(lines, start, end)

    # ---- webhook ----

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        lowered = {key.lower(): value for key, value in headers.items()}
        # Signature first, over the raw bytes: nothing unauthenticated is parsed.
        check_signature(lowered.get(SIGNATURE_HEADER), body, self._webhook_secret, self._tolerance, self._clock)
        event = event_json(body)
        try:
            return notice_of(event, self._livemode)
        except ValueError as exc:
            raise InvalidNotify(str(exc)) from None

    def ack(self) -> Ack:
        return Ack(200, '{"received": true}', "application/json")

    def nack(self, reason: str) -> Ack:
        # Stripe only looks at the status code; the reason stays in our own logs.
        return Ack(400, '{"received": false}', "application/json")

    # ---- helpers ----

    async def _session(self, op: str, payment_id: str) -> dict[str, Any] | None:
        if not ID_RE.fullmatch(payment_id or ""):
            raise GatewayRefused(f"stripe {op}: not a session id")
        try:
            response = await self._call(op, "GET", f"/v1/checkout/sessions/{path_id(payment_id)}")
        except _Missing:
            return None
        return self._json(op, response)

    async def send(
        self,
        op: str,
        method: str,
        path: str,
        data: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One authenticated call and Stripe's answer as it is (the payout rail reads its error codes
        itself); GatewayError only for a transport failure."""
        headers = {"Authorization": f"Bearer {self._secret_key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await self._http.request(op, method, self._base_url + path, headers=headers, data=data, params=params)

    async def _call(
        self, op: str, method: str, path: str, data: dict[str, str] | None = None, idempotency_key: str | None = None
    ) -> httpx.Response:
        response = await self.send(op, method, path, data, idempotency_key)
        if response.status_code < 300:
            return response
        # Stripe's own message may quote part of the key ("sk_test_****abcd"): keep only type and code.
        words = [f"HTTP {response.status_code}"]
        try:
            error = response.json().get("error")
            words += [
                error[k]
                for k in ("type", "code")
                if isinstance(error.get(k), str) and ERROR_WORD_RE.fullmatch(error[k])
            ]
        except (ValueError, AttributeError):
            pass
        message = f"stripe {op}: {' '.join(words)}"
        # 401 (key rolled), 409 (the same Idempotency-Key still in flight) and 429 pass with time.
        if response.status_code == 404:
            raise _Missing(message)
        if 400 <= response.status_code < 500 and response.status_code not in (401, 409, 429):
            raise GatewayRefused(message)
        raise GatewayError(message)

    def _json(self, op: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise GatewayError(f"stripe {op}: response is not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(f"stripe {op}: malformed response")
        return data

    def _state(self, op: str, session: dict[str, Any], payment_id: str, order_id: str) -> PaymentState:
        try:
            if session.get("object") != "checkout.session":
                raise ValueError("not a checkout session")
            state = PaymentState(
                payment_id=stripe_id(session.get("id"), "id"),
                order_id=order_of(session),
                status=session_status(session),
                amount_cents=amount_field(session.get("amount_total")),
                currency=currency_field(session.get("currency")),
            )
        except ValueError as exc:
            raise GatewayError(f"stripe {op}: malformed response ({exc})") from None
        # An answer about another payment or order is a bug we must not act on.
        if (payment_id and state.payment_id != payment_id) or (order_id and state.order_id != order_id):
            raise GatewayError(f"stripe {op}: response is for another payment")
        return state


def build(settings: StripeSettings, client: httpx.AsyncClient | None) -> StripeGateway:
    return StripeGateway(settings, client)
