"""A direct merchant's own gateway credentials: saved by the owner, checked with a harmless call,
shown only masked. The secrets go into the vault and nowhere else: not into an answer, a log line,
an error, the audit log or a workflow."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import Field

from api import shop_settings
from api.deps import OwnerDep, SessionDep, StateDep
from miaofa.direct import credentials

router = APIRouter(prefix="/merchant/gateways", tags=["merchant"])

GatewayName = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
Fields = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=credentials.MAX_VALUE_CHARS)]],
    Body(description="The gateway's credential fields (as its MIAOFA_<GATEWAY>__* settings)"),
]


def _view(row: Any, state: Any) -> dict[str, Any]:
    return {
        "gateway": row.gateway,
        "summary": row.summary,
        "notify_url": shop_settings.notify_url(state, row.merchant_id, row.gateway),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@router.get("")
async def list_gateways(holder: OwnerDep, session: SessionDep, state: StateDep) -> dict[str, Any]:
    """The shop's own gateway accounts, masked."""
    await credentials.ensure_direct(session, holder.merchant_id)
    return {"gateways": [_view(row, state) for row in await credentials.listing(session, holder.merchant_id)]}


@router.put("/{gateway}")
async def save_gateway(gateway: GatewayName, fields: Fields, holder: OwnerDep, state: StateDep) -> dict[str, Any]:
    """Save (or replace) the shop's credentials for a gateway, after a harmless call with them."""
    row, checked = await shop_settings.save_gateway(state, holder, gateway, fields)
    return {**_view(row, state), "checked": checked}


@router.delete("/{gateway}", status_code=204, response_class=Response)
async def delete_gateway(gateway: GatewayName, holder: OwnerDep, state: StateDep) -> Response:
    """Remove the shop's credentials for a gateway: its orders there can no longer be paid, queried or refunded."""
    await shop_settings.remove_gateway(state, holder, gateway)
    return Response(status_code=204)
