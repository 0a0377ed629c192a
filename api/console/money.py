"""Console: the shop's money as the ledger has it (miaofa/ledger/books.py): balances per currency,
each amount still held and why, and the ledger lines newest first. Owner and staff may read it."""

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.console.i18n import Translator
from api.console.pages import ConsoleRoute, field, page
from api.console.session import ConsoleDep, DbDep
from api.web import i18n as web_i18n
from miaofa.errors import InvalidInput
from miaofa.ledger import books
from miaofa.merchants import accounts

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
# The reason order_money writes on a hold; read back in the merchant's language.
HOLD_REASON = re.compile(r"^the platform's hold of ([0-9]{1,9}) s after a sale$")
UNITS = {"en": ("d", "h", "min", "s"), "zh": (" 天", " 小时", " 分钟", " 秒")}
LINES_PER_PAGE = 50
MAX_ENTRY_ID = 2**62


def signed_money(minor: int, currency: str) -> str:
    """-250 CNY → "−¥2.50" (the sign before the symbol, as a merchant reads it)."""
    return ("−" if minor < 0 else "") + web_i18n.money(abs(minor), currency)


def duration(seconds: int, lang: str = "en") -> str:
    """86400 → "1 d" ("1 天"); the largest unit that divides it evenly."""
    names = UNITS.get(lang, UNITS["en"])
    for name, size in zip(names, (86400, 3600, 60), strict=False):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{name}" if lang == "zh" else f"{seconds // size} {name}"
    return f"{seconds}{names[3]}" if lang == "zh" else f"{seconds} {names[3]}"


def hold_reason(reason: str, t: Translator) -> str:
    found = HOLD_REASON.match(reason)
    return t("money.hold_reason", hold=duration(int(found[1]), t.lang)) if found else reason


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
        hold_reason=lambda reason: hold_reason(reason, Translator(web_i18n.pick(request))),
    )
