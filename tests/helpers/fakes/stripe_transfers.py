"""Stripe Connect transfers on the fake Stripe: `POST /v1/transfers` (idempotent on its key, through
the fake's own idempotency) and `GET /v1/transfers` (by transfer_group, or by created and paged).
Only the connected accounts the test names exist; `balance` is the platform's available balance per
currency; `lost` makes the next transfer and answers 500, as if the answer never came back."""

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.helpers.fakes.stripe import FakeStripe, _error


class StripeTransfers:
    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.transfers: dict[str, dict[str, Any]] = {}
        self.accounts: set[str] = set()  # connected accounts that can take transfers
        self.restricted: set[str] = set()  # connected, onboarding unfinished
        self.balance: dict[str, int] = {}
        self.lost = False
        self.pages = 0  # list pages served
        fake.app.router.routes += [
            Route("/v1/transfers", self._create, methods=["POST"]),
            Route("/v1/transfers", self._list, methods=["GET"]),
        ]

    def connect(self, balance: int = 10**9) -> str:
        account = "acct_" + secrets.token_hex(8)
        self.accounts.add(account)
        self.balance.setdefault("cny", 0)
        self.balance["cny"] += balance
        return account

    def reverse(self, transfer_id: str) -> None:
        transfer = self.transfers[transfer_id]
        transfer["reversed"], transfer["amount_reversed"] = True, transfer["amount"]

    async def _create(self, request: Request) -> JSONResponse:
        answer = await self.fake._idempotently(request, self._new)
        if self.lost and answer.status_code == 200:
            self.lost = False
            return _error(500, "api_error", "An unknown error occurred")
        return answer

    def _new(self, form: dict[str, str]) -> tuple[int, Any]:
        account, currency = form.get("destination", ""), form.get("currency", "")
        if not form.get("amount", "").isdigit() or int(form["amount"]) <= 0:
            return 400, _error(400, "invalid_request_error", "Invalid positive integer", "parameter_invalid_integer")
        amount = int(form["amount"])
        if account not in self.accounts | self.restricted:
            missing = {
                "type": "invalid_request_error",
                "message": f"No such destination: '{account}'",
                "code": "resource_missing",
                "param": "destination",
            }
            return 400, JSONResponse({"error": missing}, status_code=400)
        if account in self.restricted:
            return 400, _error(
                400,
                "invalid_request_error",
                "Your destination account needs to have at least one of the following capabilities enabled: "
                "transfers, crypto_transfers, legacy_payments",
                "insufficient_capabilities_for_transfer",
            )
        if self.balance.get(currency, 0) < amount:
            return 400, _error(400, "invalid_request_error", "Insufficient funds", "balance_insufficient")
        self.balance[currency] -= amount
        transfer = {
            "id": "tr_" + secrets.token_hex(12),
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "currency": currency,
            "destination": account,
            "transfer_group": form.get("transfer_group"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "reversed": False,
            "created": int(self.fake.clock()),
        }
        self.transfers[transfer["id"]] = transfer
        return 200, transfer

    async def _list(self, request: Request) -> JSONResponse:
        if (refused := await self.fake._guard(request)) is not None:
            return refused
        query = request.query_params
        group = query.get("transfer_group")
        found = [t for t in self.transfers.values() if group is None or t["transfer_group"] == group]
        if "created[gte]" in query:
            found = [t for t in found if t["created"] >= int(query["created[gte]"])]
        if "created[lt]" in query:
            found = [t for t in found if t["created"] < int(query["created[lt]"])]
        found.sort(key=lambda t: (t["created"], t["id"]), reverse=True)  # newest first, as Stripe lists
        if "starting_after" in query:
            ids = [t["id"] for t in found]
            found = found[ids.index(query["starting_after"]) + 1 :]
        limit = int(query.get("limit", "10"))
        self.pages += 1
        return JSONResponse(
            {"object": "list", "data": found[:limit], "has_more": len(found) > limit, "url": "/v1/transfers"}
        )
