"""A payout's steps in the database: a timeline line with its status, and the money's last move.

Each write is keyed (the event's seq, the ledger's idempotency key), so an activity retried after a
crash writes nothing twice; the ledger posting, the status and the line commit together."""

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import steps as s
from miaofa.db.payout_tables import Withdrawal, WithdrawalEvent
from miaofa.ledger import posting
from miaofa.ledger.posting import PLATFORM, Line, credit, debit
from miaofa.payouts import withdrawals

KEYS = {
    s.SETTLE_PAID: ("payout_paid", "payout_paid"),
    s.SETTLE_RELEASE: ("payout_return", "payout_return"),
    s.SETTLE_RETURN: ("payout_bounce", "payout_bounce"),
}


async def record_stage(session: AsyncSession, step: s.PayoutStageStep) -> None:
    inserted = await session.scalar(
        pg_insert(WithdrawalEvent)
        .values(withdrawal_id=step.withdrawal_id, seq=step.seq, stage=step.stage, note=step.note[:300], at=step.at)
        .on_conflict_do_nothing(index_elements=["withdrawal_id", "seq"])
        .returning(WithdrawalEvent.id)
    )
    if inserted is not None and step.status:
        await session.execute(update(Withdrawal).where(Withdrawal.id == step.withdrawal_id).values(status=step.status))


def lines(outcome: str, w: Withdrawal) -> list[Line]:
    sent = w.amount_cents - w.fee_cents
    clearing = f"payout_clearing:{w.rail}"
    if outcome == s.SETTLE_PAID:  # reserved → out through the rail, and the platform's fee
        return [
            debit(w.merchant_id, "reserved", w.amount_cents),
            credit(PLATFORM, "fees", w.fee_cents),
            credit(PLATFORM, clearing, sent),
        ]
    if outcome == s.SETTLE_RELEASE:  # never sent: the reservation goes back
        return [debit(w.merchant_id, "reserved", w.amount_cents), credit(w.merchant_id, "available", w.amount_cents)]
    if outcome == s.SETTLE_RETURN:  # sent and bounced: the money came back through the rail, the fee too
        return [
            debit(PLATFORM, clearing, sent),
            debit(PLATFORM, "fees", w.fee_cents),
            credit(w.merchant_id, "available", w.amount_cents),
        ]
    raise ValueError(f"unknown payout outcome {outcome!r}")


async def settle(session: AsyncSession, step: s.SettleStep) -> None:
    withdrawal = await withdrawals.by_id(session, step.withdrawal_id)
    if withdrawal is None:
        raise LookupError(f"withdrawal {step.withdrawal_id} is not in the database")
    prefix, kind = KEYS[step.outcome]
    await posting.post(
        session,
        key=f"{prefix}:{withdrawal.id}",
        kind=kind,
        currency=withdrawal.currency,
        lines=lines(step.outcome, withdrawal),
        at=step.at,
        merchant_id=withdrawal.merchant_id,
        memo=step.rail_code,
    )
    if step.rail_code:
        await session.execute(update(Withdrawal).where(Withdrawal.id == withdrawal.id).values(rail_code=step.rail_code))
    await record_stage(
        session,
        s.PayoutStageStep(withdrawal.id, step.seq, step.stage, step.note, step.at, step.status),
    )
