"""Gateway notify endpoints, thin: read the request, hand it to miaofa/payments/notify.py, answer as the
gateway wants."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import StateDep
from api.state import State
from miaofa.errors import NotFound
from miaofa.gateways.base import Gateway
from miaofa.payments import notify
from miaofa.temporal.signals import Signaller

router = APIRouter(tags=["payments"])


# Not in the OpenAPI schema: it is no API for clients but each gateway's own protocol (form, JSON or
# query, signed its own way; README "Payment gateways"), which a schema cannot state: anything a
# fuzzer would call valid is an unsigned notify, refused with the gateway's own nack.
@router.api_route("/payments/{gateway}/notify", methods=["GET", "POST"], include_in_schema=False)
async def payment_notify(gateway: str, request: Request, state: StateDep) -> Response:
    """Each gateway is answered in its own way. A verified notify is logged with what it proves; the
    order confirms it against that log row. Money no open order can take is reviewed and refunded."""
    adapter = state.gateways.get(gateway)
    if adapter is None:
        raise NotFound(f"no gateway {gateway[:32]!r} is configured", error="unknown_gateway")
    return await _handle(gateway, adapter, None, request, state)


@router.api_route("/payments/{gateway}/notify/m/{merchant_id}", methods=["GET", "POST"], include_in_schema=False)
async def merchant_payment_notify(gateway: str, merchant_id: str, request: Request, state: StateDep) -> Response:
    """A direct merchant's own account: verified with that merchant's keys only, and only for its orders."""
    adapter = await state.book.for_account(gateway, merchant_id) if len(merchant_id) <= 32 else None
    if adapter is None:
        raise NotFound("no such gateway account", error="unknown_gateway")
    return await _handle(gateway, adapter, merchant_id, request, state)


async def _handle(gateway: str, adapter: Gateway, account: str | None, request: Request, state: State) -> Response:
    body = await request.body()  # at most MAX_NOTIFY_BODY_BYTES: api/limits.py stops a larger one (413)
    stored = notify.stored_request(request.method, request.headers, body, request.url.query, account)
    handled = await notify.handle(
        state.sessionmaker,
        Signaller(state.temporal, state.task_queue),
        gateway,
        adapter,
        request.headers,
        body,
        request.query_params,
        stored,
        lambda: state.rejected_notifies.allow(gateway),
        account,
    )
    return Response(handled.ack.body, status_code=handled.ack.status_code, media_type=handled.ack.media_type)
