"""Reconciliation (对账): a gateway's statement of a time window against our orders.

Each mismatch becomes a finding with what is done about it:
- the order's payment, paid, but the order is not delivered → nudge the order (it asks the
  gateway itself), or refund when its workflow has closed;
- a payment for an unknown order, another payment for an order, or the wrong amount → refund;
- an order we delivered that the gateway does not show as paid, or refunded at the gateway but
  delivered here → flag for a person (nothing automatic can make that right).
"""

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import audit, orders
from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.models import Merchant, Order, Payment, ReconcileFinding
from miaofa.gateways.base import PaymentState
from miaofa.payments.proof import Proof, judge, order_at

NUDGE = "nudge_order"
REFUND = "refund"
FLAG = "flag"
SETTLED = (c.DELIVERED, c.REFUNDED)


@dataclass(frozen=True)
class Finding:
    # paid_not_delivered | unknown_order | other_payment | wrong_amount | delivered_not_paid | refunded_at_gateway
    kind: str
    action: str  # NUDGE | REFUND | FLAG
    gateway: str
    payment_id: str
    order_id: str
    amount_cents: int
    currency: str

    def stray(self, reason: str | None = None) -> c.StrayPayment:
        return c.StrayPayment(
            gateway=self.gateway,
            payment_id=self.payment_id,
            order_id=self.order_id,
            amount_cents=self.amount_cents,
            currency=self.currency,
            reason=reason or self.kind,
            found_by="reconcile",
        )


async def compare(
    session: AsyncSession,
    gateway: str,
    entries: list[PaymentState],
    start: datetime,
    end: datetime,
    account: str | None = None,
) -> list[Finding]:
    """account: the direct merchant whose own statement this is (None: the platform's). Only orders
    of that account are its to settle; money in it for another account's order, or for no order of
    ours in a merchant's account, is flagged for a person: a refund would go through the order's
    account, which is not where the money is."""
    order_ids = {entry.order_id for entry in entries if len(entry.order_id) <= 40}
    known = {order.id: order for order in await session.scalars(select(Order).where(Order.id.in_(order_ids)))}
    paid_rows = {p.order_id: p for p in await session.scalars(select(Payment).where(Payment.order_id.in_(order_ids)))}
    direct = set(
        await session.scalars(
            select(Order.id)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .where(Order.id.in_(order_ids), Merchant.settlement == "direct")
        )
    )
    findings = []
    for entry in entries:
        order, payment = known.get(entry.order_id), paid_rows.get(entry.order_id)
        found = _finding(gateway, entry)
        theirs = order.merchant_id if order is not None and order.id in direct else None
        if (order is None and account is not None) or (order is not None and theirs != account):
            if entry.status == "paid":
                findings.append(replace(found, kind="foreign_account", action=FLAG))
            continue
        if entry.status == "refunded":
            ours = order_at(order, gateway)
            if (
                ours is not None
                and ours.status == c.DELIVERED
                and payment is not None
                and payment.payment_id == entry.payment_id
            ):
                findings.append(replace(found, kind="refunded_at_gateway", action=FLAG))
            continue
        proof = Proof(entry.payment_id, entry.order_id, entry.status, entry.amount_cents, entry.currency, entry.paid_at)
        judgement = judge(order, payment, proof, gateway=gateway)
        if judgement.verdict == s.STRAY:
            findings.append(replace(found, kind=judgement.reason, action=REFUND))
        elif judgement.verdict in (s.ACCEPTED, s.DUPLICATE) and order is not None and order.status not in SETTLED:
            findings.append(replace(found, kind="paid_not_delivered", action=NUDGE))
    seen = {entry.payment_id for entry in entries}
    in_account = Merchant.id == account if account is not None else Merchant.settlement != "direct"
    delivered = await session.execute(
        select(Order.id, Payment.payment_id, Order.amount_cents, Order.currency)
        .join(Payment, Payment.order_id == Order.id)
        .join(Merchant, Merchant.id == Order.merchant_id)
        .where(Order.gateway == gateway, Order.status == c.DELIVERED, Order.paid_at >= start, Order.paid_at < end)
        .where(in_account)
    )
    for order_id, payment_id, amount, currency in delivered.all():
        if payment_id not in seen:
            findings.append(Finding("delivered_not_paid", FLAG, gateway, payment_id, order_id, amount, currency))
    return findings


def _finding(gateway: str, entry: PaymentState) -> Finding:
    return Finding("", "", gateway, entry.payment_id, entry.order_id, entry.amount_cents, entry.currency)


async def save(session: AsyncSession, findings: list[Finding], at: datetime) -> None:
    """Keep each finding once, counting how often it was seen; a new one goes on its order's timeline."""
    for finding in findings:
        inserted = await session.execute(
            insert(ReconcileFinding)
            .values(
                gateway=finding.gateway,
                payment_id=finding.payment_id,
                order_id=finding.order_id[:64],
                kind=finding.kind,
                action=finding.action,
                amount_cents=finding.amount_cents,
                currency=finding.currency,
                first_seen_at=at,
                last_seen_at=at,
                times_seen=1,
            )
            .on_conflict_do_update(
                index_elements=["gateway", "payment_id", "kind"],
                set_={"action": finding.action, "last_seen_at": at, "times_seen": ReconcileFinding.times_seen + 1},
            )
            .returning(ReconcileFinding.times_seen)
        )
        if inserted.scalar_one() != 1:
            continue
        audit.record(
            session,
            "reconcile",
            f"reconcile.{finding.kind}",
            f"{finding.gateway}:{finding.payment_id}",
            order_id=finding.order_id,
            repair=finding.action,
        )
        if await session.get(Order, finding.order_id[:40]) is not None:
            await orders.add_event(
                session, finding.order_id, "reconcile", at, {"kind": finding.kind, "action": finding.action}, once=False
            )


async def report(session: AsyncSession, limit: int = 100) -> list[ReconcileFinding]:
    return list(
        await session.scalars(
            select(ReconcileFinding)
            .order_by(ReconcileFinding.last_seen_at.desc(), ReconcileFinding.id.desc())
            .limit(limit)
        )
    )
