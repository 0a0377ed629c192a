"""Payout rails behind one interface: submit a transfer under a number fixed once, query it, cancel it.

Only a whitelist of each rail's failure codes counts as definitive (the payee's account is wrong,
say); anything else the rail answers unclearly, or a timeout, is `unknown`, and unknown is asked
again, never failed. The destination reaches the rail and nothing else: no log line, no error."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from miaofa import steps as s


@dataclass(frozen=True)
class Transfer:
    number: str  # the withdrawal's id: the same number on every try
    amount_cents: int  # what the payee receives (the fee is kept)
    currency: str
    account: str
    name: str


@dataclass(frozen=True)
class RailTransfer:
    """One line of a rail's own record of transfers (for reconciliation)."""

    number: str
    status: str  # a TRANSFER_* status
    amount_cents: int
    currency: str


class RailRecord(Protocol):
    """A rail with its own record of transfers (`has_statement`): the transfers of [start, end).
    `ours` names the withdrawals made or moved then, for a record that names them otherwise. A rail
    with day bills also has `bill_zone` and raises StatementNotReady for a day not out yet."""

    has_statement: bool

    async def statement(self, start: datetime, end: datetime, ours: Sequence[str]) -> list[RailTransfer]: ...


class PayoutRail(Protocol):
    name: str
    can_cancel: bool  # a transfer waiting for the payee's confirmation can be withdrawn

    async def submit(self, transfer: Transfer) -> s.TransferAnswer: ...
    async def query(self, number: str) -> s.TransferAnswer: ...
    async def cancel(self, number: str) -> s.TransferAnswer: ...
    async def aclose(self) -> None: ...


# The simulator's payee-side failures, each definitive, in words the merchant reads.
SIMULATOR_DEFINITIVE = {
    "PAYEE_NAME_MISMATCH": "the name given does not match the account's holder",
    "PAYEE_ACCOUNT_INVALID": "the account does not exist",
    "PAYEE_ACCOUNT_FROZEN": "the payee's account is frozen and cannot receive money",
}
SIMULATOR_STATUSES = {
    "paid": s.TRANSFER_PAID,
    "failed": s.TRANSFER_FAILED,
    "processing": s.TRANSFER_PROCESSING,
    "wait_confirm": s.TRANSFER_WAIT_CONFIRM,
    "returned": s.TRANSFER_RETURNED,
    "cancelled": s.TRANSFER_CANCELLED,
}


class SimulatorRail:
    name = "simulator"
    can_cancel = True
    has_statement = True  # GET /api/payouts: every transfer it holds

    def __init__(self, base_url: str, secret: str, timeout: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {secret}"}
        )

    async def submit(self, transfer: Transfer) -> s.TransferAnswer:
        body = {
            "transfer_no": transfer.number,
            "amount_cents": transfer.amount_cents,
            "currency": transfer.currency,
            "account": transfer.account,
            "name": transfer.name,
        }
        return await self._call("POST", "/api/payouts", json=body)

    async def query(self, number: str) -> s.TransferAnswer:
        return await self._call("GET", f"/api/payouts/{number}")

    async def cancel(self, number: str) -> s.TransferAnswer:
        return await self._call("POST", f"/api/payouts/{number}/cancel")

    async def statement(self, start: datetime, end: datetime, ours: Sequence[str] = ()) -> list[RailTransfer]:
        """The rail's record of every transfer (whatever the window); raises httpx.HTTPError or
        ValueError when unreadable."""
        response = await self._http.get("/api/payouts")
        response.raise_for_status()
        return [
            RailTransfer(
                str(t["transfer_no"]),
                SIMULATOR_STATUSES.get(str(t["status"]), s.TRANSFER_UNKNOWN),
                int(t["amount_cents"]),
                str(t["currency"]),
            )
            for t in response.json()
        ]

    async def _call(self, method: str, path: str, json: dict[str, Any] | None = None) -> s.TransferAnswer:
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:  # sent or not, we cannot tell: ask again later
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=type(exc).__name__, reason="the rail did not answer")
        if response.status_code == 404:
            return s.TransferAnswer(s.TRANSFER_NOT_FOUND, code="not_found", reason="the rail has no such transfer")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if (
            response.status_code >= 400
            or not isinstance(answer, dict)
            or answer.get("status") not in SIMULATOR_STATUSES
        ):
            code = answer.get("error", str(response.status_code)) if isinstance(answer, dict) else "unreadable"
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=str(code)[:64], reason="the rail's answer was unclear")
        status = SIMULATOR_STATUSES[answer["status"]]
        code = str(answer.get("code") or "")[:64]
        if status == s.TRANSFER_FAILED:
            words = SIMULATOR_DEFINITIVE.get(code)
            if words is None:  # not on the whitelist: maybe failed, maybe not; never money back on a maybe
                return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=code, reason="the rail answered an unfamiliar failure")
            return s.TransferAnswer(status, code=code, reason=words, definitive=True)
        if status == s.TRANSFER_RETURNED:
            return s.TransferAnswer(
                status, code=code, reason=str(answer.get("reason") or "the payee's bank sent it back")
            )
        return s.TransferAnswer(status, code=code)

    async def aclose(self) -> None:
        await self._http.aclose()
