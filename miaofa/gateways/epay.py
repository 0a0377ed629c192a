"""Adapter for 易支付 / epay v1 (彩虹易支付 and compatible operators), MD5-signed.

Only the signed notify proves a payment: the order query (api.php?act=order) is unsigned, so it
can say "not paid yet" but never "paid". The key travels in that query's URL (the protocol wants
it so): the URL is never logged, and errors carry no URL and no chained transport exception.
"""

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

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
from miaofa.gateways.config import EpaySettings
from miaofa.gateways.http import GatewayHttp
from miaofa.gateways.md5_sign import md5_matches, md5_sign
from miaofa.gateways.money import MoneyError, to_major, to_minor

log = logging.getLogger("miaofa.gateways.epay")
REQUEST_TIMEOUT_SECONDS = 5.0
CURRENCY = "CNY"  # epay operators take yuan only
PAID = "TRADE_SUCCESS"  # the only trade_status that means paid
MAX_FIELDS = 32
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 1024
MAX_ID_CHARS = 64


def sign_content(params: Mapping[str, str]) -> str:
    """The string to sign: every field but sign and sign_type, empty ones dropped, sorted by key
    (ASCII), joined raw as k=v&k=v (the key is appended by md5_sign, with no separator)."""
    kept = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type") and v != "")
    return "&".join(f"{k}={v}" for k, v in kept)


def _now() -> datetime:
    return datetime.now(UTC)


class _RedactKey(logging.Filter):
    """httpx logs every request URL at INFO; api.php?act=order carries the key in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_set_param("key", "***") if isinstance(arg, httpx.URL) and "key" in arg.params else arg
                for arg in record.args
            )
        return True


if not any(isinstance(f, _RedactKey) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactKey())


class EpayGateway:
    name = "epay"
    query_channels: tuple[QueryChannel, ...] = ("primary",)
    has_statement = False
    partial_refund = True
    query_proves_payment = False  # its query answer is unsigned

    def __init__(
        self,
        api_url: str,
        pid: str,
        key: str,
        pay_type: str = "alipay",
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if not key:
            raise ValueError("epay key is empty")
        self.merchant_id = pid
        self._api_url = api_url if api_url.endswith("/") else api_url + "/"
        self._key = key
        self._pay_type = pay_type
        self._http = GatewayHttp("epay", client, REQUEST_TIMEOUT_SECONDS)
        # A notify carries no payment time: its arrival stands in (the saga counts the SLA from it).
        self._clock = clock

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- merchant API ----

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        if request.currency != CURRENCY:
            raise GatewayRefused("epay create: only CNY is offered")
        # Nothing exists at the operator until the buyer's browser submits this signed link.
        params = {
            "pid": self.merchant_id,
            "type": self._pay_type,
            "out_trade_no": request.order_id,
            "notify_url": request.notify_url,
            "return_url": request.return_url or "",
            "name": request.subject,
            "money": to_major(request.amount_cents, CURRENCY),
        }
        params = {k: v for k, v in params.items() if v != ""}
        params |= {"sign": md5_sign(sign_content(params), self._key), "sign_type": "MD5"}
        return CreatedPayment(payment_id=request.order_id, pay_url=f"{self._api_url}submit.php?{urlencode(params)}")

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState:
        out_trade_no = payment_id or order_id
        response = await self._call(
            "query",
            "GET",
            params={"act": "order", "pid": self.merchant_id, "key": self._key, "out_trade_no": out_trade_no},
        )
        data = self._json("query", response)
        if str(data.get("code")) != "1":
            # Also what an order never submitted by the buyer gets: nothing exists there yet.
            return PaymentState(out_trade_no, out_trade_no, "unknown", 0, CURRENCY)
        if data.get("out_trade_no") not in (None, out_trade_no):
            raise GatewayError("epay query: response is for another order")
        try:
            amount = to_minor(_text(data.get("money")), CURRENCY)
        except (MoneyError, ValueError):
            raise GatewayError("epay query: malformed money") from None
        status = str(data.get("status"))
        if status == "1":
            # The answer is unsigned (anybody on its path could write it), so "paid" here is never
            # proof: the order keeps waiting for the signed notify, which the operator retries.
            log.warning(
                "epay query: the gateway reports order %s paid; delivery waits for its signed notify", out_trade_no
            )
        return PaymentState(
            out_trade_no, out_trade_no, "pending" if status in ("0", "1") else "unknown", amount, CURRENCY
        )

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        # No close API: the saga keeps watching for a late signed notify instead.
        raise Unsupported("epay has no close API")

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState:
        # epay takes no idempotency key (refund_id); a retried refund is bounded by the operator,
        # which refuses refunds beyond the paid amount.
        out_trade_no = payment_id or order_id
        response = await self._call(
            "refund",
            "POST",
            params={"act": "refund"},
            data={
                "pid": self.merchant_id,
                "key": self._key,
                "out_trade_no": out_trade_no,
                "money": to_major(amount_cents, CURRENCY),
            },
        )
        data = self._json("refund", response)
        if str(data.get("code")) != "1":
            raise GatewayRefused(f"epay refund: refused ({_short(data.get('msg'))})")
        return PaymentState(out_trade_no, out_trade_no, "refunded", amount_cents, CURRENCY)

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        raise Unsupported("epay has no statement API")

    # ---- notify ----

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        params = _notify_params(body, query)
        sign_type = params.get("sign_type")
        if sign_type is not None and sign_type != "MD5":
            raise InvalidNotify("unsupported sign_type")
        if not md5_matches(sign_content(params), self._key, params.get("sign")):
            raise InvalidNotify("bad signature")
        try:
            out_trade_no = _id(params, "out_trade_no")
            notice = Notice(
                payment_id=out_trade_no,
                order_id=out_trade_no,
                merchant_id=_id(params, "pid"),
                status="paid" if params.get("trade_status") == PAID else "pending",
                amount_cents=to_minor(params.get("money", ""), CURRENCY),
                currency=CURRENCY,
                paid_at=self._clock(),
                event_id=_id(params, "trade_no"),
            )
        except (MoneyError, ValueError) as exc:
            raise InvalidNotify(f"malformed notify ({exc})") from None
        # Whether pid is ours is judged with amount and order (miaofa.payments.proof.judge).
        return notice

    def ack(self) -> Ack:
        return Ack(200, "success")

    def nack(self, reason: str) -> Ack:
        return Ack(400, "fail")

    # ---- helpers ----

    async def _call(self, op: str, method: str, **kwargs: Any) -> httpx.Response:
        response = await self._http.request(op, method, self._api_url + "api.php", **kwargs)  # the URL holds the key
        if response.status_code != 200:
            raise GatewayError(f"epay {op}: HTTP {response.status_code}")
        return response

    def _json(self, op: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise GatewayError(f"epay {op}: response is not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(f"epay {op}: malformed response")
        return data


def _notify_params(body: bytes, query: Mapping[str, str]) -> dict[str, str]:
    """The notify's fields: a GET's query or a POST's form body (never both), each field once."""
    pairs: Iterable[tuple[str, str]]
    multi = getattr(query, "multi_items", None)
    query_pairs = list(multi() if multi is not None else query.items())
    if body:
        if query_pairs:
            raise InvalidNotify("fields in both query and body")
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=True,
                errors="strict",
                max_num_fields=MAX_FIELDS,
            )
        except ValueError:  # UnicodeDecodeError included
            raise InvalidNotify("body is not a form") from None
    else:
        pairs = query_pairs
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise InvalidNotify("repeated field")  # money=1&money=2: which one was signed?
        if (
            len(params) >= MAX_FIELDS
            or len(key) > MAX_KEY_CHARS
            or len(value) > MAX_VALUE_CHARS
            or not key.isprintable()
            or not value.isprintable()
        ):
            raise InvalidNotify("malformed field")
        params[key] = value
    if not params:
        raise InvalidNotify("empty notify")
    return params


def _id(params: Mapping[str, str], key: str) -> str:
    value = params.get(key, "")
    if not value or len(value) > MAX_ID_CHARS or not value.isascii():
        raise ValueError(f"bad {key}")
    return value


def _text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("money is not a string")  # a JSON float is not an exact amount
    if not isinstance(value, str):
        raise ValueError("money missing")
    return value


def _short(value: object) -> str:
    text = value if isinstance(value, str) else "no reason"
    return "".join(ch for ch in text[:64] if ch.isprintable()) or "no reason"


def build(settings: EpaySettings, client: httpx.AsyncClient | None) -> EpayGateway:
    return EpayGateway(settings.api_url, settings.pid, settings.key.get_secret_value(), settings.pay_type, client)
