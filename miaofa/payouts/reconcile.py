"""Payout reconciliation: a rail's own record of transfers against our withdrawals and their money.

Nothing here repairs: a transfer the rail paid while our books gave the money back, or one we call
paid that the rail never paid, is money a person must look at. Each mismatch is a finding in
`reconcile_findings` (gateway `payout:<rail>`, the transfer number), kept once and counted, and on
the audit log; `miaofa reconcile report` lists them.
"""

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.payout_tables import Withdrawal
from miaofa.payments.reconcile import FLAG, Finding
from miaofa.payouts.rails import RailTransfer

RELEASED = (c.WITHDRAWAL_FAILED, c.WITHDRAWAL_REJECTED)  # the money went back to the merchant


async def compare(
    session: AsyncSession, rail: str, transfers: list[RailTransfer], start: datetime, end: datetime
) -> list[Finding]:
    """Mismatches between the rail's transfers and the withdrawals on that rail (those made in the
    window, and every one the rail names)."""
    by_number = {t.number: t for t in transfers}
    rows = await session.scalars(
        select(Withdrawal).where(
            Withdrawal.rail == rail,
            or_(Withdrawal.created_at.between(start, end), Withdrawal.id.in_(list(by_number))),
        )
    )
    ours = {w.id: w for w in rows}
    gateway = f"payout:{rail}"
    findings: list[Finding] = []

    def found(kind: str, number: str, amount: int, currency: str) -> None:
        findings.append(Finding(kind, FLAG, gateway, number, number, amount, currency))

    for number, transfer in by_number.items():
        if transfer.status != s.TRANSFER_PAID:
            continue
        withdrawal = ours.get(number)
        if withdrawal is None:
            found("payout_unknown_transfer", number, transfer.amount_cents, transfer.currency)
        elif withdrawal.status in RELEASED:
            found("payout_paid_but_released", number, transfer.amount_cents, transfer.currency)
        elif transfer.amount_cents != withdrawal.amount_cents - withdrawal.fee_cents:
            found("payout_amount_mismatch", number, transfer.amount_cents, transfer.currency)
        elif withdrawal.status in c.WITHDRAWAL_OPEN and withdrawal.updated_at < end:
            found("payout_paid_not_settled", number, transfer.amount_cents, transfer.currency)
    for number, withdrawal in ours.items():
        # Paid after the stretch read (a day bill not out yet): that later day's bill will show it.
        if withdrawal.status != c.WITHDRAWAL_PAID or withdrawal.updated_at >= end:
            continue
        at_rail = by_number.get(number)
        if at_rail is None or at_rail.status not in (s.TRANSFER_PAID, s.TRANSFER_RETURNED):
            sent = withdrawal.amount_cents - withdrawal.fee_cents
            found("payout_paid_not_at_rail", number, sent, withdrawal.currency)
    return findings


async def numbers(session: AsyncSession, rail: str, start: datetime, end: datetime) -> list[str]:
    """The transfer numbers of the withdrawals on a rail made or moved in the window: a rail whose
    record names transfers by its own numbers (WeChat's fund-flow bill) looks these up."""
    rows = await session.scalars(
        select(Withdrawal.id).where(
            Withdrawal.rail == rail,
            or_(Withdrawal.created_at.between(start, end), Withdrawal.updated_at.between(start, end)),
        )
    )
    return list(rows)
