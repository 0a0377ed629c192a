"""A local epusdt server over loopback: create-transaction, check-status, and controls to pay (a
status-2 callback, as assimon/epusdt sends it), to send BEpusdt's status 1 and 3 callbacks, or to
drop callbacks.

Like the Go server, it reads JSON numbers as float64 and writes them with FormatFloat(f, 'f', -1, 64):
that is done here from the float (its shortest repr), apart from the adapter's Decimal path.
"""

import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def go_float(value: float) -> str:
    """strconv.FormatFloat(value, 'f', -1, 64): the shortest digits that read back, never an exponent."""
    text = repr(value)
    if "e" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def go_sign(fields: dict[str, Any], token: str) -> str:
    """epusdt's sign.Get over a decoded JSON map: numbers are float64, null and "" skipped, the k=v
    strings sorted, joined with &, the token appended, md5."""
    parts = []
    for key, value in fields.items():
        if key == "signature" or value is None or value == "":
            continue
        parts.append(f"{key}={go_float(float(value)) if isinstance(value, (int, float)) else value}")
    return hashlib.md5(("&".join(sorted(parts)) + token).encode()).hexdigest()


def go_json(fields: dict[str, Any]) -> bytes:
    """json.Marshal of the callback struct: floats without a trailing .0, as Go writes them."""
    parts = [
        f"{json.dumps(k)}:{go_float(v) if isinstance(v, float) else json.dumps(v, ensure_ascii=False)}"
        for k, v in fields.items()
    ]
    return ("{" + ",".join(parts) + "}").encode()


@dataclass
class Trade:
    trade_id: str
    order_id: str
    amount: float  # CNY, a float64 as in the Go server
    actual_amount: float  # USDT
    token: str
    notify_url: str
    status: int = 1  # 1 waiting, 2 paid, 3 expired
    block_transaction_id: str = ""


class FakeEpusdt:
    def __init__(self, api_token: str, rate: str = "7.2") -> None:
        self.api_token = api_token
        self.rate = Decimal(rate)
        self.url = ""  # set once served
        self.trades: dict[str, Trade] = {}
        self.drop_callbacks = False
        self.sent: list[bytes] = []  # every callback body, in order
        self.checks = 0
        self._ids = itertools.count(202411250001)
        self._http = httpx.AsyncClient(timeout=10)
        self.app = Starlette(
            routes=[
                Route("/api/v1/order/create-transaction", self._create, methods=["POST"]),
                Route("/pay/check-status/{trade_id}", self._check_status, methods=["GET"]),
                Route("/pay/{trade_id}", self._pay_control, methods=["POST"]),
            ]
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def trade_of(self, order_id: str) -> Trade:
        return next(trade for trade in self.trades.values() if trade.order_id == order_id)

    def callback_fields(self, trade: Trade, api_token: str | None = None, **changes: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "trade_id": trade.trade_id,
            "order_id": trade.order_id,
            "amount": trade.amount,
            "actual_amount": trade.actual_amount,
            "token": trade.token,
            "block_transaction_id": trade.block_transaction_id,
            "status": trade.status,
            **changes,
        }
        return {**fields, "signature": go_sign(fields, self.api_token if api_token is None else api_token)}

    async def pay(self, trade_id: str) -> httpx.Response | None:
        """USDT arrives: the trade is paid and its status-2 callback sent, unless callbacks are dropped."""
        trade = self.trades[trade_id]
        trade.status, trade.block_transaction_id = 2, f"0x{hashlib.sha256(trade_id.encode()).hexdigest()}"
        return await self._send(trade, go_json(self.callback_fields(trade)))

    async def send_status(self, trade_id: str, status: int) -> httpx.Response | None:
        """BEpusdt's other callbacks: 1 every minute while waiting, 3 on expiry (actual_amount a string)."""
        trade = self.trades[trade_id]
        trade.status = status
        fields = self.callback_fields(trade, actual_amount=go_float(trade.actual_amount))
        return await self._send(trade, go_json(fields))

    async def post(self, trade: Trade, body: bytes) -> httpx.Response:
        return await self._http.post(trade.notify_url, content=body, headers={"Content-Type": "application/json"})

    async def _send(self, trade: Trade, body: bytes) -> httpx.Response | None:
        self.sent.append(body)
        return None if self.drop_callbacks else await self.post(trade, body)

    # ---- the server's API ----

    async def _create(self, request: Request) -> Response:
        try:
            fields = json.loads(await request.body())
        except ValueError:
            return _fail(10009, "无法解析请求参数")
        if not isinstance(fields, dict) or fields.get("signature") != go_sign(fields, self.api_token):
            return _fail(401, "签名认证错误")
        if any(trade.order_id == fields["order_id"] for trade in self.trades.values()):
            return _fail(10002, "支付交易已存在，请勿重复创建")
        amount = float(fields["amount"])
        actual = float((Decimal(go_float(amount)) / self.rate).quantize(Decimal("0.0001")))
        trade = Trade(
            str(next(self._ids)),
            fields["order_id"],
            amount,
            actual,
            "TFakeWalletAddress0000000000000001",
            fields["notify_url"],
        )
        self.trades[trade.trade_id] = trade
        return JSONResponse(
            {
                "status_code": 200,
                "message": "success",
                "request_id": "",
                "data": {
                    "trade_id": trade.trade_id,
                    "order_id": trade.order_id,
                    "amount": amount,
                    "actual_amount": actual,
                    "token": trade.token,
                    "expiration_time": int(time.time()) + 600,
                    "payment_url": f"{self.url}/pay/checkout-counter/{trade.trade_id}",
                },
            }
        )

    async def _check_status(self, request: Request) -> Response:
        self.checks += 1
        trade = self.trades.get(request.path_params["trade_id"])
        if trade is None:
            return _fail(10008, "订单不存在")
        return JSONResponse(
            {
                "status_code": 200,
                "message": "success",
                "request_id": "",
                "data": {"trade_id": trade.trade_id, "status": trade.status},
            }
        )

    async def _pay_control(self, request: Request) -> Response:
        sent = await self.pay(request.path_params["trade_id"])
        return JSONResponse({"callback": "dropped" if sent is None else sent.text})


def _fail(code: int, message: str) -> Response:
    return JSONResponse({"status_code": code, "message": message, "data": None, "request_id": ""})
