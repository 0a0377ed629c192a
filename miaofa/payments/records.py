"""Payment rows, the notify log, and what a judged proof changes (miaofa/payments/proof.py judges)."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import audit, orders
from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.models import AuditLog, NotifyLog, Order, Payment
from miaofa.direct.book import account_of
from miaofa.payments.proof import FOREIGN, OTHER_ACCOUNT, Accounts, Proof, judge, order_at

# What is kept of a notify: enough to investigate, bounded whatever a client sends. A rejected one
# (anybody can send it) is kept to ~2 KiB in all: 1 KiB of body, 768 characters of headers.
MAX_STORED_BODY = 16 * 1024
MAX_STORED_REJECTED_BODY = 1024
MAX_STORED_HEADERS = 40
MAX_STORED_HEADER_NAME = 64
MAX_STORED_HEADER_VALUE = 512
MAX_STORED_REJECTED_HEADERS = 768  # names and values together
MAX_STORED_REJECTED_DETAIL = 200
REDACTED_HEADERS = {"authorization", "cookie"}


async def order_and_payment(
    session: AsyncSession, order_id: str, *, lock: bool = False
) -> tuple[Order | None, Payment | None]:
    order = await session.get(Order, order_id, with_for_update=lock)
    payment = None
    if order is not None:
        payment = await session.scalar(select(Payment).where(Payment.order_id == order_id))
    return order, payment


async def record_created(
    session: AsyncSession,
    *,
    order_id: str,
    gateway: str,
    payment_id: str,
    pay_url: str,
    amount_cents: int,
    currency: str,
    at: datetime,
) -> None:
    """The gateway payment of an order; a retried step finds the row already there."""
    await session.execute(
        insert(Payment)
        .values(
            order_id=order_id,
            gateway=gateway,
            payment_id=payment_id,
            pay_url=pay_url,
            amount_cents=amount_cents,
            currency=currency,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )
    await orders.add_event(session, order_id, "payment_created", at, {"gateway": gateway})


# ---- notifies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyDecision:
    notify_id: int
    outcome: str  # accepted | duplicate | stray | ignored | foreign
    order_id: str | None
    stray: c.StrayPayment | None = None


def _stored_headers(headers: Mapping[str, str], budget: int | None = None) -> dict[str, str]:
    """The headers worth keeping: at most MAX_STORED_HEADERS, each cut, and with a budget at most that
    many characters of names and values in all."""
    stored: dict[str, str] = {}
    left = budget
    for name, value in headers.items():
        if len(stored) >= MAX_STORED_HEADERS or (left is not None and left <= 0):
            break
        if name.lower() in REDACTED_HEADERS:
            continue
        name = name[:MAX_STORED_HEADER_NAME].replace("\x00", "")
        value = value[:MAX_STORED_HEADER_VALUE].replace("\x00", "")
        if left is not None:
            name = name[:left]
            value = value[: max(left - len(name), 0)]
            left -= len(name) + len(value)
        stored[name] = value
    return stored


async def log_rejected_notify(
    session: AsyncSession, gateway: str, headers: Mapping[str, str], body: bytes, reason: str
) -> None:
    """A notify that failed verification: kept compact (~2 KiB at most), for investigation only."""
    session.add(
        NotifyLog(
            gateway=gateway,
            headers=_stored_headers(headers, MAX_STORED_REJECTED_HEADERS),
            outcome="rejected",
            detail=reason[:MAX_STORED_REJECTED_DETAIL].replace("\x00", ""),
            body=body[:MAX_STORED_REJECTED_BODY].decode("utf-8", "replace").replace("\x00", ""),
        )
    )


async def accept_notify(
    session: AsyncSession,
    gateway: str,
    merchant_id: str,
    proof: Proof,
    headers: Mapping[str, str],
    body: bytes,
    account: str | None = None,
) -> NotifyDecision:
    """Judge a verified notify and log it with its proof; the caller signals the order or starts a review.
    account: the direct merchant whose keys verified it (None: the platform's)."""
    order, payment = await order_and_payment(session, proof.order_id)
    order_account = await account_of(session, order.id) if order is not None else None
    accounts = Accounts(account, order_account)
    judgement = judge(order, payment, proof, gateway=gateway, merchant_id=merchant_id, accounts=accounts)
    outcome = {
        s.ACCEPTED: "accepted",
        s.DUPLICATE: "duplicate",
        s.STRAY: "stray",
        s.NOT_PAID: "ignored",
        FOREIGN: "foreign",
    }[judgement.verdict]
    # Logged on its order when the notify could be that order's (never on another account's order).
    ours = order_at(order, gateway) if judgement.reason != OTHER_ACCOUNT else None
    entry = NotifyLog(
        gateway=gateway,
        headers=_stored_headers(headers),
        outcome=outcome,
        detail=judgement.reason or proof.status,
        order_id=ours.id if ours else None,
        proof=proof.to_json(),
        body=body[:MAX_STORED_BODY].decode("utf-8", "replace").replace("\x00", ""),
    )
    session.add(entry)
    await session.flush()
    stray = None
    if judgement.verdict == s.STRAY:
        stray = c.StrayPayment(
            gateway=gateway,
            payment_id=proof.payment_id,
            order_id=proof.order_id,
            amount_cents=proof.amount_cents,
            currency=proof.currency,
            reason=judgement.reason,
            found_by="notify",
        )
    return NotifyDecision(entry.id, outcome, entry.order_id, stray)


async def mark_orphaned(session: AsyncSession, notify_id: int) -> None:
    """The order's workflow has closed: the notify's payment goes to review (and refund) instead."""
    await session.execute(
        update(NotifyLog).where(NotifyLog.id == notify_id).values(outcome="stray", detail="order_closed")
    )


# ---- the order's side -----------------------------------------------------------------------


async def accept_proof(session: AsyncSession, step: s.AcceptPaymentStep) -> s.PaymentVerdict:
    """Confirm a proof for the order and, when it is the order's payment, mark the order paid.

    A notify is confirmed only through its verified log row, so a bare signal proves nothing.
    """
    order, payment = await order_and_payment(session, step.order_id, lock=True)
    if order is None:
        return s.PaymentVerdict(s.UNCONFIRMED, reason="no such order")
    if step.source == "free":
        if order.amount_cents != 0:
            return s.PaymentVerdict(s.UNCONFIRMED, reason="the order is not free")
        await _mark_paid(session, order, None, step.source, step.at, step.at)
        return s.PaymentVerdict(s.ACCEPTED, paid_at=step.at)
    if step.notify_id is not None:
        row = await session.get(NotifyLog, step.notify_id)
        if row is None or row.order_id != order.id or row.proof is None or row.outcome not in ("accepted", "duplicate"):
            return s.PaymentVerdict(s.UNCONFIRMED, reason="no verified notify behind the signal")
        proof, gateway = Proof.from_json(row.proof), row.gateway
    else:  # the order's own gateway answered its poll
        proof, gateway = Proof(step.payment_id, order.id, "paid", step.amount_cents, step.currency, step.paid_at), None
    judgement = judge(order, payment, proof, gateway=gateway)
    if judgement.verdict == s.ACCEPTED:
        await _mark_paid(session, order, payment, step.source, proof.paid_at or step.at, step.at)
    return s.PaymentVerdict(
        judgement.verdict,
        proof.payment_id,
        proof.amount_cents,
        proof.currency,
        proof.paid_at or step.at,
        judgement.reason,
    )  # some gateways send no payment time


async def _mark_paid(
    session: AsyncSession, order: Order, payment: Payment | None, source: str, paid_at: datetime, at: datetime
) -> None:
    # With a payment, judge accepts it once (its status turns "paid" here, under the order's lock), so
    # the timeline needs no look first; a free order has no such guard.
    once = payment is None
    await orders.add_event(session, order.id, s.SOURCE_STAGES.get(source, source), at, once=once)
    await orders.add_event(session, order.id, "paid", paid_at, {"source": source}, once=once)
    await orders.move(session, order.id, c.PAID, paid_at, paid_at=paid_at)
    if payment is not None:
        payment.status, payment.paid_at = "paid", paid_at


async def mark_refunded(session: AsyncSession, order_id: str, at: datetime) -> None:
    await session.execute(update(Payment).where(Payment.order_id == order_id).values(status="refunded", refunded_at=at))


async def record_refund_by_hand(session: AsyncSession, step: s.RefundStep, at: datetime) -> None:
    """The gateway cannot refund (epusdt): a person must send the money back. Said once per refund id."""
    seen = await session.scalar(
        select(AuditLog.id).where(AuditLog.action == "payment.refund_by_hand", AuditLog.target == step.refund_id[:80])
    )
    if seen is not None:
        return
    audit.record(
        session,
        "system",
        "payment.refund_by_hand",
        step.refund_id,
        gateway=step.gateway,
        payment_id=step.payment_id,
        amount_cents=step.amount_cents,
    )
    if step.order_id and await session.get(Order, step.order_id) is not None:
        await orders.add_event(
            session, step.order_id, "refund_by_hand", at, {"gateway": step.gateway, "amount_cents": step.amount_cents}
        )


async def record_stray_outcome(
    session: AsyncSession, stray: c.StrayPayment, outcome: str, refund_id: str, at: datetime, detail: str = ""
) -> None:
    """A reviewed stray payment: in the audit log, and on its order's timeline when we know the order."""
    audit.record(
        session,
        "system",
        f"payment.stray_{outcome}",
        f"{stray.gateway}:{stray.payment_id}",
        order_id=stray.order_id,
        reason=stray.reason,
        found_by=stray.found_by,
        amount_cents=stray.amount_cents,
        currency=stray.currency,
        refund_id=refund_id,
        detail=detail,
    )
    order, _ = await order_and_payment(session, stray.order_id)
    if order is not None:
        await orders.add_event(
            session,
            order.id,
            f"stray_payment_{outcome}",
            at,
            {"payment_id": stray.payment_id, "reason": stray.reason, "found_by": stray.found_by},
            once=False,
        )


async def notify_log(session: AsyncSession, order_id: str) -> list[dict[str, Any]]:
    """What the gateways told us about an order, for support (bodies stay in the database)."""
    rows = await session.scalars(select(NotifyLog).where(NotifyLog.order_id == order_id).order_by(NotifyLog.id))
    return [
        {
            "id": row.id,
            "gateway": row.gateway,
            "received_at": row.received_at,
            "outcome": row.outcome,
            "detail": row.detail,
            "proof": row.proof,
        }
        for row in rows
    ]


async def payment_view(session: AsyncSession, order_id: str) -> dict[str, Any] | None:
    payment = await session.scalar(select(Payment).where(Payment.order_id == order_id))
    if payment is None:
        return None
    return {
        "gateway": payment.gateway,
        "payment_id": payment.payment_id,
        "status": payment.status,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "paid_at": payment.paid_at,
        "refunded_at": payment.refunded_at,
    }
