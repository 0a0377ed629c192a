"""The bill APIs on the protocol fakes, serving each day's trades in the gateway's real bill format
(tests/helpers/fakes/bills.py): Alipay's bill_download_url and zip, WeChat Pay's tradebill with its
hash and download, Stripe's balance transactions and Checkout Session lists, paged."""

import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers.fakes.alipay import SHANGHAI, FakeAlipay, _failed
from tests.helpers.fakes.bills import AlipayAccountRow as AccountRow
from tests.helpers.fakes.bills import (
    AlipayRow,
    WechatFundRow,
    WechatRow,
    alipay_account_zip,
    alipay_zip,
    wechat_download,
    wechat_fund,
    wechat_trade,
)
from tests.helpers.fakes.stripe import FakeStripe
from tests.helpers.fakes.wechat import FakeWechat
from tests.helpers.fakes.wechat_transfers import TransferBills


def _beijing_day(text: str) -> date:
    return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").date()


def _fee(amount: Decimal, places: str) -> str:
    return str((amount * Decimal("0.006")).quantize(Decimal(places), rounding=ROUND_HALF_UP))


class AlipayBills:
    """alipay.data.dataservice.bill.downloadurl.query, then the zip at the link (valid once, as Alipay's
    30-second links are for practical purposes). Days in `not_out` answer isp.bill_not_exist."""

    def __init__(self, fake: FakeAlipay) -> None:
        self.fake = fake
        self.not_out: set[str] = set()
        self.downloads = 0
        self.mangle: Callable[[bytes], bytes] | None = None  # what happens to a zip on its way
        self._links: dict[str, bytes] = {}
        self.extra: list[AccountRow] = []  # movements of the account made elsewhere (by hand, another app)
        fake.more_methods["alipay.data.dataservice.bill.downloadurl.query"] = self._url
        fake.app.router.routes.append(Route("/downloadBillFile.resource", self._download, methods=["GET"]))

    def rows(self, day: date) -> list[AlipayRow]:
        rows = []
        for trade in self.fake.trades.values():
            amount = Decimal(trade.total_amount)
            if trade.gmt_payment and _beijing_day(trade.gmt_payment) == day:
                fee = "-" + _fee(amount, "0.01")
                rows.append(
                    AlipayRow(trade.trade_no, trade.out_trade_no, "交易", f"{amount:.2f}", trade.gmt_payment, fee=fee)
                )
            for request_no, refunded in trade.refunds.items():
                at = trade.refunded_at.get(request_no, "")
                if at and _beijing_day(at) == day:
                    rows.append(
                        AlipayRow(
                            trade.trade_no,
                            trade.out_trade_no,
                            "退款",
                            f"-{refunded:.2f}",
                            at,
                            request_no=request_no,
                            fee=_fee(refunded, "0.01"),
                        )
                    )
        return sorted(rows, key=lambda row: row.finished)

    def account_rows(self, day: date) -> list[AccountRow]:
        """The account bill: each transfer out that Alipay paid, plus what the test adds (`extra`)."""
        rows = [
            AccountRow(t.order_id[-14:], t.out_biz_no, "转账", t.trans_date, expense=f"-{Decimal(t.trans_amount):.2f}")
            for t in self.fake.transfers.values()
            if t.status in ("SUCCESS", "REFUND") and _beijing_day(t.trans_date) == day
        ]
        return sorted(rows + [r for r in self.extra if _beijing_day(r.at) == day], key=lambda row: row.at)

    def _url(self, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        if biz.get("bill_type") not in ("trade", "signcustomer"):
            return _failed("isv.invalid-arguments")
        try:
            day = date.fromisoformat(biz.get("bill_date", ""))
        except ValueError:
            return _failed("isv.invalid-arguments")
        if biz["bill_date"] in self.not_out or day >= datetime.now(SHANGHAI).date():
            return _failed("isp.bill_not_exist")
        token = secrets.token_hex(16)
        if biz["bill_type"] == "trade":
            data, kind = alipay_zip(self.fake.seller_id, day, self.rows(day)), "trade"
        else:  # the account bill's link says bizType=fnd
            data, kind = alipay_account_zip(self.fake.seller_id, day, self.account_rows(day)), "fnd"
        self._links[token] = self.mangle(data) if self.mangle else data
        url = f"{self.fake.origin}/downloadBillFile.resource?bizType={kind}&fileType=csv.zip&bizDates={day:%Y%m%d}"
        return {"code": "10000", "msg": "Success", "bill_download_url": f"{url}&token={token}"}

    async def _download(self, request: Request) -> Response:
        data = self._links.pop(request.query_params.get("token", ""), None)
        if data is None:
            return Response("链接已失效", status_code=404)
        self.downloads += 1
        return Response(data, media_type="application/oct-stream")


class WechatBills:
    """GET /v3/bill/tradebill (signed JSON: hash and link) and the file at the link (unsigned)."""

    def __init__(self, fake: FakeWechat, transfers: TransferBills | None = None) -> None:
        self.fake = fake
        self.transfers = transfers  # 商家转账 bills: the fund-flow bill's 支出 rows
        self.creating: set[str] = set()  # days answering STATEMENT_CREATING
        self.corrupt = False  # the download does not match its hash
        self.extra_funds: list[WechatFundRow] = []  # movements made elsewhere
        self._files: dict[str, bytes] = {}
        fake.more_routes += [
            ("/v3/bill/tradebill", self._tradebill, "GET"),
            ("/v3/bill/fundflowbill", self._fundflowbill, "GET"),
            ("/v3/billdownload/file", self._download, "GET"),
        ]

    def rows(self, day: date) -> list[WechatRow]:
        rows = []
        for trade in self.fake.trades.values():
            total = f"{Decimal(trade.total).scaleb(-2):.2f}"
            if trade.success_time and _beijing_day(trade.success_time.replace("T", " ")) == day:
                fee = _fee(Decimal(total), "0.00001")
                rows.append(
                    WechatRow(trade.success_time[:19].replace("T", " "), trade.out_trade_no, "SUCCESS", total, fee=fee)
                )
            for refund in trade.refunds.values():
                at = refund["create_time"][:19].replace("T", " ")
                if _beijing_day(at) == day:
                    refunded = f"{Decimal(refund['amount']['refund']).scaleb(-2):.2f}"
                    rows.append(
                        WechatRow(
                            at,
                            trade.out_trade_no,
                            "REFUND",
                            total,
                            refunded,
                            refund["out_refund_no"],
                            fee="-" + _fee(Decimal(refunded), "0.00001"),
                        )
                    )
        return sorted(rows, key=lambda row: row.at)

    def fund_rows(self, day: date) -> list[WechatFundRow]:
        """The basic account's 商家转账 movements: each bill WeChat paid is money out under its transfer_bill_no."""
        rows = [
            WechatFundRow(
                b.at, b.transfer_bill_no, "商家转账", "企业付款", False, f"{Decimal(b.amount).scaleb(-2):.2f}"
            )
            for b in (self.transfers.bills.values() if self.transfers else [])
            if b.state == "SUCCESS" and _beijing_day(b.at) == day
        ]
        return sorted(rows + [r for r in self.extra_funds if _beijing_day(r.at) == day], key=lambda row: row.at)

    def _tradebill(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._bill(request, self.rows, wechat_trade)

    def _fundflowbill(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if request.query_params.get("account_type", "BASIC") != "BASIC":
            return 400, {"code": "PARAM_ERROR", "message": "参数错误"}
        return self._bill(request, self.fund_rows, wechat_fund)

    def _bill(self, request: Request, rows_of: Callable[[date], list[Any]], text_of: Callable[[Any], str]) -> Any:
        query = request.query_params
        try:
            day = date.fromisoformat(query.get("bill_date", ""))
        except ValueError:
            return 400, {"code": "PARAM_ERROR", "message": "参数错误"}
        if str(day) in self.creating:
            return 400, {"code": "STATEMENT_CREATING", "message": "账单生成中"}
        rows = rows_of(day)
        if day >= datetime.now(SHANGHAI).date() or not rows:
            return 400, {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"}
        text, gzipped = text_of(rows), query.get("tar_type") == "GZIP"
        body, sha1 = wechat_download(text, gzipped)
        if self.corrupt:  # a file changed on its way: a row's amount, the hash still the original's
            body = wechat_download(text.replace("`0.", "`1.", 1), gzipped)[0]
        token = secrets.token_urlsafe(24)
        self._files[token] = body
        origin = str(request.base_url).rstrip("/")
        return 200, {
            "hash_type": "SHA1",
            "hash_value": sha1,
            "download_url": f"{origin}/v3/billdownload/file?token={token}",
        }

    def _download(self, request: Request, data: dict[str, Any]) -> Response:
        body = self._files.pop(request.query_params.get("token", ""), None)
        if body is None:
            return JSONResponse({"code": "RESOURCE_NOT_EXISTS", "message": "文件不存在"}, status_code=404)
        return Response(body, media_type="application/octet-stream")  # WeChat does not sign the file


class StripeBills:
    """GET /v1/balance_transactions and GET /v1/checkout/sessions: newest first, `limit`, `starting_after`,
    `has_more`, `created[gte]`/`created[lt]`; balance transactions expand their source on request."""

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.pages = 0
        fake.app.router.routes.insert(0, Route("/v1/balance_transactions", self._balance, methods=["GET"]))
        fake.app.router.routes.insert(0, Route("/v1/checkout/sessions", self._sessions, methods=["GET"]))

    def transactions(self) -> list[dict[str, Any]]:
        found = []
        for charge in self.fake.charges.values():
            fee = (Decimal(charge["amount"]) * Decimal("0.029")).quantize(Decimal(1), ROUND_HALF_UP) + 30
            found.append(self._bt("charge", charge, int(fee)))
        for refund in self.fake.refunds.values():
            found.append(self._bt("refund", refund, 0))
        return found

    @staticmethod
    def _bt(kind: str, source: dict[str, Any], fee: int) -> dict[str, Any]:
        sign = 1 if kind == "charge" else -1
        return {
            "id": "txn_" + source["id"][3:],
            "object": "balance_transaction",
            "type": kind,
            "reporting_category": kind,
            "amount": sign * source["amount"],
            "fee": fee,
            "net": sign * source["amount"] - fee,
            "currency": source["currency"],
            "created": source["created"],
            "available_on": source["created"] + 2 * 86400,
            "status": "pending",
            "source": source["id"],
        }

    async def _balance(self, request: Request) -> JSONResponse:
        if (refused := await self.fake._guard(request)) is not None:
            return refused
        expand = "data.source" in request.query_params.getlist("expand[]")
        items = self.transactions()
        if expand:
            sources = {**self.fake.charges, **self.fake.refunds}
            items = [{**item, "source": sources[item["source"]]} for item in items]
        return self._page(request, items, "/v1/balance_transactions")

    async def _sessions(self, request: Request) -> JSONResponse:
        if (refused := await self.fake._guard(request)) is not None:
            return refused
        query, items = request.query_params, list(self.fake.sessions.values())
        if "status" in query:
            items = [s for s in items if s["status"] == query["status"]]
        if "payment_intent" in query:
            items = [s for s in items if s["payment_intent"] == query["payment_intent"]]
        return self._page(request, items, "/v1/checkout/sessions")

    def _page(self, request: Request, items: list[dict[str, Any]], url: str) -> JSONResponse:
        query = request.query_params
        limit = int(query.get("limit", "10"))
        if not 1 <= limit <= 100:
            return JSONResponse({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer"}}, 400)
        if "created[gte]" in query:
            items = [i for i in items if i["created"] >= int(query["created[gte]"])]
        if "created[lt]" in query:
            items = [i for i in items if i["created"] < int(query["created[lt]"])]
        items.sort(key=lambda i: (i["created"], i["id"]), reverse=True)  # newest first, as Stripe lists
        if "starting_after" in query:
            ids = [i["id"] for i in items]
            items = items[ids.index(query["starting_after"]) + 1 :]
        self.pages += 1
        return JSONResponse({"object": "list", "url": url, "has_more": len(items) > limit, "data": items[:limit]})


def utc_seconds(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp())
