"""The simulator's payout rail: transfers under the caller's number, idempotent, with faults on command.

`POST /api/payouts` with a number it already has is the same transfer (a different amount or payee
is refused). Each transfer keeps the fault (`Control.payout`) it was made under:
- normal: paid at once;
- fail: failed, PAYEE_NAME_MISMATCH (a definitive, payee-side error);
- unknown: the submit answers 503 system_busy, the first two queries `processing`, then paid;
- timeout_then_paid: paid at once, but the submit's answer is held past the caller's timeout;
- return_after_paid: paid, then the next query finds it returned by the payee's bank;
- await_confirm: waiting for the payee's confirmation until cancelled (`/cancel`) or confirmed
  (`/confirm`, what the payee's app would do).
Transfers live in memory only: a restart forgets them (the payment books persist, these do not yet)."""

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt

from miaofa.simulator.books import SimError, Simulator


class TransferIn(BaseModel):
    transfer_no: str = Field(min_length=1, max_length=64)
    amount_cents: StrictInt = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    account: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=128)


@dataclass
class Transfer:
    transfer_no: str
    amount_cents: int
    currency: str
    account: str
    name: str
    mode: str
    status: str
    created_at: str
    code: str = ""
    reason: str = ""
    submits: int = 1
    queries_left: int = 0  # unknown: queries answered `processing` before it is paid

    def state(self) -> dict[str, Any]:
        # The rail echoes no account: neither would a real one in a query answer we log.
        return {
            "transfer_no": self.transfer_no,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "code": self.code,
            "reason": self.reason,
            "submits": self.submits,
        }


def install(app: FastAPI, sim: Simulator) -> None:
    transfers: dict[str, Transfer] = {}
    app.state.payout_transfers = transfers

    @app.post("/api/payouts")
    async def submit(body: TransferIn) -> JSONResponse:
        currency = body.currency.upper()
        async with sim.lock:
            found = transfers.get(body.transfer_no)
            if found is not None:
                if (found.amount_cents, found.currency, found.account) != (body.amount_cents, currency, body.account):
                    raise SimError(409, "transfer_mismatch", "transfer_no already used with another amount or payee")
                found.submits += 1
                return JSONResponse(found.state())
            mode = sim.control.payout
            found = Transfer(
                body.transfer_no,
                body.amount_cents,
                currency,
                body.account,
                body.name,
                mode=mode,
                status="paid",
                created_at=datetime.now(UTC).isoformat(),
            )
            if mode == "fail":
                found.status, found.code = "failed", "PAYEE_NAME_MISMATCH"
                found.reason = "payee name does not match the account"
            elif mode == "unknown":
                found.status, found.queries_left = "processing", 2
            elif mode == "await_confirm":
                found.status = "wait_confirm"
            transfers[body.transfer_no] = found
        if mode == "unknown":
            raise SimError(503, "system_busy", "the system is busy; the outcome is not known (simulated)")
        if mode == "timeout_then_paid":
            await asyncio.sleep(sim.control.payout_hang_seconds)  # the caller has given up by now
        return JSONResponse(found.state(), status_code=201)

    @app.get("/api/payouts/{transfer_no}")
    async def query(transfer_no: str) -> dict[str, Any]:
        async with sim.lock:
            found = _get(transfers, transfer_no)
            if found.status == "processing":
                if found.queries_left > 0:
                    found.queries_left -= 1
                else:
                    found.status = "paid"
            elif found.status == "paid" and found.mode == "return_after_paid":
                found.status, found.code = "returned", "ACCOUNT_CLOSED"
                found.reason = "the payee's bank returned it: the account is closed"
            return found.state()

    @app.post("/api/payouts/{transfer_no}/cancel")
    async def cancel(transfer_no: str) -> dict[str, Any]:
        async with sim.lock:
            found = _get(transfers, transfer_no)
            if found.status == "wait_confirm":
                found.status = "cancelled"
            return found.state()  # confirmed first: it stays paid, and the caller sees that

    @app.post("/api/payouts/{transfer_no}/confirm")
    async def confirm(transfer_no: str) -> dict[str, Any]:
        async with sim.lock:
            found = _get(transfers, transfer_no)
            if found.status != "wait_confirm":
                raise SimError(409, "not_waiting", f"the transfer is {found.status}")
            found.status = "paid"
            return found.state()

    @app.get("/api/payouts")
    async def statement() -> list[dict[str, Any]]:
        """Every transfer with its payee (this is the rail's own statement, for reconciliation)."""
        return [asdict(t) for t in transfers.values()]


def _get(transfers: dict[str, Transfer], transfer_no: str) -> Transfer:
    found = transfers.get(transfer_no)
    if found is None:
        raise SimError(404, "not_found", "no such transfer")
    return found
