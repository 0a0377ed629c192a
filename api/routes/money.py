"""A merchant's money as the ledger has it, and the platform's proof that the ledger adds up."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api.deps import FinanceDep, MerchantDep, SessionDep
from miaofa.ledger import books, check, statements

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


@merchant_router.get("/statements/{period}", responses={200: {"content": {"text/csv": {}}}})
async def statement(
    period: Annotated[
        str,
        Path(max_length=20, description="a UTC day YYYY-MM-DD or a month YYYY-MM; add .csv for CSV"),
    ],
    holder: MerchantDep,
    session: SessionDep,
) -> Any:
    """A UTC day or a month: opening, every line and closing per currency. A closed day (an hour
    after it ends) is stored once and chained by hash; a day or month still open is computed live
    (`closed: false`, no hash). A day or month that has not begun: 409 statement_not_ready."""
    wants_csv = period.endswith(".csv")
    asked = statements.parse_period(period.removesuffix(".csv"))
    found = await statements.of_period(session, holder.merchant_id, asked)
    if wants_csv:
        return Response(
            statements.as_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="statement-{asked.label}.csv"'},
        )
    return found


@admin_router.get("/ledger/check")
async def ledger_check(_: FinanceDep, session: SessionDep) -> dict[str, Any]:
    """Every invariant of the ledger, checked now: ok, or each violation in words."""
    found = await check.run(session)
    return {"ok": not found, "violations": [{"check": v.check, "detail": v.detail} for v in found]}
