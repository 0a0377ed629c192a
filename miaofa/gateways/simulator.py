"""Adapter for the local payment simulator (miaofa.simulator.app)."""

import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast, get_args
from urllib.parse import quote

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
    PaymentStatus,
    QueryChannel,
)
from miaofa.gateways.http import GatewayHttp
from miaofa.gateways.sim_protocol import (
    ACK_BODY,
    NACK_BODY,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TOLERANCE_SECONDS,
    make_signature,
)

REQUEST_TIMEOUT_SECONDS = 5.0
# "unknown" is our own verdict for a missing payment, never something the gateway asserts.
_GATEWAY_STATUSES = frozenset(get_args(PaymentStatus)) - {"unknown"}
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")


class SimulatorGateway:
    name = "simulator"
    query_channels: tuple[QueryChannel, ...] = ("primary", "backup")
    has_statement = True
    partial_refund = False
    query_proves_payment = True

    def __init__(
        self,
        base_url: str,
        merchant_id: str,
        secret: str,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.merchant_id = merchant_id
        self._base_url = base_url.rstrip("/")
        self._secret = secret
        self._http = GatewayHttp("simulator", client, REQUEST_TIMEOUT_SECONDS)
        self._clock = clock

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- merchant API ----

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        payload = {
            "merchant_id": self.merchant_id,
            "order_id": request.order_id,
            "amount_cents": request.amount_cents,
            "currency": request.currency,
            "subject": request.subject,
            "notify_url": request.notify_url,
            "expires_at": request.expires_at.isoformat(),
            **({"return_url": request.return_url} if request.return_url else {}),
        }
        response = await self._call("create", "POST", "/api/payments", json=payload)
        self._expect_ok("create", response)
        data = self._json("create", response)
        payment_id, pay_url = data.get("payment_id"), data.get("pay_url")
        if not isinstance(payment_id, str) or not payment_id or not isinstance(pay_url, str) or not pay_url:
            raise GatewayError("simulator create: malformed response")
        return CreatedPayment(payment_id=payment_id, pay_url=pay_url)

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState:
        if channel == "primary":
            if not payment_id:
                raise GatewayError("simulator query: primary channel needs a payment_id")
            response = await self._call("query", "GET", f"/api/payments/{quote(payment_id, safe='')}")
        else:
            response = await self._call("query", "GET", "/api/v2/trade/query", params={"order_id": order_id})
        if response.status_code == 404:
            return PaymentState(payment_id=payment_id, order_id=order_id, status="unknown", amount_cents=0, currency="")
        self._expect_ok("query", response)
        return self._state("query", response, payment_id, order_id)

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        response = await self._call("close", "POST", f"/api/payments/{quote(payment_id, safe='')}/close")
        self._expect_ok("close", response)
        return self._state("close", response, payment_id, order_id)

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState:
        response = await self._call(
            "refund",
            "POST",
            f"/api/payments/{quote(payment_id, safe='')}/refund",
            json={"refund_id": refund_id, "amount_cents": amount_cents},
        )
        self._expect_ok("refund", response)
        return self._state("refund", response, payment_id, order_id)

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        response = await self._call(
            "statement", "GET", "/api/statements", params={"start": start.isoformat(), "end": end.isoformat()}
        )
        self._expect_ok("statement", response)
        try:
            rows = response.json()
        except ValueError:
            raise GatewayError("simulator statement: response is not JSON") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise GatewayError("simulator statement: malformed response")
        states = []
        for row in rows:
            try:
                states.append(
                    PaymentState(
                        payment_id=_str(row, "payment_id"),
                        order_id=_str(row, "order_id"),
                        status=_status(row),
                        amount_cents=_cents(row),
                        currency=_currency(row),
                        paid_at=_when(row),
                    )
                )
            except ValueError as exc:
                raise GatewayError(f"simulator statement: malformed row ({exc})") from None
        return states

    # ---- notify ----

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        lowered = {key.lower(): value for key, value in headers.items()}
        raw_ts = lowered.get(TIMESTAMP_HEADER.lower())
        signature = lowered.get(SIGNATURE_HEADER.lower())
        if raw_ts is None or signature is None:
            raise InvalidNotify("missing signature headers")
        if not _TIMESTAMP_RE.fullmatch(raw_ts):
            raise InvalidNotify("malformed timestamp")
        if not _SIGNATURE_RE.fullmatch(signature):
            raise InvalidNotify("malformed signature")
        timestamp = int(raw_ts)
        # Signature first, over the raw bytes, so nothing unauthenticated is even parsed.
        expected = make_signature(self._secret, timestamp, body)
        if not hmac.compare_digest(expected, signature):
            raise InvalidNotify("bad signature")
        if abs(self._clock() - timestamp) > TOLERANCE_SECONDS:
            raise InvalidNotify("stale timestamp")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; [[[[… nests too deep
            raise InvalidNotify("body is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidNotify("body is not a JSON object")
        return self._notice(data)

    def ack(self) -> Ack:
        return Ack(200, ACK_BODY)

    def nack(self, reason: str) -> Ack:
        # The simulator only looks at "success" or not; the reason stays in our own logs.
        return Ack(400, NACK_BODY)

    # ---- helpers ----

    async def _call(self, op: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._secret}"}
        response = await self._http.request(op, method, self._base_url + path, headers=headers, **kwargs)
        if response.status_code >= 500:
            raise GatewayError(f"simulator {op}: HTTP {response.status_code}")
        return response

    def _expect_ok(self, op: str, response: httpx.Response) -> None:
        if response.status_code in (200, 201):
            return
        error = "error"
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                error = body["error"][:64]
        except ValueError:
            pass
        kind = (
            GatewayRefused
            if 400 <= response.status_code < 500 and response.status_code not in (401, 408, 429)
            else GatewayError
        )
        raise kind(f"simulator {op}: HTTP {response.status_code} {error}")

    def _json(self, op: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise GatewayError(f"simulator {op}: response is not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(f"simulator {op}: malformed response")
        return data

    def _state(self, op: str, response: httpx.Response, payment_id: str, order_id: str) -> PaymentState:
        data = self._json(op, response)
        try:
            state = PaymentState(
                payment_id=_str(data, "payment_id"),
                order_id=_str(data, "order_id"),
                status=_status(data),
                amount_cents=_cents(data),
                currency=_currency(data),
                paid_at=_when(data),
            )
        except ValueError as exc:
            raise GatewayError(f"simulator {op}: malformed response ({exc})") from None
        # An answer about some other payment is a gateway bug we must not act on.
        if (payment_id and state.payment_id != payment_id) or (order_id and state.order_id != order_id):
            raise GatewayError(f"simulator {op}: response is for another payment")
        return state

    def _notice(self, data: dict[str, Any]) -> Notice:
        try:
            notice = Notice(
                payment_id=_str(data, "payment_id"),
                order_id=_str(data, "order_id"),
                merchant_id=_str(data, "merchant_id"),
                status=_status(data),
                amount_cents=_cents(data),
                currency=_currency(data),
                paid_at=_when(data),
            )
        except ValueError as exc:
            raise InvalidNotify(str(exc)) from None
        # Whether the merchant is ours is judged with the rest (miaofa.payments.proof.judge).
        if notice.status in ("paid", "refunded") and notice.paid_at is None:
            raise InvalidNotify(f"{notice.status} without paid_at")
        return notice


# Field readers shared by query answers and notifies; each raises ValueError with a short reason.


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > 128 or not value.isprintable():
        raise ValueError(f"bad {key}")
    return value


def _status(data: Mapping[str, Any]) -> PaymentStatus:
    value = data.get("status")
    if value not in _GATEWAY_STATUSES:
        raise ValueError("bad status")
    return cast(PaymentStatus, value)


def _cents(data: Mapping[str, Any]) -> int:
    value = data.get("amount_cents")
    # type() rather than isinstance(): bool is an int subclass, and True is not one cent.
    if type(value) is not int or value <= 0:
        raise ValueError("bad amount_cents")
    return value


def _currency(data: Mapping[str, Any]) -> str:
    value = data.get("currency")
    if not isinstance(value, str) or not _CURRENCY_RE.fullmatch(value):
        raise ValueError("bad currency")
    return value


def _when(data: Mapping[str, Any]) -> datetime | None:
    value = data.get("paid_at")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("bad paid_at")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("bad paid_at") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
