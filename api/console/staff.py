"""Console: the shop's staff tokens (owner only; staff get a 403 page): list, add (shown once), revoke."""

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.console.i18n import Translator
from api.console.pages import ConsoleRoute, field, page
from api.console.session import ConsoleOwnerDep, DbDep
from api.deps import StateDep
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa import audit
from miaofa.errors import InvalidInput, NotFound
from miaofa.merchants import tokens
from miaofa.merchants.tokens import MerchantHolder
from miaofa.staff import NAME

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


async def _staff_page(request: Request, holder: MerchantHolder, db, *, status: int = 200, **context) -> Response:
    live = await tokens.listing(db, holder.merchant_id)
    return page(request, "console/staff.html", status=status, tokens=live, **context)


@router.get("/staff")
async def staff_page(request: Request, holder: ConsoleOwnerDep, db: DbDep) -> Response:
    revoked = request.query_params.get("revoked", "")
    return await _staff_page(request, holder, db, revoked=revoked if NAME.match(revoked) else "")


@router.post("/staff")
async def add_staff(request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-staff")
    name = field(form, "name", 32, required=True)
    if not NAME.match(name):
        raise InvalidInput("name: 1-32 characters: lowercase letters, digits, '.', '_' or '-'")
    token = await tokens.add(
        db, state.vault, merchant_id=holder.merchant_id, role="staff", name=name, created_by=holder.actor
    )
    audit.record(db, holder.actor, "token.add", name, merchant_id=holder.merchant_id)
    await db.commit()
    t = Translator(web_i18n.pick(request))
    # The one time this token is ever shown: this answer is no-store (pages.page), and never logged.
    return await _staff_page(request, holder, db, new_token=token, new_message=t("staff.new", name=name))


@router.post("/staff/{name}/revoke")
async def revoke_staff(name: str, request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-staff-revoke")
    if not NAME.match(name):
        raise NotFound("no live token by that name", error="token_not_found")
    await tokens.revoke(db, holder.merchant_id, name)
    audit.record(db, holder.actor, "token.revoke", name, merchant_id=holder.merchant_id)
    await db.commit()
    return secure(RedirectResponse(f"/console/staff?revoked={name}", status_code=303), private=True)
