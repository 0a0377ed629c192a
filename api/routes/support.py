"""Support staff act through the order's workflow Updates: each answered 200 or 409 with a reason."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from api import orders_flow
from api.deps import StateDep, SupportDep
from miaofa import contract as c
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/support/orders", tags=["support"])


class SupportBody(BaseModel):
    reason: str = Field(default="", max_length=500)


async def _act(state, order_id: str, update, actor: str, body: SupportBody | None, key: str | None) -> dict[str, Any]:
    await orders_flow.ensure_exists(state, order_id)
    request = c.SupportRequest(reason=(body.reason if body else ""), actor=actor)
    # An Idempotency-Key makes a retried click the same Update, answered once.
    update_id = f"{update.__name__}-{key or uuid.uuid4().hex}"
    result: c.SupportResult = await orders_flow.run_update(state, order_id, update, request, update_id)
    return {"order_id": result.order_id, "status": result.status, "detail": result.detail}


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


@router.post("/{order_id}/refund")
async def refund(order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None,
                 key: IdemKey = None) -> dict[str, Any]:
    """Refund at the gateway and mark the keys refunded."""
    return await _act(state, order_id, OrderWorkflow.refund, actor, body, key)


@router.post("/{order_id}/resend")
async def resend(order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None,
                 key: IdemKey = None) -> dict[str, Any]:
    """Send the delivery email again."""
    return await _act(state, order_id, OrderWorkflow.resend, actor, body, key)


@router.post("/{order_id}/cancel")
async def cancel(order_id: str, state: StateDep, actor: SupportDep, body: SupportBody | None = None,
                 key: IdemKey = None) -> dict[str, Any]:
    """Cancel an unpaid order: close its payment and release its stock."""
    return await _act(state, order_id, OrderWorkflow.cancel, actor, body, key)
