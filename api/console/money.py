"""Console: the shop's money as the ledger has it (miaofa/ledger/books.py): balances per currency,
each amount still held and why, and the ledger lines newest first. Owner and staff may read it."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.console.pages import ConsoleRoute, field, page
from api.console.session import ConsoleDep, DbDep
from api.web import i18n as web_i18n
from miaofa.errors import InvalidInput
from miaofa.ledger import books
from miaofa.merchants import accounts

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
LINES_PER_PAGE = 50
MAX_ENTRY_ID = 2**62


def signed_money(minor: int, currency: str) -> str:
    """-250 CNY → "−¥2.50" (the sign before the symbol, as a merchant reads it)."""
    return ("−" if minor < 0 else "") + web_i18n.money(abs(minor), currency)


def _before(request: Request) -> int | None:
    text = field(request.query_params, "before", 20)
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ENTRY_ID:
        raise InvalidInput("before: a ledger line's number")
    return int(text)


@router.get("/money")
async def money_page(request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    before = _before(request)
    merchant = await accounts.by_id(db, holder.merchant_id)
    lines = await books.entries(db, holder.merchant_id, LINES_PER_PAGE, before)
    return page(
        request,
        "console/money.html",
        merchant=merchant,
        direct=merchant.settlement == "direct",
        balances=await books.balances(db, holder.merchant_id),
        holds=await books.pending_holds(db, holder.merchant_id),
        lines=lines,
        before=before,
        # a full page may have older lines behind it; the next page starts below its last line
        older=lines[-1]["entry_id"] if len(lines) == LINES_PER_PAGE else None,
        signed_money=signed_money,
    )
