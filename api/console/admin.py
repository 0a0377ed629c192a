"""The platform admin's console at /console/admin: merchants (list, create with the owner's token
shown once, suspend with a reason, resume), keys flagged as possible double sales, and the ledger
check. Its own session (api/console/admin_session.py); every change is audited with the admin as
the actor (miaofa/merchants/accounts.py writes the audit rows).

Under /console rather than /admin: /admin/* stays the bearer-token JSON API (api/limits.py wants a
bearer token there before a body is read; no cookies, so no CSRF to think about), and these pages
share the console's assets, language, CSRF and error pages.
"""

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.console import admin_session, money
from api.console.admin_session import AdminConsoleDep
from api.console.i18n import Translator
from api.console.pages import ConsoleRoute, field, number, page
from api.console.session import DbDep
from api.deps import StateDep
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa.errors import NotFound
from miaofa.ledger import check
from miaofa.merchants import accounts

router = APIRouter(prefix="/admin", include_in_schema=False, route_class=ConsoleRoute)
HOME = "/console/admin/"


def fee_words(bps: int) -> str:
    """250 → "2.50 %" (integer arithmetic: no float ever touches a fee)."""
    return f"{bps // 100}.{bps % 100:02d} %"


def _slug(slug: str) -> str:
    """A malformed slug is the same 404 as an unknown one."""
    if not accounts.SLUG.match(slug):
        raise NotFound("no such merchant", error="unknown_merchant")
    return slug


async def _merchants_page(request: Request, db: DbDep, *, status: int = 200, **context: object) -> Response:
    return page(
        request,
        "console/admin_merchants.html",
        status=status,
        merchants=await accounts.listing(db),
        fee_words=fee_words,
        hold_words=money.duration,
        max_hold=accounts.MAX_HOLD_SECONDS,
        **context,
    )


@router.get("")
async def bare() -> Response:
    return secure(RedirectResponse(HOME, status_code=303))


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    return page(request, "console/admin_sign_in.html", signed_out=request.query_params.get("out") == "1")


@router.post("/sign-in")
async def sign_in(request: Request, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "admin-sign-in")
    given = form.get("token", "")
    found = await admin_session.who(state, given.strip() if isinstance(given, str) else "")
    if found is None:
        t = Translator(web_i18n.pick(request))
        return page(request, "console/admin_sign_in.html", status=401, error=t("admin.signin_bad"))
    response = secure(RedirectResponse(HOME, status_code=303), private=True)
    admin_session.start(request, response, state, found[0])
    return response


@router.post("/sign-out")
async def sign_out(request: Request, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "admin-sign-out")
    response = secure(RedirectResponse("/console/admin/sign-in?out=1", status_code=303), private=True)
    admin_session.end(request, response)
    return response


@router.get("/")
async def merchants_page(request: Request, actor: AdminConsoleDep, db: DbDep) -> Response:
    done = request.query_params.get("done", "")
    slug = request.query_params.get("slug", "")
    ok = done in ("suspended", "resumed", "terms") and bool(accounts.SLUG.match(slug))
    return await _merchants_page(request, db, done=done if ok else "", done_slug=slug if ok else "")


@router.post("/merchants")
async def create_merchant(request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "admin-merchant-create")
    made = await accounts.create(
        db,
        state.vault,
        slug=field(form, "slug", 32, required=True),
        name=field(form, "name", 100, required=True),
        settlement=field(form, "settlement", 16, required=True),
        fee_bps=number(form, "fee_bps", 0, 10000),
        hold_seconds=number(form, "hold_seconds", 0, accounts.MAX_HOLD_SECONDS),
        created_by=actor,
    )
    await db.commit()
    # The one time the owner's token is shown: the page is no-store (pages.page) and never logged.
    return await _merchants_page(request, db, status=201, new_slug=made.merchant.slug, new_token=made.owner_token)


@router.post("/merchants/{slug}/suspend")
async def suspend(slug: str, request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "admin-merchant-status")
    reason = field(form, "reason", 300, required=True)
    await accounts.set_status(db, _slug(slug), status="suspended", reason=reason, actor=actor)
    await db.commit()  # before the directory forgets: a re-read must see the new status
    state.shops.forget(slug)
    return secure(RedirectResponse(f"{HOME}?done=suspended&slug={slug}", status_code=303), private=True)


@router.post("/merchants/{slug}/resume")
async def resume(slug: str, request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "admin-merchant-status")
    await accounts.set_status(db, _slug(slug), status="active", reason="", actor=actor)
    await db.commit()
    state.shops.forget(slug)
    return secure(RedirectResponse(f"{HOME}?done=resumed&slug={slug}", status_code=303), private=True)


@router.post("/merchants/{slug}/terms")
async def terms(slug: str, request: Request, actor: AdminConsoleDep, db: DbDep, state: StateDep) -> Response:
    """A new fee and hold; sales already made keep theirs."""
    form = await request.form()
    state.csrf.check(request, form, "admin-merchant-terms")
    fee_bps = number(form, "fee_bps", 0, 10000)
    hold_seconds = number(form, "hold_seconds", 0, accounts.MAX_HOLD_SECONDS)
    await accounts.set_terms(db, _slug(slug), fee_bps=fee_bps, hold_seconds=hold_seconds, actor=actor)
    await db.commit()
    state.shops.forget(slug)
    return secure(RedirectResponse(f"{HOME}?done=terms&slug={slug}", status_code=303), private=True)


@router.get("/key-flags")
async def key_flags_page(request: Request, actor: AdminConsoleDep, db: DbDep) -> Response:
    return page(request, "console/admin_flags.html", flags=await accounts.key_flags(db))


@router.get("/ledger-check")
async def ledger_check_page(request: Request, actor: AdminConsoleDep, db: DbDep) -> Response:
    return page(request, "console/admin_check.html", violations=await check.run(db))
