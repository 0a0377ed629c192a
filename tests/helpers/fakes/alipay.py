"""A fake Alipay Open Platform gateway (RSA2, public-key mode) for the tests.

`POST /gateway.do` dispatches on `method` (precreate, query, close, refund) after checking the
app's signature with the app public key, and answers JSON whose `<method>_response` text is signed
with the fake's own Alipay key — rendered the way Alipay's servers do (unicode as is, "/" escaped),
so only a verifier that uses the raw text passes. `GET /gateway.do` is the buyer's browser arriving
at the page-pay cashier. Tests drive the buyer with `scan`, `pay`, `refund` and craft notifies with
`notify_params`/`sign`/`form`. The signing here is written apart from the adapter's on purpose.
"""

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote_plus
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

SHANGHAI = ZoneInfo("Asia/Shanghai")
FORMAT = "%Y-%m-%d %H:%M:%S"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def public_base64(key: rsa.RSAPrivateKey) -> str:
    """The public key as the Alipay console shows it: bare base64 DER, one line."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def content(params: dict[str, str], exclude: tuple[str, ...]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in exclude and v)


def rsa2(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_ok(public: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def now_text() -> str:
    return datetime.now(SHANGHAI).strftime(FORMAT)


@dataclass
class Trade:
    out_trade_no: str
    total_amount: str
    subject: str
    notify_url: str
    # PRECREATED (not scanned: "does not exist") | WAIT_BUYER_PAY | TRADE_SUCCESS | TRADE_FINISHED | TRADE_CLOSED
    status: str
    trade_no: str = field(default_factory=lambda: "2026" + uuid.uuid4().hex[:24])
    gmt_create: str = field(default_factory=now_text)
    gmt_payment: str = ""
    refund_fee: Decimal = Decimal("0.00")
    refunds: dict[str, Decimal] = field(default_factory=dict)  # out_request_no → amount
    refunded_at: dict[str, str] = field(default_factory=dict)  # out_request_no → when (for the bill)


@dataclass
class AlipayTransfer:
    out_biz_no: str
    trans_amount: str
    payee: dict[str, Any]
    status: str  # SUCCESS | DEALING | FAIL | REFUND
    error_code: str = ""
    order_id: str = field(default_factory=lambda: "2026" + uuid.uuid4().hex[:28])
    submits: int = 1
    trans_date: str = field(default_factory=lambda: now_text())  # Beijing: when the money left


@dataclass
class SentNotify:
    params: dict[str, str]
    status_code: int
    body: str


class FakeAlipay:
    def __init__(self, app_id: str, app_public_key: rsa.RSAPublicKey, seller_id: str) -> None:
        self.app_id, self.seller_id = app_id, seller_id
        self.app_public_key = app_public_key
        self.key = new_key()  # the fake's "Alipay" private key
        self.trades: dict[str, Trade] = {}
        self.notify = "send"  # or "drop": the buyer pays, no notify arrives
        self.failing: set[str] = set()  # methods answered with 20000 (Alipay unsure: ask again)
        self.escape_slashes = True
        self.tamper: dict[str, Any] = {}  # fields forced into every 10000 answer (a confused gateway)
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method, biz_content) of every verified request
        self.sent: list[SentNotify] = []
        self.transfers: dict[str, AlipayTransfer] = {}  # out_biz_no → the one transfer under it
        # What the next new transfer does: "SUCCESS", "DEALING", "REFUND", or "PAYEE_…" (a payee refusal);
        # "lost": made, but the caller is told 20000 (the answer lost on the way back).
        self.transfer_mode = "SUCCESS"
        self._tasks: set[asyncio.Task] = set()
        self.more_methods: dict[str, Any] = {}  # method → handler(biz, params): other products (bills)
        self.origin = ""  # where the fake is served, seen on its last request
        self.app = Starlette(routes=[Route("/gateway.do", self._gateway, methods=["GET", "POST"])])

    @property
    def public_key_text(self) -> str:
        return public_base64(self.key)

    # ---- the gateway ----

    async def _gateway(self, request: Request) -> Response:
        params = dict(parse_qsl(request.url.query, keep_blank_values=True))
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        method = params.get("method", "")
        response_key = method.replace(".", "_") + "_response" if method else "error_response"
        problem = self._check_request(params)
        if problem:
            return self._answer(
                "error_response",
                {"code": "40002", "msg": "Invalid Arguments", "sub_code": problem, "sub_msg": "参数有误"},
            )
        biz = json.loads(params["biz_content"])
        self.calls.append((method, biz))
        self.origin = str(request.base_url).rstrip("/")
        if method == "alipay.trade.page.pay" and request.method == "GET":
            return self._open_page(biz, params)
        handler = {
            "alipay.trade.precreate": self._precreate,
            "alipay.trade.query": self._query,
            "alipay.trade.close": self._close,
            "alipay.trade.refund": self._refund,
            "alipay.fund.trans.uni.transfer": self._transfer,
            "alipay.fund.trans.common.query": self._transfer_query,
            **self.more_methods,
        }.get(method)
        if handler is None or request.method != "POST":
            return self._answer(
                "error_response", {"code": "40004", "msg": "Business Failed", "sub_code": "isv.invalid-method"}
            )
        if method in self.failing:
            return self._answer(
                response_key,
                {
                    "code": "20000",
                    "msg": "Service Currently Unavailable",
                    "sub_code": "isp.unknow-error",
                    "sub_msg": "系统繁忙",
                },
            )
        return self._answer(response_key, handler(biz, params))

    def _check_request(self, params: dict[str, str]) -> str:
        if params.get("app_id") != self.app_id:
            return "isv.invalid-app-id"
        if params.get("sign_type") != "RSA2" or params.get("charset", "utf-8").lower() != "utf-8":
            return "isv.invalid-signature-type"
        try:
            datetime.strptime(params.get("timestamp", ""), FORMAT)
            json.loads(params.get("biz_content", ""))
        except ValueError:
            return "isv.invalid-timestamp-or-biz"
        signed = content(params, exclude=("sign",))  # sign_type is signed in requests
        if not rsa2_ok(self.app_public_key, signed.encode(), params.get("sign", "")):
            return "isv.invalid-signature"
        return ""

    def _answer(self, key: str, body: dict[str, Any]) -> Response:
        if body.get("code") == "10000":
            body = {**body, **self.tamper}
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        if self.escape_slashes:
            text = text.replace("/", "\\/")
        raw = f'{{"{key}":{text},"sign":"{rsa2(self.key, text.encode())}"}}'
        return Response(raw.encode(), media_type="text/html;charset=utf-8")  # as Alipay labels it

    def _open_page(self, biz: dict[str, Any], params: dict[str, str]) -> Response:
        trade = self.trades.get(biz["out_trade_no"])
        if trade is None:
            self.trades[biz["out_trade_no"]] = Trade(
                biz["out_trade_no"], biz["total_amount"], biz["subject"], params.get("notify_url", ""), "WAIT_BUYER_PAY"
            )
        return HTMLResponse("<html><body>收银台</body></html>")

    def _precreate(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        trade = self.trades.setdefault(
            biz["out_trade_no"],
            Trade(biz["out_trade_no"], biz["total_amount"], biz["subject"], params.get("notify_url", ""), "PRECREATED"),
        )
        if trade.total_amount != biz["total_amount"]:
            return _failed("ACQ.CONTEXT_INCONSISTENT")
        return {
            "code": "10000",
            "msg": "Success",
            "out_trade_no": trade.out_trade_no,
            "qr_code": f"https://qr.alipay.com/bax0{trade.trade_no[-16:]}",
        }

    def _query(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        trade = self.trades.get(biz.get("out_trade_no", ""))
        if trade is None or trade.status == "PRECREATED":
            return _failed("ACQ.TRADE_NOT_EXIST")
        answer = {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "159****5620",
            "trade_status": trade.status,
            "total_amount": trade.total_amount,
            "buyer_pay_amount": "0.00",
            "point_amount": "0.00",
            "invoice_amount": "0.00",
            "receipt_amount": "0.00",
        }
        if trade.gmt_payment:
            answer.update(
                send_pay_date=trade.gmt_payment, buyer_pay_amount=trade.total_amount, receipt_amount=trade.total_amount
            )
        return answer

    def _close(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        trade = self.trades.get(biz.get("out_trade_no", ""))
        if trade is None or trade.status == "PRECREATED":
            if trade is not None:
                trade.status = "TRADE_CLOSED"  # the code can no longer be scanned
            return _failed("ACQ.TRADE_NOT_EXIST")
        if trade.status != "WAIT_BUYER_PAY":
            return _failed("ACQ.TRADE_STATUS_ERROR")
        trade.status = "TRADE_CLOSED"
        return {"code": "10000", "msg": "Success", "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    def _refund(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        trade = self.trades.get(biz.get("out_trade_no", ""))
        if trade is None or trade.status == "PRECREATED":
            return _failed("ACQ.TRADE_NOT_EXIST")
        request_no = biz.get("out_request_no") or trade.out_trade_no
        amount = Decimal(biz["refund_amount"])
        fund_change = "N"
        if request_no not in trade.refunds:
            if trade.status not in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                return _failed("ACQ.TRADE_STATUS_ERROR")
            if trade.refund_fee + amount > Decimal(trade.total_amount):
                return _failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
            trade.refunds[request_no] = amount
            trade.refunded_at[request_no] = now_text()
            trade.refund_fee += amount
            fund_change = "Y"
            full = trade.refund_fee == Decimal(trade.total_amount)
            if full:
                trade.status = "TRADE_CLOSED"
            self._send_later(
                trade,
                refund_fee=f"{trade.refund_fee:.2f}",
                gmt_refund=now_text() + ".000",
                out_biz_no=request_no,
                gmt_close=now_text() if full else "",
            )
        return {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "159****5620",
            "fund_change": fund_change,
            "refund_fee": f"{trade.refund_fee:.2f}",
            "gmt_refund_pay": now_text(),
        }

    def _transfer(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        if biz.get("product_code") != "TRANS_ACCOUNT_NO_PWD" or biz.get("biz_scene") != "DIRECT_TRANSFER":
            return _failed("INVALID_PARAMETER")
        known = self.transfers.get(biz["out_biz_no"])
        if known is not None:  # idempotent on out_biz_no: the same transfer, never a second one
            if known.trans_amount != biz["trans_amount"] or known.payee != biz["payee_info"]:
                return _failed("PARAM_ILLEGAL")  # the same number with other parameters is refused
            known.submits += 1
            return self._transfer_answer(known)
        mode = self.transfer_mode
        if mode.startswith("PAYEE_"):
            return _failed(mode)  # refused at once: no transfer exists under this number
        status = "SUCCESS" if mode == "lost" else mode
        transfer = AlipayTransfer(biz["out_biz_no"], biz["trans_amount"], biz["payee_info"], status)
        self.transfers[transfer.out_biz_no] = transfer
        if mode == "lost":
            return {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"}
        return self._transfer_answer(transfer)

    def _transfer_query(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        transfer = self.transfers.get(biz.get("out_biz_no", ""))
        if transfer is None:
            return _failed("ORDER_NOT_EXIST")
        answer = self._transfer_answer(transfer)
        if transfer.status == "FAIL":
            answer.update(error_code=transfer.error_code, fail_reason=transfer.error_code.lower())
        return answer

    @staticmethod
    def _transfer_answer(transfer: "AlipayTransfer") -> dict[str, Any]:
        return {
            "code": "10000",
            "msg": "Success",
            "out_biz_no": transfer.out_biz_no,
            "order_id": transfer.order_id,
            "pay_fund_order_id": transfer.order_id[::-1],
            "status": transfer.status,
            "trans_date": now_text(),
            "trans_amount": transfer.trans_amount,
        }

    # ---- the buyer and the notifies ----

    def scan(self, out_trade_no: str) -> Trade:
        """The buyer scans a precreated code: now the trade exists, waiting for payment."""
        trade = self.trades[out_trade_no]
        if trade.status == "PRECREATED":
            trade.status = "WAIT_BUYER_PAY"
        return trade

    async def pay(self, out_trade_no: str) -> SentNotify | None:
        """The buyer pays; the notify goes out (unless dropped) and its answer is returned."""
        trade = self.scan(out_trade_no)
        assert trade.status == "WAIT_BUYER_PAY", f"cannot pay a {trade.status} trade"
        trade.status, trade.gmt_payment = "TRADE_SUCCESS", now_text()
        return await self.send(trade)

    async def finish(self, out_trade_no: str) -> SentNotify | None:
        """The refund period ends: TRADE_SUCCESS becomes TRADE_FINISHED and notifies again."""
        trade = self.trades[out_trade_no]
        trade.status = "TRADE_FINISHED"
        return await self.send(trade)

    async def send(self, trade: Trade, **extra: str) -> SentNotify | None:
        if self.notify == "drop":
            return None
        params = self.sign(self.notify_params(trade, **extra))
        return await self.post(trade.notify_url, self.form(params), params)

    async def post(self, url: str, body: bytes, params: dict[str, str]) -> SentNotify:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
            )
        sent = SentNotify(params, answer.status_code, answer.text)
        self.sent.append(sent)
        return sent

    def _send_later(self, trade: Trade, **extra: str) -> None:
        task = asyncio.get_running_loop().create_task(self.send(trade, **extra))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the notifies sent in the background (after a refund)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def notify_params(self, trade: Trade, **extra: str) -> dict[str, str]:
        params = {
            "notify_time": now_text(),
            "notify_type": "trade_status_sync",
            "notify_id": uuid.uuid4().hex + "0a",
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_id": "2088102177846880",
            "buyer_logon_id": "159****5620",
            "seller_id": self.seller_id,
            "seller_email": "shop@example.com",
            "trade_status": trade.status,
            "total_amount": trade.total_amount,
            "receipt_amount": trade.total_amount,
            "buyer_pay_amount": trade.total_amount,
            "invoice_amount": trade.total_amount,
            "subject": trade.subject,
            "gmt_create": trade.gmt_create,
            "gmt_payment": trade.gmt_payment,
            "fund_bill_list": json.dumps([{"amount": trade.total_amount, "fundChannel": "ALIPAYACCOUNT"}]),
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v}

    def sign(self, params: dict[str, str], key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        """Sign a notify as Alipay does: without sign and sign_type, in the notify's charset."""
        charset = params.get("charset", "utf-8")
        signed = content(params, exclude=("sign", "sign_type"))
        return {**params, "sign": rsa2(key or self.key, signed.encode(charset))}

    @staticmethod
    def form(params: dict[str, str] | list[tuple[str, str]]) -> bytes:
        items = params.items() if isinstance(params, dict) else params
        charset = dict(items).get("charset", "utf-8")
        return "&".join(
            f"{quote_plus(k, encoding=charset)}={quote_plus(v, encoding=charset)}" for k, v in items
        ).encode("ascii")


def _failed(sub_code: str) -> dict[str, str]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_code.lower()}
