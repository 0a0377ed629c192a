"""Stripe Connect as a payout rail: a transfer from the platform's balance to the merchant's
connected account (`POST /v1/transfers`), found again by its `transfer_group`, the withdrawal id.

A transfer is a move between Stripe balances: it is there or it is not, so the query lists the
transfers of the group. An Idempotency-Key (the withdrawal id) makes a retried submit the same
transfer for 24 hours; after that only the list tells, which is why the workflow queries before it
submits again. The payout from the connected account to its bank is the merchant's own (its Stripe
dashboard). Formats and sources: docs/payout-rails.md.
"""

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from miaofa import steps as s
from miaofa.gateways.base import GatewayError
from miaofa.gateways.config import StripeSettings
from miaofa.gateways.stripe import StripeGateway
from miaofa.gateways.stripe_bill import pages, window
from miaofa.payouts.rails import RailTransfer, Transfer

ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]{6,64}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
# Stripe error codes that say this account cannot take it: definitive, the money comes back.
DEFINITIVE = {
    "resource_missing": "the Stripe account does not exist or is not connected to the platform",
    "account_invalid": "the Stripe account is not valid",
    "insufficient_capabilities_for_transfer": "the Stripe account cannot receive transfers yet (its onboarding)",
    "transfers_not_allowed": "the Stripe account cannot receive transfers",
}


class StripeRail:
    name = "stripe"
    can_cancel = False  # a transfer is done at once; a reversal is a new movement, not a cancel
    has_statement = True  # GET /v1/transfers by `created`: live, so never "not ready"

    def __init__(self, settings: StripeSettings, client: httpx.AsyncClient | None = None) -> None:
        self._stripe = StripeGateway(settings, client)

    async def submit(self, transfer: Transfer) -> s.TransferAnswer:
        if not ACCOUNT.match(transfer.account):  # refused before anything is sent: nothing left
            return s.TransferAnswer(
                s.TRANSFER_FAILED, code="account", reason="the destination is not a Stripe account id", definitive=True
            )
        if not CURRENCY.match(transfer.currency):
            return s.TransferAnswer(s.TRANSFER_FAILED, code="currency", reason="not a currency", definitive=True)
        form = {
            "amount": str(transfer.amount_cents),
            "currency": transfer.currency.lower(),
            "destination": transfer.account,
            "transfer_group": transfer.number,
            "description": "Miaofa withdrawal",
            "metadata[withdrawal_id]": transfer.number,
        }
        try:
            response = await self._stripe.send("payout submit", "POST", "/v1/transfers", form, transfer.number)
        except GatewayError:
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="transport", reason="Stripe did not answer")
        if response.status_code == 200:
            data = _json(response)
            if data is None or data.get("transfer_group") != transfer.number:
                return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="unreadable", reason="Stripe's answer was unclear")
            return _state(data)
        error = _error(response)
        code = str(error.get("code") or "")[:64]
        if response.status_code == 400 and code in DEFINITIVE:
            if code == "resource_missing" and error.get("param") != "destination":
                return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=code, reason="Stripe refused the call")
            return s.TransferAnswer(s.TRANSFER_FAILED, code=code, reason=DEFINITIVE[code], definitive=True)
        # 401 (a key rolled), 409 (the same key in flight), 429, 5xx, balance_insufficient, an idempotency
        # mismatch: maybe sent, maybe not; the query answers.
        kind = code or str(error.get("type") or response.status_code)
        return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=kind[:64], reason="Stripe refused the call")

    async def query(self, number: str) -> s.TransferAnswer:
        try:
            response = await self._stripe.send(
                "payout query", "GET", "/v1/transfers", params={"transfer_group": number, "limit": "3"}
            )
        except GatewayError:
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="transport", reason="Stripe did not answer")
        data = _json(response) if response.status_code == 200 else None
        found = data.get("data") if data is not None else None
        if not isinstance(found, list):
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=str(response.status_code), reason="Stripe was unclear")
        ours = [t for t in found if isinstance(t, dict) and t.get("transfer_group") == number]
        if not ours:
            return s.TransferAnswer(s.TRANSFER_NOT_FOUND, code="none", reason="Stripe has no such transfer")
        if len(ours) > 1:  # never by our hand: a person must look before anything else moves
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="several_transfers", reason="Stripe shows two transfers")
        return _state(ours[0])

    async def cancel(self, number: str) -> s.TransferAnswer:
        return await self.query(number)

    async def aclose(self) -> None:
        await self._stripe.aclose()

    async def statement(self, start: datetime, end: datetime, ours: Sequence[str] = ()) -> list[RailTransfer]:
        """Every transfer the platform made in [start, end), ours or not (GET /v1/transfers, paged)."""

        async def get(op: str, method: str, path: str, params: dict[str, str]) -> httpx.Response:
            return await self._stripe.send(f"payout {op}", method, path, params=params)

        found = []
        async for item in pages(get, "/v1/transfers", window(start, end)):
            created, transfer = _record(item)
            if start.timestamp() <= created < end.timestamp():  # the list asked for whole seconds
                found.append(transfer)
        return found


def _state(transfer: dict[str, Any]) -> s.TransferAnswer:
    if transfer.get("object") != "transfer" or not str(transfer.get("id", "")).startswith("tr_"):
        return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="unreadable", reason="Stripe's answer was unclear")
    if transfer.get("reversed"):
        return s.TransferAnswer(s.TRANSFER_RETURNED, code="reversed", reason="the transfer was reversed at Stripe")
    return s.TransferAnswer(s.TRANSFER_PAID, code="transfer")


def _record(item: dict[str, Any]) -> tuple[int, RailTransfer]:
    """A listed transfer under our number (its transfer_group; a transfer of another integration
    keeps its tr_ id, so it is found as unknown), with what it still pays after reversals."""
    currency = item.get("currency")
    try:
        created, amount, reversed_ = (_whole(item.get(key, 0)) for key in ("created", "amount", "amount_reversed"))
    except ValueError:
        raise GatewayError("stripe payout statement: malformed transfer") from None
    if not isinstance(currency, str) or amount <= 0:
        raise GatewayError("stripe payout statement: malformed transfer")
    group = item.get("transfer_group")
    number = group if isinstance(group, str) and group else str(item.get("id", ""))
    if item.get("reversed") or reversed_ >= amount:
        return created, RailTransfer(number[:64], s.TRANSFER_RETURNED, amount, currency.upper())
    return created, RailTransfer(number[:64], s.TRANSFER_PAID, amount - reversed_, currency.upper())


def _whole(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("not a whole number")
    return value


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error(response: httpx.Response) -> dict[str, Any]:
    data = _json(response) or {}
    error = data.get("error")
    return error if isinstance(error, dict) else {}
