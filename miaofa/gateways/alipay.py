"""Adapter for Alipay Open Platform, RSA2 public-key mode (电脑网站支付 page pay, or 当面付 precreate).

Requests are form POSTs to gateway.do signed with the app's private key; answers are JSON whose
`<method>_response` member is signed, as raw text, with Alipay's key; notifies are form POSTs signed
with Alipay's key. Nothing exists at Alipay until the buyer opens the page or scans the code, so the
payment id is our order id (out_trade_no).
"""

import base64
import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from miaofa.gateways.alipay_bill import parse_zip
from miaofa.gateways.alipay_wire import (
    CHARSETS,
    CURRENCY,
    SHANGHAI,
    SIGN_RE,
    alipay_time,
    error_code,
    json_object,
    load_key,
    notice_of,
    notify_form,
    response_members,
    shanghai_time,
    sign_content,
    trade_currency,
    yuan,
)
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
    StatementNotReady,
    Unsupported,
)
from miaofa.gateways.bills import (
    BillError,
    BillLine,
    DayCache,
    bill_days,
    check_ready,
    day_window,
    download_url_ok,
    states,
)
from miaofa.gateways.config import AlipaySettings
from miaofa.gateways.http import GatewayHttp
from miaofa.gateways.money import to_major

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 256 * 1024
PAID = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
BILL_SURELY_OUT = timedelta(days=1)  # isp.bill_not_exist this long after the day: no trade that day


class AlipayGateway:
    name = "alipay"
    query_channels: tuple[QueryChannel, ...] = ("primary",)
    has_statement = True
    bill_zone = SHANGHAI
    partial_refund = True
    query_proves_payment = True

    def __init__(
        self,
        settings: AlipaySettings,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not settings.app_id or not settings.seller_id:
            raise ValueError("alipay: app_id and seller_id are required")
        self.merchant_id = settings.seller_id
        self._app_id = settings.app_id
        self._private_key: rsa.RSAPrivateKey = load_key(settings.private_key.get_secret_value(), private=True)
        self._public_key: rsa.RSAPublicKey = load_key(settings.alipay_public_key, private=False)
        self._gateway_url = settings.gateway_url
        self._product = settings.product
        self._http = GatewayHttp("alipay", client, REQUEST_TIMEOUT_SECONDS)
        self._clock = clock
        self._bills = DayCache()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- merchant API ----

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        if request.currency != CURRENCY:
            raise GatewayRefused(f"alipay create: only {CURRENCY} is accepted")
        biz = {
            "out_trade_no": request.order_id,
            "total_amount": to_major(request.amount_cents, CURRENCY),
            "subject": request.subject[:256],
            "time_expire": shanghai_time(request.expires_at),
        }
        if self._product == "page":
            # No server call: the buyer's browser takes the signed request to Alipay's cashier.
            biz["product_code"] = "FAST_INSTANT_TRADE_PAY"
            params = self._signed(
                "alipay.trade.page.pay", biz, notify_url=request.notify_url, return_url=request.return_url or ""
            )
            return CreatedPayment(payment_id=request.order_id, pay_url=f"{self._gateway_url}?{urlencode(params)}")
        data = await self._call("create", "alipay.trade.precreate", biz, notify_url=request.notify_url)
        self._same_trade("create", data, request.order_id)
        qr_code = data.get("qr_code")
        if not isinstance(qr_code, str) or not qr_code.startswith("https://") or len(qr_code) > 512:
            raise GatewayError("alipay create: malformed qr_code")
        return CreatedPayment(payment_id=request.order_id, pay_url=qr_code)

    async def query(self, payment_id: str, order_id: str, channel: QueryChannel = "primary") -> PaymentState:
        if channel != "primary":
            raise Unsupported(f"alipay has no {channel} query host")
        out_trade_no = payment_id or order_id
        if not out_trade_no:
            raise GatewayRefused("alipay query: no out_trade_no")
        try:
            data = await self._call("query", "alipay.trade.query", {"out_trade_no": out_trade_no})
        except BusinessFailure as failure:
            if failure.sub_code == "ACQ.TRADE_NOT_EXIST":  # not opened or scanned yet
                return PaymentState(out_trade_no, out_trade_no, "pending", 0, CURRENCY)
            raise failure.refused() from None
        self._same_trade("query", data, out_trade_no)
        try:
            status = data.get("trade_status")
            paid_at = alipay_time(data.get("send_pay_date")) if data.get("send_pay_date") else None
            if status in PAID:
                state: PaymentStatus = "paid"
                if paid_at is None:
                    raise ValueError("paid without send_pay_date")
            elif status == "TRADE_CLOSED":
                state = "refunded" if paid_at is not None else "closed"  # a paid trade closes by a full refund
            elif status == "WAIT_BUYER_PAY":
                state = "pending"
            else:
                raise ValueError("bad trade_status")
            currency = trade_currency(data)
            amount = yuan(data.get("total_amount"), currency)
        except ValueError as exc:
            raise GatewayError(f"alipay query: malformed response ({exc})") from None
        return PaymentState(out_trade_no, out_trade_no, state, amount, currency, paid_at)

    async def close(self, payment_id: str, order_id: str) -> PaymentState:
        out_trade_no = payment_id or order_id
        try:
            data = await self._call("close", "alipay.trade.close", {"out_trade_no": out_trade_no})
        except BusinessFailure as failure:
            if failure.sub_code == "ACQ.TRADE_NOT_EXIST":  # never opened; time_expire stops it later
                return PaymentState(out_trade_no, out_trade_no, "closed", 0, CURRENCY)
            if failure.sub_code == "ACQ.TRADE_STATUS_ERROR":  # paid (or closed) meanwhile: say which
                return await self.query(out_trade_no, order_id)
            raise failure.refused() from None
        self._same_trade("close", data, out_trade_no)
        return PaymentState(out_trade_no, out_trade_no, "closed", 0, CURRENCY)

    async def refund(self, payment_id: str, order_id: str, amount_cents: int, refund_id: str) -> PaymentState:
        out_trade_no = payment_id or order_id
        biz = {
            "out_trade_no": out_trade_no,
            "refund_amount": to_major(amount_cents, CURRENCY),
            "out_request_no": refund_id,
        }
        try:
            data = await self._call("refund", "alipay.trade.refund", biz)
        except BusinessFailure as failure:
            raise failure.refused() from None
        self._same_trade("refund", data, out_trade_no)
        # fund_change "N" is a repeated out_request_no: the refund was made by the first call.
        if data.get("fund_change") not in ("Y", "N"):
            raise GatewayError("alipay refund: malformed response (fund_change)")
        try:
            refunded = yuan(data.get("refund_fee"))  # cumulative over the trade's refunds
        except ValueError:
            raise GatewayError("alipay refund: malformed response (refund_fee)") from None
        if refunded < amount_cents:
            raise GatewayError("alipay refund: refund_fee is less than asked")
        return PaymentState(out_trade_no, out_trade_no, "refunded", refunded, CURRENCY)

    async def statement(self, start: datetime, end: datetime) -> list[PaymentState]:
        lines = []
        for day in bill_days(start, end, SHANGHAI):
            lines += await self._day_bill(day)
        return states(lines, start, end)

    async def _day_bill(self, day: date) -> list[BillLine]:
        cached = self._bills.get("trade", day)
        if cached is not None:
            return cached
        data = await self.bill_zip("statement", "trade", day)
        try:
            lines = parse_zip(data) if data is not None else []
        except BillError as exc:
            raise GatewayError(str(exc)) from None
        self._bills.put("trade", day, lines)
        return lines

    async def bill_zip(self, op: str, bill_type: str, day: date) -> bytes | None:
        """A day's bill zip (`trade`, or `signcustomer`: the account's 账务明细), None for a day
        without any; StatementNotReady while Alipay makes it."""
        now = self._clock()
        check_ready("alipay", day, now)
        try:
            data = await self._call(
                op, "alipay.data.dataservice.bill.downloadurl.query", {"bill_type": bill_type, "bill_date": str(day)}
            )
        except BusinessFailure as failure:
            if failure.sub_code != "isp.bill_not_exist":
                raise failure.refused() from None
            # Alipay says the same of a bill still being made and of a day without a trade: a day
            # is taken as empty only once its bill is well past due.
            if now < day_window(day)[1] + BILL_SURELY_OUT:
                raise StatementNotReady("alipay", str(day)) from None
            return None
        url = data.get("bill_download_url")
        if not download_url_ok(url):
            raise GatewayError(f"alipay {op}: malformed bill_download_url")
        response = await self._http.request(f"{op} download", "GET", url)
        if response.status_code != 200:
            raise GatewayError(f"alipay {op} download: HTTP {response.status_code}")
        return response.content

    # ---- notify ----

    async def verify_notify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> Notice:
        params = notify_form(body)
        signature = params.pop("sign", "")
        if params.get("sign_type") != "RSA2":
            raise InvalidNotify("sign_type is not RSA2")
        if not SIGN_RE.fullmatch(signature):
            raise InvalidNotify("missing or malformed sign")
        charset = CHARSETS[params.get("charset", "utf-8").lower()]
        content = sign_content(params, exclude=("sign", "sign_type"))
        if not self._verify(content.encode(charset), signature):
            raise InvalidNotify("bad signature")
        if params.get("app_id") != self._app_id:
            raise InvalidNotify("wrong app id")
        try:
            return notice_of(params)
        except ValueError as exc:
            raise InvalidNotify(str(exc)) from None

    def ack(self) -> Ack:
        return Ack(200, "success")

    def nack(self, reason: str) -> Ack:
        # Alipay reads only the body: anything but "success" is retried. The reason stays in our logs.
        return Ack(400, "fail")

    # ---- helpers ----

    async def call(self, op: str, method: str, biz: Mapping[str, Any]) -> dict[str, Any]:
        """A signed call and its verified 10000 answer, for the payout rail (miaofa/payouts/alipay_rail.py):
        BusinessFailure for a signed 40004, GatewayRefused for 40001-40003, GatewayError otherwise."""
        return await self._call(op, method, biz)

    def _signed(self, method: str, biz: Mapping[str, Any], **extra: str) -> dict[str, str]:
        params = {
            "app_id": self._app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": shanghai_time(self._clock()),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
            **extra,
        }
        params = {key: value for key, value in params.items() if value}
        signature = self._private_key.sign(
            sign_content(params, exclude=("sign",)).encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return {**params, "sign": base64.b64encode(signature).decode()}

    def _verify(self, message: bytes, signature: str) -> bool:
        try:
            self._public_key.verify(
                base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    async def _call(self, op: str, method: str, biz: Mapping[str, Any], **extra: str) -> dict[str, Any]:
        """The verified `<method>_response` of a 10000 answer; BusinessFailure for 40004."""
        response = await self._http.request(
            op,
            "POST",
            self._gateway_url,
            data=self._signed(method, biz, **extra),
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
        )
        if response.status_code != 200:
            raise GatewayError(f"alipay {op}: HTTP {response.status_code}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise GatewayError(f"alipay {op}: response too large")
        try:
            members = response_members(response.content.decode("utf-8"))
        except (ValueError, RecursionError):
            raise GatewayError(f"alipay {op}: response is not a JSON object") from None
        raw = members.get(method.replace(".", "_") + "_response")
        if raw is None:
            # error_response: the gateway refused the call itself (signature, app id); unsigned as often as not.
            error = json_object(members.get("error_response", "{}"))
            raise GatewayError(
                f"alipay {op}: error_response {error_code(error.get('code'))} {error_code(error.get('sub_code'))}"
            )
        sign = json.loads(members.get("sign", '""'))
        if not isinstance(sign, str) or not SIGN_RE.fullmatch(sign) or not self._verify(raw.encode(), sign):
            raise GatewayError(f"alipay {op}: response signature does not verify")
        data = json_object(raw)  # the signed text itself, never a re-serialisation
        code, sub_code = error_code(data.get("code")), error_code(data.get("sub_code"))
        if code == "10000":
            return data
        if code == "40004" and sub_code != "ACQ.SYSTEM_ERROR":
            raise BusinessFailure(op, sub_code)
        if code in ("40001", "40002", "40003"):  # missing or invalid arguments, no permission: asking again fails
            raise GatewayRefused(f"alipay {op}: {code} {sub_code}")
        raise GatewayError(f"alipay {op}: {code} {sub_code}")  # 20000 and anything unknown: ask again

    @staticmethod
    def _same_trade(op: str, data: Mapping[str, Any], out_trade_no: str) -> None:
        # An answer about some other trade is a gateway bug we must not act on.
        if data.get("out_trade_no") != out_trade_no:
            raise GatewayError(f"alipay {op}: response is for another trade")


class BusinessFailure(Exception):
    """A signed 40004 answer; the caller decides what its sub_code means for the operation."""

    def __init__(self, op: str, sub_code: str) -> None:
        super().__init__(f"alipay {op}: 40004 {sub_code}")
        self.op, self.sub_code = op, sub_code

    def refused(self) -> GatewayRefused:
        return GatewayRefused(str(self))


def build(settings: AlipaySettings, client: httpx.AsyncClient | None) -> AlipayGateway:
    return AlipayGateway(settings, client)
