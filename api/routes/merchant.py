"""The merchant API: a shop's owner and staff run their own catalog, keys, orders and tokens.

Every lookup is by (this merchant, id): another merchant's SKU or order is answered 404 exactly
like one that does not exist, so nothing about another shop leaks, not even that it exists.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field, StrictBool, StrictInt

from api import order_actions, uploads
from api.deps import MerchantDep, OwnerDep, SessionDep, StateDep
from api.routes.admin import _IMPORT_BODY, _IMPORT_ERRORS, ImportAnswer, ProductFields, StockAnswer
from api.routes.support import IdemKey, SupportBody
from api.schemas import OrderId, Plain, plain
from miaofa import audit, catalog, inventory, orders
from miaofa import contract as c
from miaofa.errors import InvalidInput
from miaofa.merchants import accounts, tokens
from miaofa.risk import shop_rules
from miaofa.text import plain_pattern

router = APIRouter(prefix="/merchant", tags=["merchant"])

_PLAIN = {"pattern": plain_pattern()}
Sku = Annotated[str, Field(min_length=1, max_length=64)]


class ProductEdit(BaseModel):
    name: Annotated[str, Plain] | None = Field(default=None, min_length=1, max_length=200)
    description: Annotated[str, Plain] | None = Field(default=None, max_length=2000)
    price_cents: StrictInt | None = Field(default=None, gt=0, le=10**12)
    delivery_sla_seconds: StrictInt | None = Field(default=None, gt=0, le=86400 * 30)
    active: StrictBool | None = None


Entry = Annotated[str, Field(min_length=1, max_length=254)]
Cap = Annotated[StrictInt, Field(ge=0, le=shop_rules.MAX_CAP)]


class ShopRules(BaseModel):
    """The shop's own risk rules: on top of the platform's, never looser. 0: no cap of its own."""

    blocked_emails: list[Entry] = Field(default=[], max_length=shop_rules.MAX_LIST, description="addresses or @domains")
    blocked_networks: list[Entry] = Field(default=[], max_length=shop_rules.MAX_LIST, description="addresses or CIDRs")
    quantity_per_order: Cap = 0
    open_orders_per_email: Cap = 0
    open_orders_per_buyer_product: Cap = 0
    units_per_buyer_per_product: Cap = 0


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")


def _product(product: Any, stock: inventory.Stock | None = None) -> dict[str, Any]:
    answer = {
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "price_cents": product.price_cents,
        "currency": product.currency,
        "delivery_sla_seconds": product.delivery_sla_seconds,
        "active": product.active,
    }
    if stock is not None:
        answer["stock"] = {"available": stock.available, "reserved": stock.reserved, "sold": stock.sold}
    return answer


@router.get("/me")
async def me(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    """Who this token is, and its shop (a suspended shop sees why)."""
    merchant = await accounts.by_id(session, holder.merchant_id)
    return {"name": holder.name, "role": holder.role, "merchant": accounts.public(merchant)}


@router.post("/products", status_code=201)
async def create_product(
    body: ProductFields, holder: MerchantDep, session: SessionDep, state: StateDep
) -> dict[str, Any]:
    product = await catalog.create_product(session, merchant_id=holder.merchant_id, **body.model_dump())
    audit.record(session, holder.actor, "product.create", product.sku, merchant_id=holder.merchant_id)
    await session.commit()
    await state.hot.refresh()
    return _product(product)


@router.get("/products")
async def list_products(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    products = await catalog.list_products(session, holder.merchant_id)
    return {"products": [_product(p, await inventory.stock(session, p.id)) for p in products]}


@router.patch("/products/{sku}")
async def edit_product(
    sku: str, body: ProductEdit, holder: MerchantDep, session: SessionDep, state: StateDep
) -> dict[str, Any]:
    """Change what buyers see next; orders already open keep the price they were opened at."""
    product = await catalog.get_product(session, plain("sku", sku), holder.merchant_id)
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise InvalidInput("nothing to change: send name, description, price_cents, delivery_sla_seconds or active")
    for field, value in changes.items():
        setattr(product, field, value)
    audit.record(session, holder.actor, "product.edit", sku, merchant_id=holder.merchant_id, fields=",".join(changes))
    await session.commit()
    await state.hot.refresh()
    return _product(product)


@router.post("/products/{sku}/keys", openapi_extra=_IMPORT_BODY, responses=_IMPORT_ERRORS)
async def import_keys(
    sku: str, request: Request, holder: MerchantDep, session: SessionDep, state: StateDep
) -> ImportAnswer:
    """Import keys into this shop's product, in the admin route's formats. A key this shop already
    holds is a duplicate; whether another shop holds it is not said here."""
    uploads.check_media_type(request.headers.get("content-type"))
    product = await catalog.get_product(session, plain("sku", sku), holder.merchant_id)
    data, media = await uploads.read_upload(request)
    keys = inventory.parse_keys(data, media)
    result = await inventory.import_keys(session, state.vault, product.id, keys)
    audit.record(
        session,
        holder.actor,
        "keys.import",
        sku,
        merchant_id=holder.merchant_id,
        imported=result.imported,
        duplicates=result.duplicates,
    )
    await session.commit()
    await state.hot.refresh()
    return ImportAnswer(imported=result.imported, duplicates=result.duplicates)


@router.get("/products/{sku}/stock")
async def read_stock(sku: str, holder: MerchantDep, session: SessionDep) -> StockAnswer:
    product = await catalog.get_product(session, plain("sku", sku), holder.merchant_id)
    counts = await inventory.stock(session, product.id)
    return StockAnswer(available=counts.available, reserved=counts.reserved, sold=counts.sold, refunded=counts.refunded)


@router.get("/orders")
async def list_orders(
    holder: MerchantDep,
    session: SessionDep,
    state: StateDep,
    status: Annotated[str | None, Query(max_length=24, json_schema_extra=_PLAIN)] = None,
    sku: Annotated[str | None, Query(max_length=64, json_schema_extra=_PLAIN)] = None,
    email: Annotated[str | None, Query(max_length=254, json_schema_extra=_PLAIN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """This shop's orders, newest first; a buyer is found by the hash of their email."""
    for name, value in (("status", status), ("sku", sku), ("email", email)):
        if value is not None:
            plain(name, value)
    buyer_hash = state.vault.buyer_hash(email) if email else None
    found = await orders.search(
        session, merchant_id=holder.merchant_id, status=status, sku=sku, buyer_hash=buyer_hash, limit=limit
    )
    return jsonable_encoder({"orders": [orders.summary(order) for order in found]})


@router.get("/orders/{order_id}")
async def read_order(order_id: OrderId, holder: MerchantDep, session: SessionDep, state: StateDep) -> dict[str, Any]:
    """The order and its timeline; its keys masked."""
    await orders.get_order(session, order_id, holder.merchant_id)
    view = await orders.order_view(session, state.vault, order_id, with_keys=False)
    view["keys"] = await inventory.masked_keys(session, state.vault, order_id)
    return jsonable_encoder(view)


async def _act(state, order_id: str, update: str, holder, body: SupportBody | None, key: str | None) -> dict[str, Any]:
    async with state.sessionmaker() as session:
        await orders.get_order(session, order_id, holder.merchant_id)  # another shop's order: 404
    reason = body.reason if body else ""
    return await order_actions.act(
        state, order_id, update, holder.actor, reason, key, prefix="merchant", merchant_id=holder.merchant_id
    )


@router.post("/orders/{order_id}/refund")
async def refund(
    order_id: OrderId, holder: MerchantDep, state: StateDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    """Refund through the order's workflow, as support would; the actor is this person."""
    return await _act(state, order_id, c.REFUND_UPDATE, holder, body, key)


@router.post("/orders/{order_id}/resend")
async def resend(
    order_id: OrderId, holder: MerchantDep, state: StateDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    return await _act(state, order_id, c.RESEND_UPDATE, holder, body, key)


@router.post("/orders/{order_id}/cancel")
async def cancel(
    order_id: OrderId, holder: MerchantDep, state: StateDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    return await _act(state, order_id, c.CANCEL_UPDATE, holder, body, key)


@router.get("/risk")
async def read_risk(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    merchant = await accounts.by_id(session, holder.merchant_id)
    return {"rules": ShopRules(**merchant.risk_rules).model_dump()}


@router.put("/risk")
async def set_risk(body: ShopRules, holder: OwnerDep, session: SessionDep, state: StateDep) -> dict[str, Any]:
    """Tighten the platform's rules for this shop; a value that would loosen them is refused (422)."""
    rules = shop_rules.check(body.model_dump(), state.chain.rules())
    merchant = await accounts.by_id(session, holder.merchant_id)
    merchant.risk_rules = rules
    audit.record(session, holder.actor, "risk.set", merchant.slug, merchant_id=holder.merchant_id, rules=rules)
    await session.commit()
    state.shops.forget(merchant.slug)
    return {"rules": ShopRules(**rules).model_dump()}


@router.get("/tokens")
async def list_tokens(holder: OwnerDep, session: SessionDep) -> dict[str, Any]:
    live = await tokens.listing(session, holder.merchant_id)
    return {
        "tokens": [
            {"name": t.name, "role": t.role, "created_at": t.created_at, "last_used_at": t.last_used_at} for t in live
        ]
    }


@router.post("/tokens", status_code=201)
async def add_token(body: TokenCreate, holder: OwnerDep, session: SessionDep, state: StateDep) -> dict[str, Any]:
    """A staff member's token, shown once."""
    token = await tokens.add(
        session, state.vault, merchant_id=holder.merchant_id, role="staff", name=body.name, created_by=holder.actor
    )
    audit.record(session, holder.actor, "token.add", body.name, merchant_id=holder.merchant_id)
    return {"name": body.name, "role": "staff", "token": token}


@router.delete("/tokens/{name}")
async def revoke_token(name: str, holder: OwnerDep, session: SessionDep) -> dict[str, Any]:
    await tokens.revoke(session, holder.merchant_id, plain("name", name)[:32])
    audit.record(session, holder.actor, "token.revoke", name[:32], merchant_id=holder.merchant_id)
    return {"name": name, "revoked": True}
