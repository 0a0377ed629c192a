"""A withdrawal: asked for, checked, and its money reserved in the same database transaction.

The reservation locks the merchant's accounts of that currency (posting.lock, in id order), so 50
requests at once against one balance queue there and each sees what the previous one left."""

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.db.ledger_tables import LedgerAccount
from miaofa.db.merchant_tables import Merchant
from miaofa.db.payout_tables import PayoutDestination, Withdrawal, WithdrawalEvent
from miaofa.errors import (
    DebtOutstanding,
    DestinationCoolingOff,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidInput,
    NotFound,
)
from miaofa.ledger import posting
from miaofa.ledger.posting import credit, debit
from miaofa.merchants import accounts
from miaofa.payouts import destinations
from miaofa.settings import Settings


def fee_of(settings: Settings, amount_cents: int) -> int:
    return settings.payout_fee_cents + amount_cents * settings.payout_fee_bps // 10000


def money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


@dataclass(frozen=True)
class Asked:
    amount_cents: int
    currency: str
    destination_id: str
    idem_key: str
    actor: str


async def request(
    session: AsyncSession, settings: Settings, merchant_id: str, asked: Asked, now: datetime
) -> tuple[Withdrawal, bool]:
    """(the withdrawal, made now?). A repeated Idempotency-Key answers the first withdrawal."""
    found = await _by_key(session, merchant_id, asked.idem_key)
    if found is not None:
        return _same(found, asked), False
    if asked.amount_cents < settings.payout_min_cents:
        raise InvalidInput(f"the smallest withdrawal is {money(settings.payout_min_cents, asked.currency)}")
    fee = fee_of(settings, asked.amount_cents)
    if fee >= asked.amount_cents:
        raise InvalidInput(f"the fee ({money(fee, asked.currency)}) would take the whole amount")
    destination = await destinations.owned(session, merchant_id, asked.destination_id)
    if destination.usable_at > now:
        raise DestinationCoolingOff(
            f"a new destination can be paid from {destination.usable_at.isoformat()} (a cooling-off that "
            "protects the balance if a token is stolen)"
        )
    # A suspended shop's money is not frozen, but none of it leaves without a person's review.
    suspended = await accounts.suspension(session, merchant_id)
    review_reason = suspended_review(suspended) if suspended is not None else ""
    # Locked in id order; every other withdrawal or posting on these accounts waits here.
    held = await posting.lock(
        session, asked.currency, [(merchant_id, "available"), (merchant_id, "reserved"), (merchant_id, "debt")]
    )
    # The same key may have committed while we waited for the lock (a double click): that withdrawal is
    # the answer, not "insufficient funds" because its own reservation took the money.
    found = await _by_key(session, merchant_id, asked.idem_key)
    if found is not None:
        return _same(found, asked), False
    if held[(merchant_id, "debt")].balance > 0 or await _debt_elsewhere(session, merchant_id):
        raise DebtOutstanding("the shop owes the platform (a refund after its share was paid out); settle it first")
    available = held[(merchant_id, "available")].balance
    if asked.amount_cents > available:
        raise InsufficientFunds(f"available is {money(available, asked.currency)}")
    withdrawal_id = "wd_" + secrets.token_hex(10)
    made = await session.scalar(
        pg_insert(Withdrawal)
        .values(
            id=withdrawal_id,
            merchant_id=merchant_id,
            destination_id=destination.id,
            rail=destination.rail,
            amount_cents=asked.amount_cents,
            fee_cents=fee,
            currency=asked.currency,
            status=c.WITHDRAWAL_REQUESTED,
            idem_key=asked.idem_key,
            requested_by=asked.actor,
            review_reason=review_reason,
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "idem_key"])
        .returning(Withdrawal.id)
    )
    if made is None:  # the same key raced us and won: its withdrawal is the answer
        first = await _by_key(session, merchant_id, asked.idem_key)
        assert first is not None
        return _same(first, asked), False
    transaction = await posting.begin(
        session, key=f"payout_reserve:{withdrawal_id}", kind="payout_reserve", at=now, merchant_id=merchant_id
    )
    assert transaction is not None  # a fresh id
    lines = [
        debit(merchant_id, "available", asked.amount_cents),
        credit(merchant_id, "reserved", asked.amount_cents),
    ]
    await posting.write(session, transaction, asked.currency, held, lines)
    session.add(
        WithdrawalEvent(
            withdrawal_id=withdrawal_id,
            seq=0,
            stage=c.WITHDRAWAL_REQUESTED,
            note=f"You asked for {money(asked.amount_cents, asked.currency)} to {destination.masked}; "
            f"the fee is {money(fee, asked.currency)}. The money is set aside from your balance.",
            at=now,
        )
    )
    await session.flush()
    return await mine(session, merchant_id, withdrawal_id), True


def suspended_review(reason: str) -> str:
    """Why a suspended shop's withdrawal waits for a person, in words its merchant reads (at most 300
    characters with the workflow's prefix)."""
    if len(reason) > 160:
        reason = reason[:159] + "…"
    return f"your shop is suspended ({reason}), so a person checks every withdrawal before it is sent"


def _same(found: Withdrawal, asked: Asked) -> Withdrawal:
    if (found.amount_cents, found.currency, found.destination_id) != (
        asked.amount_cents,
        asked.currency,
        asked.destination_id,
    ):
        raise IdempotencyKeyReused("this Idempotency-Key was used for another withdrawal")
    return found


async def _by_key(session: AsyncSession, merchant_id: str, key: str) -> Withdrawal | None:
    return await session.scalar(
        select(Withdrawal).where(Withdrawal.merchant_id == merchant_id, Withdrawal.idem_key == key)
    )


async def _debt_elsewhere(session: AsyncSession, merchant_id: str) -> bool:
    found = await session.scalar(
        select(LedgerAccount.id).where(
            LedgerAccount.owner == merchant_id, LedgerAccount.kind == "debt", LedgerAccount.balance > 0
        )
    )
    return found is not None


async def mine(session: AsyncSession, merchant_id: str, withdrawal_id: str) -> Withdrawal:
    found = await session.scalar(
        select(Withdrawal).where(Withdrawal.id == withdrawal_id, Withdrawal.merchant_id == merchant_id)
    )
    if found is None:
        raise NotFound("no such withdrawal", error="withdrawal_not_found")
    return found


async def by_id(session: AsyncSession, withdrawal_id: str) -> Withdrawal | None:
    return await session.scalar(select(Withdrawal).where(Withdrawal.id == withdrawal_id))


async def view(session: AsyncSession, withdrawal: Withdrawal) -> dict[str, Any]:
    events = await session.scalars(
        select(WithdrawalEvent).where(WithdrawalEvent.withdrawal_id == withdrawal.id).order_by(WithdrawalEvent.seq)
    )
    return {
        **summary(withdrawal),
        "timeline": [{"stage": e.stage, "at": e.at.isoformat(), "note": e.note} for e in events],
    }


def summary(withdrawal: Withdrawal) -> dict[str, Any]:
    return {
        "withdrawal_id": withdrawal.id,
        "status": withdrawal.status,
        "amount_cents": withdrawal.amount_cents,
        "fee_cents": withdrawal.fee_cents,
        "currency": withdrawal.currency,
        "rail": withdrawal.rail,
        "destination_id": withdrawal.destination_id,
        "created_at": withdrawal.created_at.isoformat(),
    }


async def listing(session: AsyncSession, merchant_id: str, limit: int = 100) -> list[Withdrawal]:
    rows = await session.scalars(
        select(Withdrawal)
        .where(Withdrawal.merchant_id == merchant_id)
        .order_by(Withdrawal.created_at.desc(), Withdrawal.id)
        .limit(limit)
    )
    return list(rows)


async def waiting(session: AsyncSession, before: datetime, limit: int = 500) -> list[Withdrawal]:
    """Withdrawals still `requested` since before `before`: their workflow may never have started."""
    rows = await session.scalars(
        select(Withdrawal)
        .where(Withdrawal.status == c.WITHDRAWAL_REQUESTED, Withdrawal.created_at < before)
        .order_by(Withdrawal.created_at)
        .limit(limit)
    )
    return list(rows)


async def queue(
    session: AsyncSession, status: str, limit: int = 100, merchant_id: str | None = None
) -> list[dict[str, Any]]:
    """Platform finance's view: withdrawals in one status (of one shop, if named), oldest first (the
    review queue), each with its shop, its destination masked and why a person must review it."""
    query = (
        select(Withdrawal, Merchant.slug, PayoutDestination.masked)
        .join(Merchant, Merchant.id == Withdrawal.merchant_id)
        .join(PayoutDestination, PayoutDestination.id == Withdrawal.destination_id)
        .where(Withdrawal.status == status)
    )
    if merchant_id is not None:
        query = query.where(Withdrawal.merchant_id == merchant_id)
    rows = await session.execute(query.order_by(Withdrawal.created_at, Withdrawal.id).limit(limit))
    return [for_finance(w, slug, masked) for w, slug, masked in rows.all()]


def for_finance(withdrawal: Withdrawal, slug: str, masked: str) -> dict[str, Any]:
    return {
        **summary(withdrawal),
        "merchant_id": withdrawal.merchant_id,
        "merchant": slug,
        "destination": masked,
        "review_reason": withdrawal.review_reason,
    }


async def finance_view(session: AsyncSession, withdrawal_id: str) -> dict[str, Any]:
    """One withdrawal as finance reads it: its shop, its destination masked, and its timeline."""
    row = (
        await session.execute(
            select(Withdrawal, Merchant.slug, PayoutDestination.masked)
            .join(Merchant, Merchant.id == Withdrawal.merchant_id)
            .join(PayoutDestination, PayoutDestination.id == Withdrawal.destination_id)
            .where(Withdrawal.id == withdrawal_id)
        )
    ).first()
    if row is None:
        raise NotFound("no such withdrawal", error="withdrawal_not_found")
    withdrawal, slug, masked = row
    return {**(await view(session, withdrawal)), **for_finance(withdrawal, slug, masked)}


def payout_input(withdrawal: Withdrawal, settings: Settings) -> c.PayoutInput:
    return c.PayoutInput(
        withdrawal_id=withdrawal.id,
        merchant_id=withdrawal.merchant_id,
        amount_cents=withdrawal.amount_cents,
        fee_cents=withdrawal.fee_cents,
        currency=withdrawal.currency,
        rail=withdrawal.rail,
        review_reason=withdrawal.review_reason,
        timing=c.PayoutTiming(
            auto_approve_cents=settings.payout_auto_approve_cents,
            two_person_cents=settings.payout_two_person_cents,
            review_sla_seconds=settings.payout_review_sla_seconds,
            confirm_timeout_seconds=settings.payout_confirm_timeout_seconds,
            query_interval_seconds=settings.payout_query_interval_seconds,
            query_max_interval_seconds=settings.payout_query_max_interval_seconds,
            return_watch_seconds=settings.payout_return_watch_seconds,
            return_poll_seconds=settings.payout_return_poll_seconds,
        ),
    )
