"""A direct merchant's own gateway credentials: saved by the owner, checked with a harmless call,
shown only masked. The secrets go into the vault and nowhere else: not into an answer, a log line,
an error, the audit log or a workflow."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import Field

from api.deps import OwnerDep, SessionDep, StateDep
from miaofa.direct import credentials, probe
from miaofa.direct.book import trial
from miaofa.errors import InvalidInput
from miaofa.gateways.config import EpaySettings

router = APIRouter(prefix="/merchant/gateways", tags=["merchant"])

GatewayName = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
MAX_FIELDS = 16
Fields = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=credentials.MAX_VALUE_CHARS)]],
    Body(description="The gateway's credential fields (as its MIAOFA_<GATEWAY>__* settings)"),
]


def _view(row: Any, state: Any) -> dict[str, Any]:
    # Where the gateway must send this account's notifies (Stripe's webhook endpoint is set by hand).
    notify_url = f"{state.settings.notify_url_base.rstrip('/')}/payments/{row.gateway}/notify/m/{row.merchant_id}"
    return {
        "gateway": row.gateway,
        "summary": row.summary,
        "notify_url": notify_url,
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
    if gateway not in credentials.SPECS:
        raise InvalidInput(f"no gateway {gateway!r}; one of {', '.join(credentials.SPECS)}", error="unknown_gateway")
    if len(fields) > MAX_FIELDS:
        raise InvalidInput(f"at most {MAX_FIELDS} fields")
    async with state.sessionmaker() as session:
        await credentials.ensure_direct(session, holder.merchant_id)
    platform = next((s for s in state.settings.gateway_settings() if s.name == gateway), None)
    creds = credentials.check(gateway, fields, platform, state.settings.webhook_allow_networks)
    async with trial(state.settings, gateway, creds) as adapter:
        epay = None
        if isinstance(creds, EpaySettings):
            epay = (creds.api_url, creds.pid, creds.key.get_secret_value())
        checked = await probe.probe(gateway, adapter, epay)
    async with state.sessionmaker.begin() as session:
        row = await credentials.save(session, state.vault, holder.merchant_id, gateway, creds, holder.actor)
        answer = {**_view(row, state), "checked": checked == "checked"}
    state.book.forget(holder.merchant_id, gateway)
    return answer


@router.delete("/{gateway}", status_code=204, response_class=Response)
async def delete_gateway(gateway: GatewayName, holder: OwnerDep, state: StateDep) -> Response:
    """Remove the shop's credentials for a gateway: its orders there can no longer be paid, queried or refunded."""
    async with state.sessionmaker.begin() as session:
        await credentials.remove(session, holder.merchant_id, gateway, holder.actor)
    state.book.forget(holder.merchant_id, gateway)
    return Response(status_code=204)
