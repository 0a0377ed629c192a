"""The buyer's pages: the storefront, the order page, the gateway's return page and the order lookup,
in English and Chinese.

Server-rendered (Jinja2, autoescaped) and complete without JavaScript; the scripts in api/web/static
add the JSON checkout (`POST /orders`), live status over Server-Sent Events and copy buttons. Every
page carries a strict Content-Security-Policy (no inline script) and is never framed; every form that
changes something carries a CSRF token (api/csrf.py). The JSON API's error contract is untouched: only
these routes answer HTML (a refused form asked for by a non-browser gets the JSON error), and the
order page's "not found" is a page.
"""

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError

from api import csrf
from api.deps import DeskDep, StateDep
from api.merchant_directory import Shop
from api.ordering import Asker
from api.routes.lookup import LookupRequest, send_links
from api.routes.order_events import STREAM_TERMINAL
from api.schemas import MAX_QUANTITY, OrderCreate
from api.web import i18n
from miaofa import contract as c
from miaofa import orders
from miaofa.db.models import DEFAULT_MERCHANT
from miaofa.errors import CsrfRefused, MiaofaError, NotFound, TooManyRequests
from miaofa.gateways.money import exponent
from miaofa.merchants.accounts import SLUG

router = APIRouter(include_in_schema=False)
WEB = Path(__file__).resolve().parent.parent / "web"
TEMPLATES = Jinja2Templates(env=Environment(loader=FileSystemLoader(WEB / "templates"), autoescape=True))
STATIC = WEB / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SEARCH_FROM = 8  # a search box once there are more products than this
_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IDEM = re.compile(r"^[A-Za-z0-9_-]{16,200}$")
# The browser that opened an order page keeps its token in this cookie, scoped to that order's path,
# so the gateway's return link (which carries only a ticket) can take that browser back to its order.
ORDER_COOKIE = "mf_order"
ORDER_COOKIE_SECONDS = 86400


def secure(response: Response, *, private: bool = False) -> Response:
    """The headers every page carries; `private` pages (an order: its token is in the URL) are never stored."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Vary"] = "Accept-Language, Cookie"
    if private:
        response.headers["Cache-Control"] = "no-store"
    return response


def _page(request: Request, name: str, *, status: int = 200, private: bool = False, **context: Any) -> Response:
    lang = i18n.pick(request)
    other = "en" if lang == "zh" else "zh"
    query = {**request.query_params, "lang": other}
    t = i18n.Translator(lang)
    forms: csrf.Csrf = request.app.state.miaofa.csrf
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "t": t,
            "lang": lang,
            "strings": t.strings,
            "money": i18n.money,
            "when": _when,
            "switch_url": f"{request.url.path}?{urlencode(query)}",
            "csrf": lambda form: forms.token(request, form),
            **context,
        },
        status_code=status,
    )
    if hasattr(request.state, "csrf_nonce"):  # the page has a form: its token is this browser's alone
        forms.keep(request, response)
        private = True
    if request.query_params.get("lang") in i18n.LANGS:  # the switch was used: remember it
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    return secure(response, private=private)


def _when(at: datetime | str | None) -> str:
    """A time as UTC text; the page's script shows it in the reader's own zone."""
    if at is None:
        return ""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- the storefront ----------------------------------------------------------------------------


def _products(state: Any, query: str, merchant_id: str) -> tuple[list[dict[str, Any]], int]:
    every = [
        {
            "sku": p.sku,
            "name": p.name,
            "price_cents": p.price_cents,
            "currency": p.currency,
            "available": state.hot.available(p.id),
        }
        for p in state.hot.products(merchant_id)
    ]
    every.sort(key=lambda p: (p["available"] <= 0, p["name"].casefold()))
    needle = query.casefold()
    shown = [p for p in every if needle in p["name"].casefold() or needle in p["sku"].casefold()] if needle else every
    return shown, len(every)


async def _storefront(
    request: Request,
    state: Any,
    shop: Shop,
    *,
    status: int = 200,
    failed: dict[str, Any] | None = None,
) -> Response:
    query = request.query_params.get("q", "").strip()[:100]
    products, total = _products(state, query, shop.merchant_id)
    home = "/" if shop.merchant_id == DEFAULT_MERCHANT else f"/s/{shop.slug}/"
    # The platform's front page is the default shop (a single-shop deployment keeps its URL), with
    # the other shops listed under it.
    others = [o for o in await state.shops.shops() if o.merchant_id != DEFAULT_MERCHANT] if home == "/" else []
    return _page(
        request,
        "storefront.html",
        status=status,
        shop=shop,
        home=home,
        others=others,
        products=products,
        query=query,
        searchable=total > SEARCH_FROM,
        total=total,
        gateways=await state.book.offered(shop.merchant_id if shop.settlement == "direct" else None),
        max_quantity=MAX_QUANTITY,
        failed=failed or {},
        idem=secrets.token_urlsafe(18),
    )


@router.get("/", response_class=HTMLResponse)
async def storefront(request: Request, state: StateDep) -> Response:
    shop = await state.shops.shop(None)
    assert shop is not None  # the migration made it
    return await _storefront(request, state, shop)


@router.get("/s/{slug}/", response_class=HTMLResponse)
async def merchant_storefront(slug: str, request: Request, state: StateDep) -> Response:
    """A merchant's own storefront; a suspended shop says so and takes no orders."""
    shop = await state.shops.shop(slug) if SLUG.match(slug) else None
    if shop is None:
        return _page(request, "not_found.html", status=404)
    return await _storefront(request, state, shop)


def describe(t: i18n.Translator, code: str, detail: str, retry_after: str | None = None) -> str:
    """A refusal of POST /orders in the buyer's words (static/shop.js says the same for the JSON path)."""
    if code == "invalid_input":
        field = detail.split(":", 1)[0].strip()
        if field == "email":
            return t("err.email")
        if field == "quantity":
            return t("err.quantity", max=MAX_QUANTITY)
        return t("err.invalid_input", detail=detail)
    if code == "too_many_requests":
        return t("err.too_many_requests", s=retry_after or "60")
    if code == "busy":
        return t("err.busy", s=retry_after or "2")
    if code in ("unavailable", "order_timeout", "temporal_unavailable"):
        return t("err.unavailable")
    if f"err.{code}" in t.strings:
        return t(f"err.{code}")
    return t("err.generic")


def _text(form: Any, name: str, limit: int) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


@router.post("/buy", response_class=HTMLResponse)
async def buy(request: Request, state: StateDep, desk: DeskDep) -> Response:
    """The checkout form without JavaScript: the same rules as POST /orders, answered as a page."""
    form = await request.form()
    names = ("sku", "email", "quantity", "gateway", "coupon_code", "idem", "merchant")
    fields = {name: _text(form, name, 300) for name in names}
    t = i18n.Translator(i18n.pick(request))
    shop = (
        await state.shops.shop(fields["merchant"] or None)
        if not fields["merchant"] or SLUG.match(fields["merchant"])
        else None
    )
    if shop is None:
        return _page(request, "not_found.html", status=404)

    async def refused(status: int, message: str, refill: bool = True) -> Response:
        kept = ("email", "quantity", "coupon_code") if refill else ()
        return await _storefront(
            request,
            state,
            shop,
            status=status,
            failed={"sku": fields["sku"], "message": message, **{name: fields[name] for name in kept}},
        )

    try:  # before anything is read or reserved: a hostile page's post changes nothing
        state.csrf.check(request, form, "buy")
    except CsrfRefused as exc:
        if not csrf.wants_html(request):
            raise
        # Not refilled: values another site chose must not become the buyer's form, one click from sent.
        return await refused(exc.status_code, t("err.csrf_refused"), refill=False)
    try:
        body = OrderCreate.model_validate(
            {
                "sku": fields["sku"],
                "email": fields["email"],
                "quantity": fields["quantity"] or "1",
                "gateway": fields["gateway"] or next(iter(state.gateways), "simulator"),  # the page always sends one
                "coupon_code": fields["coupon_code"] or None,
                "lang": t.lang,
                "merchant": fields["merchant"] or None,
            }
        )
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors() and exc.errors()[0]["loc"] else "body"
        return await refused(422, describe(t, "invalid_input", f"{field}: {exc.errors()[0]['msg']}"))
    idem = fields["idem"] if _IDEM.match(fields["idem"]) else None
    try:
        placed = await desk.place(body, Asker.of(request, state), idem)
    except MiaofaError as exc:
        # A coupon nobody issued or a gateway not offered is a wrong field on a page that exists: 422.
        status = 422 if exc.error in ("coupon_not_found", "unknown_gateway") else exc.status_code
        return await refused(status, describe(t, exc.error, exc.detail, (exc.headers or {}).get("Retry-After")))
    if placed.outcome == "replayed":  # the order exists, and this answer has no token for it
        return await refused(409, t("shop.replayed"))
    # Opened, or held for review (the order page says so).
    return RedirectResponse(f"/o/{placed.order_id}?{urlencode({'token': placed.access_token})}", status_code=303)


# ---- the order page ----------------------------------------------------------------------------


def _not_found(request: Request) -> Response:
    # One page for an unknown order and a wrong token: ids cannot be probed.
    return _page(request, "not_found.html", status=404, private=True)


def qr_svg(data: str) -> str:
    """A QR code as inline SVG, drawn here (no outside service sees the pay link)."""
    return segno.make(data, error="m").svg_inline(
        scale=4, border=2, dark="#111", light="#fff", omitsize=True, svgclass="qr", title=None
    )


@router.get("/o/{order_id}", response_class=HTMLResponse)
async def order_page(order_id: str, request: Request, state: StateDep) -> Response:
    token = request.query_params.get("token", "")
    if not _ORDER_ID.match(order_id) or not state.vault.check_order_token(order_id, token):
        return _not_found(request)
    async with state.sessionmaker() as session:
        try:
            view = await orders.order_view(session, state.vault, order_id)
        except NotFound:
            return _not_found(request)
    product = await state.hot.product(view["sku"])
    payment = view["payment"]
    pay_url = payment["pay_url"] if payment and view["status"] == c.AWAITING_PAYMENT else None
    response = _page(
        request,
        "order.html",
        private=True,
        order=view,
        token=token,
        product_name=product.name if product else view["sku"],
        pay_url=pay_url,
        qr=qr_svg(pay_url) if pay_url else None,
        coupon_text=coupon_text(request, view),
        live=view["status"] not in STREAM_TERMINAL,
        exponent=exponent(view["currency"]),
    )
    response.set_cookie(  # Lax: sent when the gateway sends the browser back (a top-level GET)
        ORDER_COOKIE,
        token,
        max_age=ORDER_COOKIE_SECONDS,
        path=f"/o/{order_id}",
        secure=state.csrf.secure,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/o/{order_id}/return", response_class=HTMLResponse)
async def returned(order_id: str, request: Request, state: StateDep) -> Response:
    """Where a gateway sends the buyer back. Its URL is in the pay link, and the pay link is in every
    Idempotency-Key replay: so its ticket shows the order's status only (what a replay says anyway),
    never the token or the keys. The browser that opened the order page goes on to it (its cookie)."""
    if not _ORDER_ID.match(order_id):
        return _not_found(request)
    kept = request.cookies.get(ORDER_COOKIE, "")
    if state.vault.check_order_token(order_id, kept):
        back = RedirectResponse(f"/o/{order_id}?{urlencode({'token': kept})}", status_code=303)
        return secure(back, private=True)
    ticket = request.query_params.get("ticket", "")
    if not state.vault.check_return_ticket(order_id, ticket, datetime.now(UTC)):
        return _not_found(request)
    async with state.sessionmaker() as session:
        try:
            view = await orders.order_view(session, state.vault, order_id, with_keys=False)
        except NotFound:
            return _not_found(request)
    product = await state.hot.product(view["sku"])
    return _page(
        request, "returned.html", private=True, order=view, product_name=product.name if product else view["sku"]
    )


def coupon_text(request: Request, view: dict[str, Any]) -> str:
    coupon = view["coupon"]
    if coupon is None:
        return ""
    t = i18n.Translator(i18n.pick(request))
    off = (
        t("order.percent_off", n=coupon["percent_off"])
        if "percent_off" in coupon
        else t("order.amount_off", amount=i18n.money(coupon["amount_off_cents"], view["currency"]))
    )
    return t("order.coupon", code=coupon["code"], off=off, until=_when(coupon["expires_at"]))


# ---- the order lookup --------------------------------------------------------------------------


@router.get("/lookup", response_class=HTMLResponse)
async def lookup_page(request: Request) -> Response:
    return _page(request, "lookup.html")


@router.post("/lookup", response_class=HTMLResponse)
async def lookup_form(request: Request, state: StateDep) -> Response:
    """The lookup form without JavaScript: POST /orders/lookup's rules and its one answer, as a page."""
    form = await request.form()
    email = _text(form, "email", 300)
    t = i18n.Translator(i18n.pick(request))

    def answer(status: int, error: str = "", headers: dict[str, str] | None = None) -> Response:
        page = _page(request, "lookup.html", status=status, error=error, sent=not error, email=email if error else "")
        page.headers.update(headers or {})
        return page

    try:
        state.csrf.check(request, form, "lookup")
    except CsrfRefused as exc:
        if not csrf.wants_html(request):
            raise
        return answer(exc.status_code, t("err.csrf_refused"))
    try:
        address = LookupRequest.model_validate({"email": email}).email
    except ValidationError:
        return answer(422, t("err.email"))
    try:
        await send_links(state, request, address, t.lang)
    except TooManyRequests as exc:
        wait = (exc.headers or {}).get("Retry-After", "60")
        return answer(exc.status_code, t("err.too_many_requests", s=wait), {"Retry-After": wait})
    return answer(200)
