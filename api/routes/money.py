"""A merchant's money as the ledger has it, and the platform's proof that the ledger adds up."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import AdminDep, MerchantDep, SessionDep
from miaofa.ledger import books, check

merchant_router = APIRouter(prefix="/merchant", tags=["merchant money"])
admin_router = APIRouter(prefix="/admin", tags=["ledger"])


@merchant_router.get("/balance")
async def balance(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    """Per currency: pending (on hold), available (withdrawable), reserved (for a withdrawal), debt;
    and each amount still held: which order, why, released when."""
    return {
        "balances": await books.balances(session, holder.merchant_id),
        "pending": await books.pending_holds(session, holder.merchant_id),
    }


@merchant_router.get("/ledger")
async def ledger(
    holder: MerchantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="an entry_id: older lines")] = None,
) -> dict[str, Any]:
    """The shop's own ledger lines, newest first; amounts in each account's direction."""
    return {"entries": await books.entries(session, holder.merchant_id, limit, before)}


@admin_router.get("/ledger/check")
async def ledger_check(_: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Every invariant of the ledger, checked now: ok, or each violation in words."""
    found = await check.run(session)
    return {"ok": not found, "violations": [{"check": v.check, "detail": v.detail} for v in found]}
