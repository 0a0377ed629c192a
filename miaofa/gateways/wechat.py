"""Adapter for WeChat Pay API v3, Native pay (a QR code the buyer scans).

Our order id is the out_trade_no and the payment id: nothing else names the payment before it is paid.
Every merchant request is signed with the merchant key; every answer and notify is signed by WeChat
(a 微信支付公钥 named by its id, or the platform certificates from /v3/certificates) and checked here.
"""

import base64
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from miaofa.gateways import wechat_wire as wire
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
)
from miaofa.gateways.bills import SHANGHAI, DayCache, bill_days, states
from miaofa.gateways.config import WechatSettings
from miaofa.gateways.http import GatewayHttp
from miaofa.gateways.wechat_bill import fetch_bill, parse_trade, parsed
from miaofa.gateways.wechat_crypto import (
    PlatformKeys,
    SignatureError,
    authorization,
    decrypt,
    load_private_key,
    load_public_key,
    read_certificates,
    read_signed_headers,
    verify_signed,
)

REQUEST_TIMEOUT_SECONDS = 5.0
NACK_BODY = json.dumps({"code": "FAIL", "message": "失败"}, ensure_ascii=False)  # WeChat's failure answer


class WechatGateway:
    name = "wechat"
    query_channels: tuple[QueryChannel, ...] = ("primary", "backup")
    has_statement = True
    bill_zone = SHANGHAI
    partial_refund = True
    query_proves_payment = True

    def __init__(
        self,
        settings: WechatSettings,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.merchant_id = settings.mchid
        self._appid = settings.appid
        self._serial_no = settings.cert_serial_no
        self._private_key = load_private_key(
            settings.private_key.get_secret_value(), WechatSettings.env_name("private_key")
        )
        self._apiv3_key = settings.apiv3_key.get_secret_value().encode()
        public_key = (
            load_public_key(settings.public_key, WechatSettings.env_name("public_key")) if settings.public_key else None
        )
        self._public_key_id = settings.public_key_id
        self._wechat_public_key = public_key  # also seals a payee's name for a transfer
        self._keys = PlatformKeys(public_key, settings.public_key_id, self._fetch_certificates, monotonic)
        self._urls = {"primary": settings.base_url.rstrip("/"), "backup": settings.backup_url.rstrip("/")}
        self._http = GatewayHttp("wechat", client, REQUEST_TIMEOUT_SECONDS)
        self._clock = clock
        self._bills = DayCache()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- merchant API ----

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        if request.currency != "CNY":
            raise GatewayRefused("wechat create: Native pay takes CNY only")
        no = wire.trade_no(request.order_id, "create")
        payload = {
            "appid": self._appid,
            "mchid": self.merchant_id,
            "description": (request.subject or no)[:127],
            "out_trade_no": no,
            "time_expire": request.expires_at.astimezone(wire.CHINA).isoformat(timespec="seconds"),
            "notify_url": request.notify_url,
            "amount": {"total": request.amount_cents, "currency": "CNY"},
        }
        data = await self._json("create", "POST", "/v3/pay/transactions/native", payload=payload)
        code_url = data.get("code_url")
        if not isinstance(code_url, str) or not 0 < len(code_url) <= 512 or not code_url.isprintable():
            raise GatewayError("wechat create: malformed answer")
        return CreatedPayment(payment_id=no, pay_url=code_url)

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState:
        no = wire.trade_no(payment_id or order_id, "query")
        response = await self._call(
            "query",
            "GET",
            f"/v3/pay/transactions/out-trade-no/{no}",
            params={"mchid": self.merchant_id},
            channel=channel,
        )
        if response.status_code == 404 and wire.error_code(response) == "ORDER_NOT_EXIST":
            return PaymentState(payment_id=no, order_id=no, status="unknown", amount_cents=0, currency="")
        return self._transaction("query", self._expect_json("query", response, 200), no)

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        no = wire.trade_no(payment_id or order_id, "close")
        response = await self._call(
            "close", "POST", f"/v3/pay/transactions/out-trade-no/{no}/close", payload={"mchid": self.merchant_id}
        )
        refused: GatewayRefused | None = None
        try:
            self._expect("close", response, 204)
        except GatewayRefused as exc:  # e.g. ORDERPAID: the query below says what the payment became
            refused = exc
        state = await self.query(no, order_id)
        if refused is not None and state.status in ("pending", "unknown"):
            raise refused
        return state

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState:
        no = wire.trade_no(payment_id or order_id, "refund")
        if not wire.ID_RE.fullmatch(refund_id):
            raise GatewayRefused("wechat refund: malformed refund id")
        paid = await self.query(no, order_id)  # the refund must name the payment's total
        if paid.status not in ("paid", "refunded"):
            raise GatewayRefused(f"wechat refund: the payment is {paid.status}")
        if not 0 < amount_cents <= paid.amount_cents:
            raise GatewayRefused("wechat refund: amount exceeds the payment")
        payload = {
            "out_trade_no": no,
            "out_refund_no": refund_id,
            "amount": {"refund": amount_cents, "total": paid.amount_cents, "currency": paid.currency},
        }
        data = await self._json("refund", "POST", "/v3/refund/domestic/refunds", payload=payload)
        try:
            if (
                wire.text(data, "out_refund_no", wire.ID_RE) != refund_id
                or wire.text(data, "out_trade_no", wire.OUT_TRADE_NO_RE) != no
            ):
                raise GatewayError("wechat refund: answer for another refund")
            status = data.get("status")
            amount = wire.object_field(data, "amount")
            refunded = wire.fen(amount, "refund")
        except ValueError as exc:
            raise GatewayError(f"wechat refund: malformed answer ({exc})") from None
        # PROCESSING is in flight: WeChat finishes it, and a retry with the same out_refund_no is the same refund.
        if status not in ("SUCCESS", "PROCESSING"):
            shown = status if isinstance(status, str) and wire.CODE_RE.fullmatch(status) else "refused"
            raise GatewayRefused(f"wechat refund: {shown}")
        return PaymentState(
            payment_id=no,
            order_id=no,
            status="refunded",
            amount_cents=refunded,
            currency=paid.currency,
            paid_at=paid.paid_at,
        )

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        lines = []
        for day in bill_days(start, end, SHANGHAI):
            cached = self._bills.get("trade", day)
            if cached is None:
                text = await self.bill("statement", "/v3/bill/tradebill", day, {"bill_type": "ALL"})
                cached = parsed(parse_trade, text)
                self._bills.put("trade", day, cached)
            lines += cached
        return states(lines, start, end)

    async def bill(self, op: str, path: str, day: date, params: dict[str, str]) -> str:
        """A day's bill as text, checked against its hash; StatementNotReady while WeChat makes it."""
        return await fetch_bill(self, op, path, day, params, datetime.fromtimestamp(self._clock(), UTC))

    async def get(self, op: str, path: str, params: dict[str, str], verify: bool = True) -> httpx.Response:
        """A signed GET and its answer, verified when 2xx unless `verify` is False (a bill file, which
        WeChat does not sign: its hash does), for miaofa/gateways/wechat_bill.py."""
        return await self._call(op, "GET", path, params=params, verify=verify)

    def origins(self) -> set[str]:
        return set(self._urls.values())

    def expect_json(self, op: str, response: httpx.Response) -> dict[str, Any]:
        return self._expect_json(op, response, 200)

    # ---- notify ----

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        try:
            signed = read_signed_headers(headers, self._clock(), require_type=True)
            # Signature over the raw bytes first: nothing unauthenticated is parsed.
            verify_signed(await self._keys.key(signed.serial), signed, body)
        except SignatureError as exc:
            raise InvalidNotify(str(exc)) from None
        except GatewayError:
            raise InvalidNotify("platform certificates unavailable") from None
        try:
            envelope = wire.loads(body)
            if not isinstance(envelope, dict):
                raise ValueError("not an object")
            event_id = wire.text(envelope, "id", wire.ID_RE)
            event_type = envelope.get("event_type")
            resource = wire.object_field(envelope, "resource")
            if envelope.get("resource_type") != "encrypt-resource" or resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise ValueError("unsupported resource")
            associated = resource.get("associated_data", "")
            nonce, ciphertext = resource.get("nonce"), resource.get("ciphertext")
            if not (
                isinstance(associated, str)
                and isinstance(nonce, str)
                and isinstance(ciphertext, str)
                and all(len(v) <= 65536 for v in (associated, nonce, ciphertext))
            ):
                raise ValueError("malformed resource")
            plain = wire.loads(decrypt(self._apiv3_key, nonce, associated, ciphertext))
            if not isinstance(plain, dict):
                raise ValueError("resource is not an object")
            if event_type == "TRANSACTION.SUCCESS" and resource.get("original_type") == "transaction":
                return self._transaction_notice(plain, event_id)
            if event_type in wire.REFUND_EVENTS and resource.get("original_type") == "refund":
                return self._refund_notice(plain, event_id)
            raise ValueError("unsupported event type")
        except ValueError as exc:  # our own short reasons
            raise InvalidNotify(str(exc)) from None

    def ack(self) -> Ack:
        return Ack(204, "")

    def nack(self, reason: str) -> Ack:
        # One fixed answer (WeChat's documented one) whatever failed: a forger must not learn which
        # check stopped them. The reason stays in the notify log.
        return Ack(400, NACK_BODY, "application/json")

    # ---- parsing ----

    def _transaction(self, op: str, data: dict[str, Any], no: str) -> PaymentState:
        try:
            if (
                data.get("mchid") != self.merchant_id
                or data.get("appid") != self._appid
                or data.get("out_trade_no") != no
            ):
                raise GatewayError(f"wechat {op}: answer for another payment")
            status = wire.trade_state(data)
            amount = data.get("amount")
            total, currency = 0, ""
            if status in ("paid", "refunded") or isinstance(amount, dict):
                amount = wire.object_field(data, "amount")
                total, currency = wire.fen(amount, "total"), wire.currency(amount)
            paid_at = wire.when(data, required=status == "paid")
        except ValueError as exc:
            raise GatewayError(f"wechat {op}: malformed answer ({exc})") from None
        return PaymentState(
            payment_id=no, order_id=no, status=status, amount_cents=total, currency=currency, paid_at=paid_at
        )

    def _transaction_notice(self, data: dict[str, Any], event_id: str) -> Notice:
        if data.get("appid") != self._appid:
            raise InvalidNotify("wrong app id")
        no = wire.text(data, "out_trade_no", wire.OUT_TRADE_NO_RE)
        status = wire.trade_state(data)
        amount = wire.object_field(data, "amount")
        # Whether the merchant and amount are ours is judged with the rest (miaofa.payments.proof.judge).
        return Notice(
            payment_id=no,
            order_id=no,
            merchant_id=wire.text(data, "mchid", wire.ID_RE),
            status=status,
            amount_cents=wire.fen(amount, "total"),
            currency=wire.currency(amount),
            paid_at=wire.when(data, required=status == "paid"),
            event_id=event_id,
        )

    def _refund_notice(self, data: dict[str, Any], event_id: str) -> Notice:
        # A refund resource names no appid (and no currency: refunds are in the payment's CNY).
        if "appid" in data and data.get("appid") != self._appid:
            raise InvalidNotify("wrong app id")
        no = wire.text(data, "out_trade_no", wire.OUT_TRADE_NO_RE)
        amount = wire.object_field(data, "amount")
        wire.fen(amount, "total")
        currency = wire.currency(amount) if "currency" in amount else "CNY"
        return Notice(
            payment_id=no,
            order_id=no,
            merchant_id=wire.text(data, "mchid", wire.ID_RE),
            status="refunded",
            amount_cents=wire.fen(amount, "refund"),
            currency=currency,
            paid_at=wire.when(data, required=False),
            event_id=event_id,
        )

    # ---- HTTP ----

    async def call(self, op: str, method: str, path: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        """A signed request and its answer, verified when 2xx, for the payout rail
        (miaofa/payouts/wechat_rail.py): GatewayError for a 5xx, a transport failure or a bad signature."""
        return await self._call(op, method, path, payload=payload)

    def seal_for_wechat(self, text: str) -> tuple[str, str]:
        """A payee's name as WeChat wants it (RSA-OAEP with WeChat Pay's public key) and the key's id;
        GatewayRefused without a public key (platform certificates are not used for this)."""
        public = self._wechat_public_key
        if public is None or not self._public_key_id:
            raise GatewayRefused("wechat: a payee's name needs MIAOFA_WECHAT__PUBLIC_KEY and PUBLIC_KEY_ID")
        sealed = public.encrypt(
            text.encode(), padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        )
        return base64.b64encode(sealed).decode(), self._public_key_id

    async def _call(
        self,
        op: str,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        payload: dict[str, Any] | None = None,
        channel: QueryChannel = "primary",
        verify: bool = True,
    ) -> httpx.Response:
        path_query = path + ("?" + urlencode(params) if params else "")
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() if payload is not None else b""
        headers = {
            "Authorization": authorization(
                self._private_key, self.merchant_id, self._serial_no, method, path_query, body, int(self._clock())
            ),
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": "miaofa/1",
        }
        if self._public_key_id:  # answers are then signed with the public key, not a platform certificate
            headers["Wechatpay-Serial"] = self._public_key_id
        response = await self._http.request(op, method, self._urls[channel] + path_query, content=body, headers=headers)
        if response.status_code >= 500:
            raise GatewayError(f"wechat {op}: HTTP {response.status_code}")
        if verify and 200 <= response.status_code < 300:
            try:
                signed = read_signed_headers(response.headers, self._clock(), require_type=False)
                verify_signed(await self._keys.key(signed.serial), signed, response.content)
            except SignatureError as exc:
                raise GatewayError(f"wechat {op}: answer not signed by WeChat ({exc})") from None
        return response

    async def _json(self, op: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._expect_json(op, await self._call(op, method, path, **kwargs), 200)

    def _expect(self, op: str, response: httpx.Response, status: int) -> None:
        if response.status_code == status:
            return
        code = wire.error_code(response) or "error"
        retry = response.status_code in (401, 408, 429) or not 400 <= response.status_code < 500
        raise (GatewayError if retry else GatewayRefused)(f"wechat {op}: HTTP {response.status_code} {code}")

    def _expect_json(self, op: str, response: httpx.Response, status: int) -> dict[str, Any]:
        self._expect(op, response, status)
        try:
            data = response.json()
        except ValueError:
            raise GatewayError(f"wechat {op}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(f"wechat {op}: malformed answer")
        return data

    async def _fetch_certificates(self) -> dict[int, rsa.RSAPublicKey]:
        """The platform certificates; the answer is signed by one of the certificates it carries."""
        response = await self._call("certificates", "GET", "/v3/certificates", verify=False)
        self._expect("certificates", response, 200)
        try:
            certs = read_certificates(response.content, self._apiv3_key, datetime.now(UTC))
            signed = read_signed_headers(response.headers, self._clock(), require_type=False)
            key = certs.get(int(signed.serial, 16))
            if key is None:
                raise SignatureError("signed by an unknown certificate")
            verify_signed(key, signed, response.content)
        except ValueError as exc:  # SignatureError included
            raise GatewayError(f"wechat certificates: {exc}") from None
        return certs


def build(settings: WechatSettings, client: httpx.AsyncClient | None) -> WechatGateway:
    return WechatGateway(settings, client)
