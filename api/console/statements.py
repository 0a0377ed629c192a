"""Console: the shop's statements (miaofa/ledger/statements.py), of a UTC day or a month: the
opening and closing of each account, every line, whether it is closed (stored and hashed) or still
open (computed now), the days before and after, and the same statement as CSV. Owner and staff may
read it."""

from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.console import money
from api.console.i18n import Translator
from api.console.pages import ConsoleRoute, field, page
from api.console.session import ConsoleDep, DbDep
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa.ledger import statements
from miaofa.merchants import accounts

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
LINES_SHOWN = 500  # per currency; the CSV has every line
ACCOUNTS = ("pending", "available", "reserved", "debt")


def _asked(request: Request) -> statements.Period:
    """?period=YYYY-MM-DD or YYYY-MM; this month (UTC) when absent."""
    text = field(request.query_params, "period", 10)
    return statements.parse_period(text or datetime.now(UTC).date().isoformat()[:7])


def _neighbours(asked: statements.Period, today: date) -> tuple[str | None, str | None]:
    """The period before (none before year 1), and the one after unless it has not begun."""
    size = 7 if asked.is_month else 10  # YYYY-MM of a month, YYYY-MM-DD of a day
    before = (asked.first - timedelta(days=1)).isoformat()[:size] if asked.first > date.min else None
    after = asked.last + timedelta(days=1)
    return before, after.isoformat()[:size] if after <= today else None


def _kinds(found: dict, direct: bool) -> tuple[str, ...]:
    """The shop's accounts; `payable` for a direct shop, or any shop whose statement moved it."""
    moved = any(
        s["opening"].get("payable") or s["closing"].get("payable") or any(x["account"] == "payable" for x in s["lines"])
        for s in found["currencies"].values()
    )
    return (*ACCOUNTS, "payable") if direct or moved else ACCOUNTS


@router.get("/statements")
async def statements_page(request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    asked = _asked(request)
    found = await statements.of_period(db, holder.merchant_id, asked)
    merchant = await accounts.by_id(db, holder.merchant_id)
    before, after = _neighbours(asked, datetime.now(UTC).date())
    t = Translator(web_i18n.pick(request))
    return page(
        request,
        "console/statements.html",
        merchant=merchant,
        asked=asked,
        found=found,
        kinds=_kinds(found, merchant.settlement == "direct"),
        shown=LINES_SHOWN,
        before=before,
        after=after,
        signed_money=money.signed_money,
        kind_name=lambda kind: t(f"tx.{kind}") if f"tx.{kind}" in t.strings else kind,
    )


@router.get("/statements.csv")
async def statements_csv(request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    asked = _asked(request)
    found = await statements.of_period(db, holder.merchant_id, asked)
    return secure(
        Response(
            statements.as_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="statement-{asked.label}.csv"'},
        ),
        private=True,
    )
