"""Console: order search, an order's page with its timeline, refund/resend/cancel through the order's
workflow (api/order_actions.act, the staff member as the actor), and the audited one-time key reveal."""

import re
import secrets
from datetime import UTC, datetime, time, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import order_actions
from api.console.i18n import Translator
from api.console.pages import SKU, ConsoleRoute, field, order_param, page
from api.console.session import ConsoleDep, DbDep
from api.deps import StateDep
from api.web import i18n as web_i18n
from miaofa import audit, catalog, inventory, orders
from miaofa import contract as c
from miaofa.errors import InvalidInput, MiaofaError, NotFound
from miaofa.merchants.tokens import MerchantHolder

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
ACTIONS = {"refund": c.REFUND_UPDATE, "resend": c.RESEND_UPDATE, "cancel": c.CANCEL_UPDATE}
# The buttons an order's page offers in each status; the workflow still decides (a stale page's
# post is refused there and said on the page).
OFFERED = {
    "refund": (c.PAID, c.DELIVERED, c.DELIVERY_FAILED),
    "resend": (c.DELIVERED,),
    "cancel": (c.AWAITING_PAYMENT, c.IN_REVIEW),
}
_IDEM = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _day(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time(), UTC)
    except ValueError:
        raise InvalidInput(f"{name}: a date like 2026-01-31") from None


@router.get("/orders")
async def orders_page(request: Request, holder: ConsoleDep, db: DbDep, state: StateDep) -> Response:
    query = request.query_params
    wanted = {
        "email": field(query, "email", 254),
        "status": field(query, "status", 24),
        "sku": field(query, "sku", 64),
        "from": field(query, "from", 10),
        "to": field(query, "to", 10),
    }
    if wanted["status"] and wanted["status"] not in c.STATUSES:
        raise InvalidInput("status: one of the order statuses")
    if wanted["sku"] and not SKU.match(wanted["sku"]):
        raise InvalidInput("sku: not a product's SKU")
    until = _day(wanted["to"], "to")
    found = await orders.search(
        db,
        merchant_id=holder.merchant_id,
        buyer_hash=state.vault.buyer_hash(wanted["email"]) if wanted["email"] else None,
        status=wanted["status"] or None,
        sku=wanted["sku"] or None,
        since=_day(wanted["from"], "from"),
        until=until + timedelta(days=1) if until else None,  # the "to" day included
        limit=100,
    )
    return page(
        request,
        "console/orders.html",
        orders=found,
        wanted=wanted,
        statuses=c.STATUSES,
        products=await catalog.list_products(db, holder.merchant_id),
    )


async def _order_page(
    request: Request,
    holder: MerchantHolder,
    state,
    order_id: str,
    *,
    status: int = 200,
    keys: list | None = None,
    notice: str = "",
    error: str = "",
) -> Response:
    async with state.sessionmaker() as db:
        await orders.get_order(db, order_id, holder.merchant_id)  # another shop's order: 404
        view = await orders.order_view(db, state.vault, order_id, with_keys=False)
        held = await inventory.masked_keys(db, state.vault, order_id)
    return page(
        request,
        "console/order.html",
        status=status,
        order=view,
        held=len(held),
        keys=keys,
        notice=notice,
        error=error,
        actions=[action for action, statuses in OFFERED.items() if view["status"] in statuses],
        idem=secrets.token_urlsafe(18),
    )


@router.get("/orders/{order_id}")
async def order_page(order_id: str, request: Request, holder: ConsoleDep, state: StateDep) -> Response:
    return await _order_page(request, holder, state, order_param(order_id))


@router.post("/orders/{order_id}/reveal")
async def reveal(order_id: str, request: Request, holder: ConsoleDep, state: StateDep) -> Response:
    """The keys of this one order, shown once on this answer (never stored by the browser), audited."""
    form = await request.form()
    state.csrf.check(request, form, "console-reveal")
    order_id = order_param(order_id)
    async with state.sessionmaker.begin() as db:
        await orders.get_order(db, order_id, holder.merchant_id)
        keys = await inventory.handed_out_keys(db, state.vault, order_id)
        audit.record(db, holder.actor, "keys.reveal", order_id, merchant_id=holder.merchant_id, count=len(keys))
    return await _order_page(request, holder, state, order_id, keys=keys)


@router.post("/orders/{order_id}/{action}")
async def act(order_id: str, action: str, request: Request, holder: ConsoleDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-order-action")
    order_id = order_param(order_id)
    update = ACTIONS.get(action)
    async with state.sessionmaker() as db:
        await orders.get_order(db, order_id, holder.merchant_id)  # another shop's order: 404, nothing done
    if update is None:
        raise NotFound("no such action")
    reason = field(form, "reason", 500, required=True)
    idem = field(form, "idem", 64)
    t = Translator(web_i18n.pick(request))
    try:
        done = await order_actions.act(
            state,
            order_id,
            update,
            holder.actor,
            reason,
            idem if _IDEM.match(idem) else None,
            prefix="console",
            merchant_id=holder.merchant_id,
        )
    except MiaofaError as exc:
        # The workflow refused (already refunded, not delivered yet …): say so on the order's page.
        message = t("err.generic", detail=exc.detail)
        return await _order_page(request, holder, state, order_id, status=exc.status_code, error=message)
    notice = t("order.done", status=t.status(done["status"]))
    return await _order_page(request, holder, state, order_id, notice=notice)
