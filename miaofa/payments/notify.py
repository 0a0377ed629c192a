"""One notify, from raw request to answer: verify → records.accept_notify → signal the order or review → ack.

Shared by the notify route and `miaofa notify replay` (each passes its sessionmaker and its way to
the orders, a Signaller), so a replayed notify goes exactly the way a fresh one would. What we keep
of a request: its headers (with `:method`) and its body, or for a GET its query string in place of
the body.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import QueryParams

from miaofa import contract as c
from miaofa.gateways.base import Ack, Gateway, InvalidNotify
from miaofa.payments import records
from miaofa.payments.proof import Proof
from miaofa.telemetry import logs
from miaofa.telemetry.registry import CALLBACK_LAG, NOTIFIES, REJECTED_UNLOGGED
from miaofa.temporal.signals import Signaller

log = logging.getLogger("miaofa.api.notify")
METHOD_HEADER = ":method"  # a pseudo-header in the stored headers: GET notifies are replayed as GETs
ACCOUNT_HEADER = ":account"  # the direct merchant whose URL it came to: replayed with its keys only


@dataclass(frozen=True)
class Handled:
    outcome: str  # accepted | duplicate | stray | ignored | foreign | rejected
    detail: str
    ack: Ack


def stored_request(
    method: str, headers: Mapping[str, str], body: bytes, query: str, account: str | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body as the notify log keeps them."""
    kept = {METHOD_HEADER: method, **{name.lower(): value for name, value in headers.items()}}
    if account is not None:
        kept[ACCOUNT_HEADER] = account
    return kept, (query.encode() if method == "GET" and not body else body)


def replayed_request(headers: Mapping[str, str], body: str) -> tuple[dict[str, str], bytes, QueryParams]:
    """The stored notify back as the adapter first saw it."""
    request_headers = {name: value for name, value in headers.items() if name not in (METHOD_HEADER, ACCOUNT_HEADER)}
    if headers.get(METHOD_HEADER) == "GET":
        return request_headers, b"", QueryParams(body)
    return request_headers, body.encode(), QueryParams("")


async def handle(
    sessionmaker: async_sessionmaker[AsyncSession],
    signaller: Signaller,
    gateway: str,
    adapter: Gateway,
    headers: Mapping[str, str],
    body: bytes,
    query: Mapping[str, str],
    stored: tuple[Mapping[str, str], bytes],
    may_log_rejected: Callable[[], bool],
    account: str | None = None,
) -> Handled:
    """account: the direct merchant the notify URL names, whose keys `adapter` holds (None: the platform)."""
    stored_headers, stored_body = stored
    logs.bind_order(None)  # a replay runs many notifies in one task
    try:
        notice = await adapter.verify_notify(headers, body, query)
    except InvalidNotify as exc:
        # Stored cut short, and only so many per second per gateway: a flood of forgeries is counted,
        # not written.
        if may_log_rejected():
            async with sessionmaker.begin() as session:
                await records.log_rejected_notify(session, gateway, stored_headers, stored_body, str(exc))
        else:
            REJECTED_UNLOGGED.labels(gateway).inc()
        return _done(gateway, "rejected", str(exc), adapter.nack(str(exc)))

    proof = Proof(
        notice.payment_id,
        notice.order_id,
        notice.status,
        notice.amount_cents,
        notice.currency,
        notice.paid_at,
        notice.merchant_id,
    )
    async with sessionmaker.begin() as session:
        decision = await records.accept_notify(
            session, gateway, adapter.merchant_id, proof, stored_headers, stored_body, account
        )
    logs.bind_order(decision.order_id)
    if decision.outcome == "foreign":
        return _done(gateway, decision.outcome, "another merchant's payment", adapter.nack("not ours"))
    outcome, stray = decision.outcome, decision.stray
    if outcome == "accepted" and proof.paid_at is not None and proof.paid_at.tzinfo is not None:
        lag = (datetime.now(UTC) - proof.paid_at).total_seconds()
        if lag >= 0:  # a gateway clock ahead of ours says nothing about the lag
            CALLBACK_LAG.labels(gateway).observe(lag)
    if outcome == "accepted" and decision.order_id is not None:
        if not await signaller.payment(decision.order_id, decision.notify_id):
            outcome = "stray"  # the order's workflow has closed: the money goes back
            stray = c.StrayPayment(
                gateway=gateway,
                payment_id=proof.payment_id,
                order_id=proof.order_id,
                amount_cents=proof.amount_cents,
                currency=proof.currency,
                reason="order_closed",
                found_by="notify",
            )
            async with sessionmaker.begin() as session:
                await records.mark_orphaned(session, decision.notify_id)
    if stray is not None:
        await signaller.stray(stray)
    # Acknowledged once the notify is logged and handed on: the gateway may stop retrying.
    return _done(gateway, outcome, decision.order_id or "", adapter.ack())


def _done(gateway: str, outcome: str, detail: str, ack: Ack) -> Handled:
    log.info("notify from %s: %s %s", gateway, outcome, detail)
    NOTIFIES.labels(gateway, outcome).inc()
    return Handled(outcome, detail, ack)
