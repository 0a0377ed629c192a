"""The merchant console at /console: sign-in with a merchant token, sign-out, the dashboard, and the
product, order, money, statements, withdrawal, staff and settings pages (api/console/{products,orders,
money,statements,withdrawals,staff,settings}.py); the platform admin's pages under /console/admin
(api/console/admin.py, admin_withdrawals.py). Server-rendered, hidden from the OpenAPI schema; every
form carries a CSRF token (api/csrf.py) and every page is scoped to the signed-in merchant: another
merchant's SKU, order or withdrawal is a 404 page, as if it did not exist."""

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.console import (
    admin,
    admin_withdrawals,
    money,
    orders,
    products,
    session,
    settings,
    staff,
    statements,
    withdrawals,
)
from api.console.i18n import Translator
from api.console.pages import SIGN_IN, ConsoleRoute, page
from api.console.session import ConsoleDep, DbDep
from api.deps import StateDep
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa.merchants import accounts, dashboard, tokens
from miaofa.staff import MAX_TOKEN_CHARS

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)
for part in (
    products.router,
    orders.router,
    money.router,
    statements.router,
    withdrawals.router,
    staff.router,
    settings.router,
    admin.router,
    admin_withdrawals.router,
):
    router.include_router(part)


@router.get("")
async def bare() -> Response:
    return secure(RedirectResponse("/console/", status_code=303))


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    return page(request, "console/sign_in.html", signed_out=request.query_params.get("out") == "1")


@router.post("/sign-in")
async def sign_in(request: Request, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-sign-in")
    given = form.get("token", "")
    token = given.strip() if isinstance(given, str) else ""
    # tokens.holder refuses anything that is not mfm_… within the length limit before hashing it.
    found = await tokens.holder(state.sessionmaker, state.vault, token) if len(token) <= MAX_TOKEN_CHARS else None
    if found is None:
        t = Translator(web_i18n.pick(request))
        return page(request, "console/sign_in.html", status=401, error=t("signin.bad"))
    response = secure(RedirectResponse("/console/", status_code=303), private=True)
    session.start(request, response, found)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-sign-out")
    response = secure(RedirectResponse(f"{SIGN_IN}?out=1", status_code=303), private=True)
    session.end(request, response)
    return response


@router.get("/")
async def dashboard_page(request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    opened, sales = await dashboard.today(db, holder.merchant_id, midnight)
    stock = await dashboard.stock_rows(db, holder.merchant_id)
    return page(
        request,
        "console/dashboard.html",
        merchant=await accounts.by_id(db, holder.merchant_id),
        opened=opened,
        sales=sales,
        statuses=await dashboard.by_status(db, holder.merchant_id),
        late=await dashboard.late(db, holder.merchant_id, now),
        low=[row for row in stock if row.active and row.available < dashboard.LOW_STOCK],
    )
