"""A local Stripe: Checkout Sessions, PaymentIntents and Refunds over its real wire protocol
(Bearer key, form-encoded POSTs, Idempotency-Key, `{"error": {...}}` answers), and signed webhooks.

The test drives it: `pay()` completes a session and sends `checkout.session.completed` to
`webhook_url` (as the endpoint configured in Stripe's dashboard would be), or drops it; `deliver()`
sends any event, signed by default with the endpoint's secret.
"""

import copy
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MIN_EXPIRY, MAX_EXPIRY = 30 * 60, 24 * 3600


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def _error(status: int, kind: str, message: str, code: str | None = None) -> JSONResponse:
    error = {"type": kind, "message": message, **({"code": code} if code else {})}
    return JSONResponse({"error": error}, status_code=status)


class FakeStripe:
    def __init__(
        self, secret_key: str, webhook_secret: str, livemode: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.livemode = livemode
        self.clock = clock
        self.api_base = ""  # where the fake is served, set by the test
        self.webhook_url: str | None = None  # the shop's endpoint, as configured in Stripe's dashboard
        self.sessions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str | None]] = []  # method, path, Idempotency-Key
        self.deliveries: list[tuple[str, int]] = []  # event type, the shop's answer
        self.fail_next: list[tuple[int, str]] = []  # (HTTP status, error type) for the next API calls
        self._idempotent: dict[tuple[str, str], tuple[dict[str, str], int, dict[str, Any]]] = {}
        self._intent_metadata: dict[str, dict[str, str]] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/checkout/sessions", self._create_session, methods=["POST"]),
                Route("/v1/checkout/sessions/{id}", self._get_session, methods=["GET"]),
                Route("/v1/checkout/sessions/{id}/expire", self._expire_session, methods=["POST"]),
                Route("/v1/payment_intents/{id}", self._get_intent, methods=["GET"]),
                Route("/v1/refunds", self._create_refund, methods=["POST"]),
            ]
        )

    # ---- test controls ----

    async def pay(self, session_id: str, deliver: bool = True, duplicate: bool = False) -> dict[str, Any]:
        """The buyer pays: the session completes and its completed event goes out (twice, or not at all)."""
        session = self.sessions[session_id]
        assert session["status"] == "open", session["status"]
        intent_id, charge_id = _new_id("pi"), _new_id("ch")
        amount, currency = session["amount_total"], session["currency"]
        metadata = self._intent_metadata.get(session_id, {})
        self.intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            "status": "succeeded",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "latest_charge": charge_id,
            "metadata": dict(metadata),
            "created": int(self.clock()),
            "livemode": self.livemode,
        }
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "currency": currency,
            "payment_intent": intent_id,
            "paid": True,
            "refunded": False,
            "status": "succeeded",
            "metadata": dict(metadata),
            "created": int(self.clock()),
            "livemode": self.livemode,
        }
        session.update(status="complete", payment_status="paid", payment_intent=intent_id)
        event = self.event("checkout.session.completed", session)
        if deliver:
            for _ in range(2 if duplicate else 1):
                await self.deliver(event)
        return event

    def event(self, kind: str, obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
        return {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": "2025-08-27.basil",
            "created": int(self.clock()),
            "livemode": self.livemode,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
            "data": {"object": copy.deepcopy(obj)},
            **changes,
        }

    def charge_of(self, session_id: str) -> dict[str, Any]:
        return self.charges[self.intents[self.sessions[session_id]["payment_intent"]]["latest_charge"]]

    @staticmethod
    def body(event: Any) -> bytes:
        return json.dumps(event, indent=2).encode()  # pretty-printed, as Stripe sends it

    def sign(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        timestamp = int(self.clock()) if timestamp is None else timestamp
        key = (self.webhook_secret if secret is None else secret).encode()
        signature = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={signature}"

    async def deliver(self, event: dict[str, Any]) -> httpx.Response:
        assert self.webhook_url, "set webhook_url first"
        body = self.body(event)
        headers = {
            "Stripe-Signature": self.sign(body),
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(self.webhook_url, content=body, headers=headers)
        self.deliveries.append((event["type"], response.status_code))
        return response

    # ---- the API ----

    async def _guard(self, request: Request) -> JSONResponse | None:
        key = request.headers.get("idempotency-key")
        self.calls.append((request.method, request.url.path, key))
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided: sk_test_****" + "x" * 4)
        if self.fail_next:
            status, kind = self.fail_next.pop(0)
            return _error(status, kind, "injected failure")
        return None

    async def _idempotently(
        self, request: Request, handle: Callable[[dict[str, str]], tuple[int, Any]]
    ) -> JSONResponse:
        if (refused := await self._guard(request)) is not None:
            return refused
        params = dict((await request.form()).multi_items())
        key = request.headers.get("idempotency-key")
        if key is not None:
            seen = self._idempotent.get((request.url.path, key))
            if seen is not None:
                if seen[0] != params:
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used "
                        "with the same parameters they were first used with.",
                    )
                return JSONResponse(seen[2], status_code=seen[1], headers={"Idempotent-Replayed": "true"})
        status, answer = handle(params)
        if isinstance(answer, JSONResponse):
            return answer  # errors are not saved: a corrected retry may pass
        if key is not None:
            self._idempotent[(request.url.path, key)] = (params, status, answer)
        return JSONResponse(answer, status_code=status)

    async def _create_session(self, request: Request) -> JSONResponse:
        return await self._idempotently(request, self._new_session)

    def _new_session(self, form: dict[str, str]) -> tuple[int, Any]:
        now = int(self.clock())
        currency = form.get("line_items[0][price_data][currency]", "")
        amount = form.get("line_items[0][price_data][unit_amount]", "")
        expires_at = form.get("expires_at", str(now + MAX_EXPIRY))
        if (
            form.get("mode") != "payment"
            or not re.fullmatch(r"[a-z]{3}", currency)
            or not re.fullmatch(r"[1-9][0-9]{0,7}", amount)
            or form.get("line_items[0][quantity]") != "1"
            or not form.get("line_items[0][price_data][product_data][name]")
        ):
            return 400, _error(400, "invalid_request_error", "Invalid line_items or mode.", "parameter_invalid")
        if not expires_at.isdigit() or not now + MIN_EXPIRY <= int(expires_at) <= now + MAX_EXPIRY:
            return 400, _error(
                400,
                "invalid_request_error",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                "parameter_invalid_integer",
            )
        session_id = f"cs_test_{secrets.token_hex(16)}"
        order_id = form.get("client_reference_id")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": int(amount),
            "amount_subtotal": int(amount),
            "currency": currency,
            "client_reference_id": order_id,
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "payment_intent": None,
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "expires_at": int(expires_at),
            "created": now,
            "livemode": self.livemode,
        }
        self.sessions[session_id] = session
        prefix = "payment_intent_data[metadata]["
        self._intent_metadata[session_id] = {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix)}
        return 200, session

    async def _get_session(self, request: Request) -> JSONResponse:
        if (refused := await self._guard(request)) is not None:
            return refused
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            return _error(404, "invalid_request_error", "No such checkout.session", "resource_missing")
        return JSONResponse(session)

    async def _expire_session(self, request: Request) -> JSONResponse:
        if (refused := await self._guard(request)) is not None:
            return refused
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            return _error(404, "invalid_request_error", "No such checkout.session", "resource_missing")
        if session["status"] != "open":
            return _error(
                400, "invalid_request_error", 'Only Checkout Sessions with a status in ["open"] can be expired.'
            )
        session["status"] = "expired"
        return JSONResponse(session)

    async def _get_intent(self, request: Request) -> JSONResponse:
        if (refused := await self._guard(request)) is not None:
            return refused
        intent = self.intents.get(request.path_params["id"])
        if intent is None:
            return _error(404, "invalid_request_error", "No such payment_intent", "resource_missing")
        return JSONResponse(intent)

    async def _create_refund(self, request: Request) -> JSONResponse:
        return await self._idempotently(request, self._new_refund)

    def _new_refund(self, form: dict[str, str]) -> tuple[int, Any]:
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None:
            return 404, _error(404, "invalid_request_error", "No such payment_intent", "resource_missing")
        charge = self.charges[intent["latest_charge"]]
        left = charge["amount"] - charge["amount_refunded"]
        amount = int(form.get("amount", left))
        if not 0 < amount <= left:
            return 400, _error(
                400,
                "invalid_request_error",
                "Refund amount is greater than unrefunded amount",
                "amount_too_large" if amount > 0 else "parameter_invalid_integer",
            )
        refund_id = _new_id("re")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "currency": charge["currency"],
            "payment_intent": intent["id"],
            "charge": charge["id"],
            "status": "succeeded",
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "created": int(self.clock()),
        }
        self.refunds[refund_id] = refund
        return 200, refund
