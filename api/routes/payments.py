"""Gateway notify endpoints: verify, check against the order, record raw, signal the workflow."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import metrics, orders_flow
from api.deps import StateDep
from miaofa import contract as c
from miaofa.db.models import NotifyLog, Order, Payment
from miaofa.gateways.base import Ack, InvalidNotify
from sqlalchemy import select

router = APIRouter(tags=["payments"])
log = logging.getLogger("miaofa.api.notify")
REDACTED_HEADERS = {"authorization", "cookie"}


def _reply(ack: Ack) -> Response:
    return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)


@router.api_route("/payments/{gateway}/notify", methods=["GET", "POST"])
async def payment_notify(gateway: str, request: Request, state: StateDep) -> Response:
    """Each gateway is answered in its own way; only a verified, matching notify moves an order."""
    adapter = state.gateways.get(gateway)
    if adapter is None:
        return Response("unknown gateway", status_code=404, media_type="text/plain")
    body = await request.body()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in REDACTED_HEADERS}
    entry = NotifyLog(gateway=gateway, headers=headers, body=body.decode("utf-8", "replace")[:20000], outcome="")

    async def finish(outcome: str, detail: str, ack: Ack, order_id: str | None = None) -> Response:
        entry.outcome, entry.detail, entry.order_id = outcome, detail, order_id
        async with state.sessionmaker.begin() as session:
            session.add(entry)
        log.info("notify from %s: %s (%s)", gateway, outcome, detail)
        metrics.NOTIFIES.labels(gateway, outcome).inc()
        return _reply(ack)

    try:
        notice = adapter.verify_notify(request.headers, body, request.query_params)
    except InvalidNotify as exc:
        return await finish("rejected", str(exc), adapter.nack(str(exc)))

    async with state.sessionmaker() as session:
        order = await session.get(Order, notice.order_id)
        payment = await session.scalar(select(Payment).where(Payment.order_id == notice.order_id))
    if order is None or payment is None or order.gateway != gateway:
        return await finish("unknown_order", "no such order for this gateway", adapter.nack("unknown order"),
                            None)
    if (notice.payment_id != payment.payment_id or notice.amount_cents != order.amount_cents
            or notice.currency != order.currency):
        return await finish("mismatch", "payment id, amount or currency differ from the order",
                            adapter.nack("mismatch"), order.id)
    if notice.status != "paid" or notice.paid_at is None:
        return await finish("ignored", f"status {notice.status}", adapter.ack(), order.id)

    signalled = await orders_flow.signal_payment(state, order.id, c.PaymentNotice(
        payment_id=notice.payment_id, amount_cents=notice.amount_cents, currency=notice.currency,
        paid_at=notice.paid_at, source="notify"))
    if not signalled:
        # The order's workflow closed long ago: keep the proof for reconciliation to refund.
        return await finish("orphan_paid", "order workflow closed; left for reconciliation", adapter.ack(), order.id)
    return await finish("accepted", "signalled", adapter.ack(), order.id)
