"""Gateway notify endpoints, thin: verify → payments.accept_notify → signal the order or review → ack."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import metrics, order_client
from api.deps import StateDep
from miaofa import contract as c
from miaofa import payments
from miaofa.errors import NotFound
from miaofa.gateways.base import Ack, InvalidNotify

router = APIRouter(tags=["payments"])
log = logging.getLogger("miaofa.api.notify")


def _reply(ack: Ack) -> Response:
    return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)


@router.api_route("/payments/{gateway}/notify", methods=["GET", "POST"])
async def payment_notify(gateway: str, request: Request, state: StateDep) -> Response:
    """Each gateway is answered in its own way. A verified notify is logged with what it proves; the
    order confirms it against that log row. Money no open order can take is reviewed and refunded."""
    adapter = state.gateways.get(gateway)
    if adapter is None:
        raise NotFound(f"no gateway {gateway[:32]!r} is configured", error="unknown_gateway")
    body = await request.body()  # at most MAX_NOTIFY_BODY_BYTES: api/limits.py stops a larger one (413)
    try:
        notice = await adapter.verify_notify(request.headers, body, request.query_params)
    except InvalidNotify as exc:
        # Stored cut short, and only so many per second per gateway: a flood of forgeries is counted,
        # not written.
        if request.app.state.rejected_notifies.allow(gateway):
            async with state.sessionmaker.begin() as session:
                await payments.log_rejected_notify(session, gateway, request.headers, body, str(exc))
        else:
            metrics.REJECTED_UNLOGGED.labels(gateway).inc()
        return _done(gateway, "rejected", str(exc), adapter.nack(str(exc)))

    proof = payments.Proof(notice.payment_id, notice.order_id, notice.status, notice.amount_cents, notice.currency,
                           notice.paid_at, notice.merchant_id)
    async with state.sessionmaker.begin() as session:
        decision = await payments.accept_notify(session, gateway, adapter.merchant_id, proof, request.headers, body)
    if decision.outcome == "foreign":
        return _done(gateway, decision.outcome, "another merchant's payment", adapter.nack("not ours"))
    outcome, stray = decision.outcome, decision.stray
    if outcome == "accepted" and decision.order_id is not None:
        if not await order_client.signal_payment(state, decision.order_id, decision.notify_id):
            outcome = "stray"  # the order's workflow has closed: the money goes back
            stray = c.StrayPayment(gateway=gateway, payment_id=proof.payment_id, order_id=proof.order_id,
                                   amount_cents=proof.amount_cents, currency=proof.currency, reason="order_closed",
                                   found_by="notify")
            async with state.sessionmaker.begin() as session:
                await payments.mark_orphaned(session, decision.notify_id)
    if stray is not None:
        await order_client.review_stray(state, stray)
    # Acknowledged once the notify is logged and handed on: the gateway may stop retrying.
    return _done(gateway, outcome, decision.order_id or "", adapter.ack())


def _done(gateway: str, outcome: str, detail: str, ack: Ack) -> Response:
    log.info("notify from %s: %s %s", gateway, outcome, detail)
    metrics.NOTIFIES.labels(gateway, outcome).inc()
    return _reply(ack)
