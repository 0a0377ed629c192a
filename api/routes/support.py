"""Support staff read orders, and act through the order's workflow Updates: each answered 200, or
409 with the refusal's code and reason. Every action carries who did it."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from api import order_actions
from api.deps import SessionDep, StateDep, SupportDep
from api.schemas import OrderId, Plain, plain
from miaofa import audit, inventory, orders
from miaofa import contract as c
from miaofa.merchants import accounts
from miaofa.merchants.accounts import SLUG
from miaofa.payments import records
from miaofa.text import plain_pattern, said_pattern

router = APIRouter(prefix="/support/orders", tags=["support"])


class SupportBody(BaseModel):
    reason: Annotated[str, Plain, Field(max_length=500)] = ""


def _said(reason: str) -> str:
    if not reason.strip():
        raise PydanticCustomError("reason", "say why (the buyer's request, a ticket): it is kept in the audit log")
    return reason


class RevealBody(BaseModel):
    reason: Annotated[
        str,
        Plain,
        Field(max_length=500, json_schema_extra={"minLength": 1, "pattern": said_pattern()}),
        AfterValidator(_said),
    ]


_PLAIN = {"pattern": plain_pattern()}
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, json_schema_extra=_PLAIN)]


async def _act(
    state, order_id: str, update: str, actor: str, body: SupportBody | None, key: str | None
) -> dict[str, Any]:
    return await order_actions.act(state, order_id, update, actor, body.reason if body else "", key)


@router.get("")
async def find_orders(
    state: StateDep,
    session: SessionDep,
    actor: SupportDep,
    email: Annotated[str | None, Query(max_length=254, json_schema_extra=_PLAIN)] = None,
    status: Annotated[str | None, Query(max_length=24, json_schema_extra=_PLAIN)] = None,
    sku: Annotated[str | None, Query(max_length=64, json_schema_extra=_PLAIN)] = None,
    merchant: Annotated[str | None, Query(min_length=2, max_length=32, pattern=SLUG.pattern)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[dict[str, Any]]:
    """Find orders by buyer email (hashed here, as in the BuyerHash search attribute), status, SKU or
    shop (its slug)."""
    for name, value in (("email", email), ("status", status), ("sku", sku)):
        if value is not None:
            plain(name, value)
    buyer_hash = state.vault.buyer_hash(email) if email else None
    merchant_id = (await accounts.by_slug(session, merchant)).id if merchant else None
    found = await orders.search(
        session, buyer_hash=buyer_hash, status=status, sku=sku, merchant_id=merchant_id, limit=limit
    )
    if buyer_hash is not None:  # who looked a buyer up: by the buyer's hash, never the email
        audit.record(
            session,
            actor,
            "support.search",
            f"buyer:{buyer_hash}",
            found=len(found),
            status=status or "",
            sku=sku or "",
        )
    return jsonable_encoder([orders.summary(order) for order in found])


@router.get("/{order_id}")
async def read_order(order_id: str, state: StateDep, session: SessionDep, _: SupportDep) -> dict[str, Any]:
    """The order as support sees it: timeline, payment, notify log, and its keys masked."""
    view = await orders.order_view(session, state.vault, order_id, with_keys=False)
    view.pop("keys")
    view["payment"] = await records.payment_view(session, order_id)
    view["notifies"] = await records.notify_log(session, order_id)
    view["keys"] = await inventory.masked_keys(session, state.vault, order_id)
    return jsonable_encoder(view)


@router.post("/{order_id}/reveal")
async def reveal(order_id: OrderId, state: StateDep, actor: SupportDep, body: RevealBody) -> JSONResponse:
    """The order's keys in clear (sold, or refunded since), for a buyer who lost them: written to the
    audit log with who asked and why (a reason is required) before they are answered, never cached."""
    async with state.sessionmaker.begin() as session:
        await orders.get_order(session, order_id)
        keys = await inventory.handed_out_keys(session, state.vault, order_id)
        audit.record(session, actor, "order.keys_revealed", order_id, keys=len(keys), reason=body.reason)
    return JSONResponse({"order_id": order_id, "keys": keys}, headers={"Cache-Control": "no-store"})


@router.post("/{order_id}/refund")
async def refund(
    order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    """Refund at the gateway and mark the keys refunded."""
    return await _act(state, order_id, c.REFUND_UPDATE, actor, body, key)


@router.post("/{order_id}/resend")
async def resend(
    order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    """Send the delivery email again."""
    return await _act(state, order_id, c.RESEND_UPDATE, actor, body, key)


@router.post("/{order_id}/cancel")
async def cancel(
    order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    """Cancel an unpaid order: close its payment and release its stock."""
    return await _act(state, order_id, c.CANCEL_UPDATE, actor, body, key)


@router.post("/{order_id}/approve")
async def approve(
    order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    """Approve an order held for review: its payment is created and the saga goes on."""
    return await _act(state, order_id, c.APPROVE_UPDATE, actor, body, key)


@router.post("/{order_id}/reject")
async def reject(
    order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None, key: IdemKey = None
) -> dict[str, Any]:
    """Reject an order held for review: its stock is released, status rejected."""
    return await _act(state, order_id, c.REJECT_UPDATE, actor, body, key)
