"""Adapter for epusdt (assimon/epusdt; BEpusdt's extra status 1 and 3 callbacks too), MD5-signed JSON.

Only a signed status-2 callback proves a payment. The one query epusdt offers, /pay/check-status,
is unauthenticated, so it can say "not paid yet" but never "paid". USDT cannot be taken back by
an API: closes and refunds are Unsupported, and a refund is a person's job.
"""

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard
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
    Unsupported,
)
from miaofa.gateways.config import EpusdtSettings
from miaofa.gateways.http import GatewayHttp
from miaofa.gateways.md5_sign import md5_matches, md5_sign
from miaofa.gateways.money import MoneyError, to_major, to_minor

log = logging.getLogger("miaofa.gateways.epusdt")
REQUEST_TIMEOUT_SECONDS = 5.0
CURRENCY = "CNY"  # epusdt takes the order amount in yuan and converts it to USDT itself
OK = 200
DUPLICATE_ORDER = 10002
ORDER_NOT_FOUND = 10008
CALLBACK_STATUSES: dict[int, PaymentStatus] = {1: "pending", 2: "paid", 3: "closed"}  # 1 waiting, 3 expired
MAX_FIELDS = 32
MAX_VALUE_CHARS = 256
MAX_ID_CHARS = 64
MAX_NUMBER_CHARS = 32


def render(value: object) -> str | None:
    """A field as the Go server writes it into the string to sign; None when skipped (null, "").

    Go decodes every JSON number to float64 and writes it with FormatFloat(f, 'f', -1, 64): no
    exponent, no trailing zeros (1.10 → "1.1", 100.0 → "100"). A Decimal parsed from the JSON text
    gives the same digits without ever being a float."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int subclass
        raise ValueError("unsupported field type")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value.normalize(), "f")
    raise ValueError("unsupported field type")


def sign_content(fields: Mapping[str, object]) -> str:
    """Every field but signature, null and "" skipped, as k=v strings sorted and joined with & (the
    token is appended by md5_sign). The original skips only null; BEpusdt skips "" too; no field we
    send or require is ever empty, so the two agree on every message that matters."""
    parts = []
    for key, value in fields.items():
        rendered = render(value)
        if key != "signature" and rendered is not None:
            parts.append(f"{key}={rendered}")
    return "&".join(sorted(parts))


def parse_json(body: bytes) -> Any:
    """JSON with numbers as exact values: a float-looking number is a Decimal; exponents, NaN,
    Infinity, huge numbers and repeated keys are refused (ValueError)."""

    def number(text: str) -> Decimal:
        if len(text) > MAX_NUMBER_CHARS or "e" in text or "E" in text:
            raise ValueError("number with an exponent")
        return Decimal(text)

    def integer(text: str) -> int:
        if len(text) > 18:
            raise ValueError("integer too long")
        return int(text)

    def constant(text: str) -> None:
        raise ValueError("NaN or Infinity")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in pairs:
            if key in data:
                raise ValueError("repeated key")
            data[key] = value
        return data

    try:
        return json.loads(
            body, parse_float=number, parse_int=integer, parse_constant=constant, object_pairs_hook=unique
        )
    except (ValueError, RecursionError, InvalidOperation):
        raise ValueError("not exact JSON") from None


def _now() -> datetime:
    return datetime.now(UTC)


class EpusdtGateway:
    name = "epusdt"
    # epusdt has no merchant id: the api token that signs every callback is the only credential, so
    # a verified callback is ours, and its Notice carries this same (empty) id for judge.
    merchant_id = ""
    query_channels: tuple[QueryChannel, ...] = ("primary",)
    has_statement = False
    partial_refund = False
    query_proves_payment = False  # its query answer is unsigned

    def __init__(
        self,
        api_url: str,
        api_token: str,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if not api_token:
            raise ValueError("epusdt api token is empty")
        self._api_url = api_url.rstrip("/")
        self._token = api_token
        self._http = GatewayHttp("epusdt", client, REQUEST_TIMEOUT_SECONDS)
        # A callback carries no payment time: its arrival stands in (the saga counts the SLA from it).
        self._clock = clock

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- merchant API ----

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        if request.currency != CURRENCY:
            raise GatewayRefused("epusdt create: only CNY amounts are offered")
        fields: dict[str, object] = {
            "order_id": request.order_id,
            "amount": Decimal(to_major(request.amount_cents, CURRENCY)),
            "notify_url": request.notify_url,
        }
        if request.return_url:
            fields["redirect_url"] = request.return_url
        fields["signature"] = md5_sign(sign_content(fields), self._token)
        # Written by hand so the amount is a JSON number without passing through a float.
        body = (
            "{"
            + ",".join(f"{json.dumps(k)}:{v if isinstance(v, Decimal) else json.dumps(v)}" for k, v in fields.items())
            + "}"
        )
        data = await self._call(
            "create",
            "POST",
            "/api/v1/order/create-transaction",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        code = data.get("status_code")
        if code == DUPLICATE_ORDER:
            # epusdt cannot look a transaction up by our order id, so a create whose answer was
            # lost cannot be resumed. Its transaction's address and amount never reached the buyer,
            # so nobody pays it and it expires; the order ends as "gateway unavailable", unpaid.
            raise GatewayRefused("epusdt create: the order already has a transaction (10002)")
        if code != OK:
            kind = GatewayError if code == 400 else GatewayRefused  # 400 is epusdt's "system error"
            raise kind(f"epusdt create: refused ({_code(code)})")
        result = data.get("data")
        if not isinstance(result, dict):
            raise GatewayError("epusdt create: malformed response")
        trade_id, pay_url = result.get("trade_id"), result.get("payment_url")
        if not _is_id(trade_id) or not isinstance(pay_url, str) or not pay_url.startswith(("https://", "http://")):
            raise GatewayError("epusdt create: malformed response")
        if result.get("order_id") not in (None, request.order_id):
            raise GatewayError("epusdt create: response is for another order")
        return CreatedPayment(payment_id=trade_id, pay_url=pay_url)

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState:
        if not payment_id:
            raise GatewayRefused("epusdt query: needs a trade_id")
        data = await self._call("query", "GET", f"/pay/check-status/{quote(payment_id, safe='')}")
        code = data.get("status_code")
        if code == ORDER_NOT_FOUND:
            return PaymentState(payment_id, order_id, "unknown", 0, CURRENCY)
        result = data.get("data")
        if code != OK or not isinstance(result, dict) or result.get("trade_id") != payment_id:
            raise GatewayError(f"epusdt query: malformed response ({_code(code)})")
        status = result.get("status")
        if status == 2 and type(status) is int:
            # Unauthenticated: anybody on the path could write "2". Never proof; the order keeps
            # waiting for the signed callback (epusdt retries it).
            log.warning(
                "epusdt query: the gateway reports trade %s paid; delivery waits for its signed callback", payment_id
            )
        state: PaymentStatus = (
            "closed" if status == 3 and type(status) is int else "pending" if status in (1, 2) else "unknown"
        )
        return PaymentState(payment_id, order_id, state, 0, CURRENCY)

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        raise Unsupported("epusdt has no close API; its transaction expires by itself")

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState:
        raise Unsupported("epusdt cannot refund: USDT goes back by a person's transfer from the wallet")

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        raise Unsupported("epusdt has no statement API")

    # ---- notify ----

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        try:
            data = parse_json(body)
        except ValueError as exc:
            raise InvalidNotify(str(exc)) from None
        if not isinstance(data, dict) or not data or len(data) > MAX_FIELDS:
            raise InvalidNotify("body is not a JSON object")
        try:
            for key, value in data.items():
                if (
                    len(key) > MAX_ID_CHARS
                    or not key.isprintable()
                    or (isinstance(value, str) and (len(value) > MAX_VALUE_CHARS or not value.isprintable()))
                ):
                    raise ValueError("malformed field")
            content = sign_content(data)
        except ValueError as exc:
            raise InvalidNotify(str(exc)) from None
        if not md5_matches(content, self._token, data.get("signature")):
            raise InvalidNotify("bad signature")
        try:
            amount = data.get("amount")
            if not isinstance(amount, (Decimal, int)):
                raise ValueError("amount is not a JSON number")
            status = data.get("status")
            if type(status) is not int or status not in CALLBACK_STATUSES:
                raise ValueError("bad status")
            block = data.get("block_transaction_id")
            return Notice(
                payment_id=_id(data, "trade_id"),
                order_id=_id(data, "order_id"),
                merchant_id=self.merchant_id,
                status=CALLBACK_STATUSES[status],
                amount_cents=to_minor(amount, CURRENCY),
                currency=CURRENCY,
                paid_at=self._clock(),
                event_id=block if _is_id(block, MAX_VALUE_CHARS) else None,
            )
        except (MoneyError, ValueError) as exc:
            raise InvalidNotify(f"malformed callback ({exc})") from None

    def ack(self) -> Ack:
        return Ack(200, "ok")  # the sender compares the body only, and wants exactly "ok"

    def nack(self, reason: str) -> Ack:
        return Ack(400, "fail")

    # ---- helpers ----

    async def _call(self, op: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._http.request(op, method, self._api_url + path, **kwargs)
        if response.status_code >= 500:
            raise GatewayError(f"epusdt {op}: HTTP {response.status_code}")
        try:
            data = response.json()  # epusdt answers errors with HTTP 200 and its own status_code
        except ValueError:
            raise GatewayError(f"epusdt {op}: HTTP {response.status_code}, not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(f"epusdt {op}: malformed response")
        return data


def _is_id(value: object, max_chars: int = MAX_ID_CHARS) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= max_chars and value.isascii() and value.isprintable()


def _id(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not _is_id(value):
        raise ValueError(f"bad {key}")
    return value


def _code(code: object) -> str:
    return str(code) if type(code) is int else "no status_code"


def build(settings: EpusdtSettings, client: httpx.AsyncClient | None) -> EpusdtGateway:
    return EpusdtGateway(settings.api_url, settings.api_token.get_secret_value(), client)
