"""A local 易支付 (epay v1) operator over loopback: submit.php, api.php (order query, refund), and a
"pay" control that marks an order paid and sends the signed GET notify, as 彩虹易支付 does.

Its signing is written apart from the adapter's (the PHP SDK's way: ksort, skip sign, sign_type
and empty values, md5 of the joined string and the key), so each checks the other.
"""

import hashlib
import itertools
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route


def epay_sign(params: dict[str, str], key: str) -> str:
    kept = {k: params[k] for k in sorted(params) if k not in ("sign", "sign_type") and params[k] != ""}
    return hashlib.md5(("&".join(f"{k}={v}" for k, v in kept.items()) + key).encode()).hexdigest()


@dataclass
class EpayOrder:
    trade_no: str
    out_trade_no: str
    type: str
    name: str
    money: str
    notify_url: str
    return_url: str
    status: int = 0  # 0 unpaid, 1 paid
    refunded: Decimal = Decimal(0)


class FakeEpay:
    def __init__(self, pid: str, key: str) -> None:
        self.pid, self.key = pid, key
        self.orders: dict[str, EpayOrder] = {}
        self.drop_notifies = False
        self.sent: list[dict[str, str]] = []  # every notify's fields, signed, in order
        self.queries = 0
        self.refunds: list[dict[str, str]] = []
        self._trade_nos = itertools.count(2024000001)
        self._http = httpx.AsyncClient(timeout=10)
        self.app = Starlette(
            routes=[
                Route("/submit.php", self._submit, methods=["GET", "POST"]),
                Route("/api.php", self._api, methods=["GET", "POST"]),
                Route("/pay/{out_trade_no}", self._pay_control, methods=["POST"]),
            ]
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def notify_fields(self, order: EpayOrder, key: str | None = None, **changes: str) -> dict[str, str]:
        """The signed notify of an order (changes applied before signing)."""
        fields = {
            "pid": self.pid,
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "type": order.type,
            "name": order.name,
            "money": order.money,
            "trade_status": "TRADE_SUCCESS",
            **changes,
        }
        return {**fields, "sign": epay_sign(fields, self.key if key is None else key), "sign_type": "MD5"}

    async def pay(self, out_trade_no: str) -> httpx.Response | None:
        """The buyer pays: the order is paid, and its notify sent unless notifies are dropped."""
        order = self.orders[out_trade_no]
        order.status = 1
        fields = self.notify_fields(order)
        self.sent.append(fields)
        return None if self.drop_notifies else await self.notify(order, fields)

    async def notify(self, order: EpayOrder, fields: dict[str, str], method: str = "GET") -> httpx.Response:
        if method == "GET":
            return await self._http.get(order.notify_url, params=fields)
        return await self._http.post(order.notify_url, data=fields)

    # ---- the operator's pages ----

    async def _submit(self, request: Request) -> Response:
        body = (await request.body()).decode()
        fields = dict(request.query_params) if request.method == "GET" else dict(parse_qsl(body))
        if fields.get("pid") != self.pid or fields.get("sign") != epay_sign(fields, self.key):
            return HTMLResponse("签名校验失败", status_code=400)
        order = self.orders.get(fields["out_trade_no"])
        if order is None:
            order = EpayOrder(
                str(next(self._trade_nos)),
                fields["out_trade_no"],
                fields["type"],
                fields["name"],
                fields["money"],
                fields["notify_url"],
                fields.get("return_url", ""),
            )
            self.orders[order.out_trade_no] = order
        return HTMLResponse(
            f"<p>{escape(order.name)} ¥{escape(order.money)}</p>"
            f'<form method="post" action="/pay/{escape(order.out_trade_no)}">'
            "<button>pay</button></form>"
        )

    async def _pay_control(self, request: Request) -> Response:
        sent = await self.pay(request.path_params["out_trade_no"])
        return JSONResponse({"notify": "dropped" if sent is None else sent.text})

    async def _api(self, request: Request) -> Response:
        act = request.query_params.get("act")
        if act == "order" and request.method == "GET":
            self.queries += 1
            fields = dict(request.query_params)
        elif act == "refund" and request.method == "POST":
            fields = dict(parse_qsl((await request.body()).decode()))
        else:
            return JSONResponse({"code": -5, "msg": "No Act!"})
        if fields.get("pid") != self.pid or fields.get("key") != self.key:
            return JSONResponse({"code": -2, "msg": "KEY校验失败"})
        order = self.orders.get(fields.get("out_trade_no", ""))
        if order is None:
            return JSONResponse({"code": -1, "msg": "订单号不存在"})
        if act == "order":
            return JSONResponse(
                {
                    "code": 1,
                    "msg": "succ",
                    "trade_no": order.trade_no,
                    "out_trade_no": order.out_trade_no,
                    "type": order.type,
                    "pid": self.pid,
                    "name": order.name,
                    "money": order.money,
                    "status": order.status,
                }
            )
        money = Decimal(fields.get("money", "0"))
        if order.status != 1 or money <= 0 or order.refunded + money > Decimal(order.money):
            return JSONResponse({"code": -1, "msg": "退款金额大于订单金额"})
        order.refunded += money
        self.refunds.append(fields)
        return JSONResponse({"code": 1, "msg": "退款成功"})
