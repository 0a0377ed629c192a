"""What the consoles read about withdrawals beyond one withdrawal's view: when each was paid, and
platform finance's review queue with each withdrawal's shop, destination and approvals so far.

Read from the withdrawal's timeline (withdrawal_events), which the workflow writes at each step."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.db.merchant_tables import Merchant
from miaofa.db.payout_tables import PayoutDestination, Withdrawal, WithdrawalEvent

PAID_STAGE = "paid"
APPROVED_STAGE = "review_approved"  # one line per approval: "Approved by <actor>: <reason>"


async def stage_times(
    session: AsyncSession, withdrawal_ids: Iterable[str], stage: str = PAID_STAGE
) -> dict[str, datetime]:
    """withdrawal id → when it reached `stage` (the first time), for the ids that did."""
    ids = list(withdrawal_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(WithdrawalEvent.withdrawal_id, WithdrawalEvent.at)
        .where(WithdrawalEvent.withdrawal_id.in_(ids), WithdrawalEvent.stage == stage)
        .order_by(WithdrawalEvent.seq.desc())
    )
    return {withdrawal_id: at for withdrawal_id, at in rows.all()}  # the lowest seq is written last: it wins


@dataclass
class InReview:
    withdrawal: Withdrawal
    shop_slug: str
    shop_name: str
    destination: str  # masked
    approvals: list[str] = field(default_factory=list)  # the timeline's notes, oldest first


async def review_queue(session: AsyncSession, limit: int = 100) -> list[InReview]:
    """Withdrawals waiting for platform finance, oldest first, each with its shop and approvals so far."""
    rows = await session.execute(
        select(Withdrawal, Merchant.slug, Merchant.name, PayoutDestination.masked)
        .join(Merchant, Merchant.id == Withdrawal.merchant_id)
        .join(PayoutDestination, PayoutDestination.id == Withdrawal.destination_id)
        .where(Withdrawal.status == c.WITHDRAWAL_IN_REVIEW)
        .order_by(Withdrawal.created_at, Withdrawal.id)
        .limit(limit)
    )
    queue = [InReview(w, slug, name, masked) for w, slug, name, masked in rows.all()]
    if queue:
        notes = await session.execute(
            select(WithdrawalEvent.withdrawal_id, WithdrawalEvent.note)
            .where(
                WithdrawalEvent.withdrawal_id.in_([r.withdrawal.id for r in queue]),
                WithdrawalEvent.stage == APPROVED_STAGE,
            )
            .order_by(WithdrawalEvent.seq)
        )
        by_id = {r.withdrawal.id: r for r in queue}
        for withdrawal_id, note in notes.all():
            by_id[withdrawal_id].approvals.append(note)
    return queue
