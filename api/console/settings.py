"""Console: the shop's coupons (all may list, the owner gives them out), its webhook and, for a direct
shop, its own gateway credentials (owner only). The work is api/shop_settings.py's and
miaofa/coupons.py's, as for the merchant API; a secret is shown once, in the answer that made it."""

import re
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api import shop_settings
from api.console.i18n import Translator
from api.console.pages import ConsoleRoute, field, number, page
from api.console.session import ConsoleDep, ConsoleOwnerDep, DbDep
from api.deps import StateDep
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa import audit, coupons
from miaofa.direct import credentials
from miaofa.errors import InvalidInput, NotFound
from miaofa.merchants import accounts
from miaofa.merchants.tokens import MerchantHolder

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
CURRENCY = re.compile(r"^[A-Z]{3,8}$")
GATEWAY = re.compile(r"^[a-z0-9_-]{1,32}$")
DONE = frozenset({"saved", "removed", "cleared"})


def _done(request: Request) -> str:
    done = request.query_params.get("done", "")
    return done if done in DONE else ""


# ---- coupons --------------------------------------------------------------------------------------


async def _coupons_page(request: Request, holder: MerchantHolder, db, *, status: int = 200, **context) -> Response:
    rows = await coupons.listing(db, holder.merchant_id)
    return page(request, "console/coupons.html", status=status, coupons=rows, now=datetime.now(UTC), **context)


@router.get("/coupons")
async def coupons_page(request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    return await _coupons_page(request, holder, db)


@router.post("/coupons")
async def create_coupon(request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-coupon")
    code = field(form, "code", 40).upper()
    if code and not coupons.SHOP_CODE.match(code):
        raise InvalidInput("code: 4-40 letters, digits or '-', starting with a letter or digit")
    kind = field(form, "kind", 10, required=True)
    percent_off = amount_off = currency = None
    if kind == "percent":
        percent_off = number(form, "off", 1, 100)
    elif kind == "amount":
        amount_off = number(form, "off", 1, 10**12)
        currency = field(form, "currency", 8, required=True).upper()
        if not CURRENCY.match(currency):
            raise InvalidInput("currency: 3 to 8 letters, like CNY")
    else:
        raise InvalidInput("kind: percent or amount")
    days = number(form, "valid_days", 1, coupons.MAX_VALID_FOR.days)
    coupon = await coupons.create_for_shop(
        db,
        holder.merchant_id,
        code=code or None,
        percent_off=percent_off,
        amount_off_cents=amount_off,
        currency=currency,
        expires_at=datetime.now(UTC) + timedelta(days=days),
    )
    audit.record(db, holder.actor, "coupon.create", coupon.code, merchant_id=holder.merchant_id)
    await db.commit()
    t = Translator(web_i18n.pick(request))
    return await _coupons_page(request, holder, db, status=201, made=t("coupons.made", code=coupon.code))


# ---- webhook --------------------------------------------------------------------------------------


async def _webhook_page(request: Request, holder: MerchantHolder, db, *, status: int = 200, **context) -> Response:
    merchant = await accounts.by_id(db, holder.merchant_id)
    return page(
        request,
        "console/webhook.html",
        status=status,
        url=merchant.webhook_url,
        secret_set=merchant.webhook_secret is not None,
        **context,
    )


@router.get("/webhook")
async def webhook_page(request: Request, holder: ConsoleOwnerDep, db: DbDep) -> Response:
    return await _webhook_page(request, holder, db, done=_done(request))


@router.post("/webhook")
async def set_webhook(request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-webhook")
    secret = await shop_settings.set_webhook(db, state, holder, field(form, "url", 500, required=True))
    await db.commit()
    # The one time this secret is shown: the page is no-store (pages.page) and the secret is never logged.
    return await _webhook_page(request, holder, db, new_secret=secret)


@router.post("/webhook/clear")
async def clear_webhook(request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-webhook-clear")
    await shop_settings.clear_webhook(db, holder)
    await db.commit()
    return secure(RedirectResponse("/console/webhook?done=cleared", status_code=303), private=True)


# ---- a direct shop's gateway credentials ------------------------------------------------------------


def _gateway_param(gateway: str) -> str:
    if not GATEWAY.match(gateway) or gateway not in credentials.SPECS:
        raise NotFound("no such gateway", error="not_found")
    return gateway


@router.get("/gateways")
async def gateways_page(request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    merchant = await accounts.by_id(db, holder.merchant_id)
    saved = await credentials.listing(db, holder.merchant_id) if merchant.settlement == "direct" else []
    return page(
        request,
        "console/gateways.html",
        direct=merchant.settlement == "direct",
        saved=[(row, shop_settings.notify_url(state, row.merchant_id, row.gateway)) for row in saved],
        specs=credentials.SPECS,
        done=_done(request),
        gateway=shown if (shown := request.query_params.get("gateway", "")) in credentials.SPECS else "",
    )


@router.post("/gateways/{gateway}")
async def save_gateway(gateway: str, request: Request, holder: ConsoleOwnerDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-gateway")
    gateway = _gateway_param(gateway)
    fields = {}
    for name in credentials.SPECS[gateway].fields:
        value = form.get(name, "")
        if not isinstance(value, str):
            raise InvalidInput(f"{name}: must be text")
        if value.strip():
            fields[name] = value.strip()
    await shop_settings.save_gateway(state, holder, gateway, fields)
    return secure(RedirectResponse(f"/console/gateways?done=saved&gateway={gateway}", status_code=303), private=True)


@router.post("/gateways/{gateway}/remove")
async def remove_gateway(gateway: str, request: Request, holder: ConsoleOwnerDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-gateway-remove")
    gateway = _gateway_param(gateway)
    await shop_settings.remove_gateway(state, holder, gateway)
    return secure(RedirectResponse(f"/console/gateways?done=removed&gateway={gateway}", status_code=303), private=True)
