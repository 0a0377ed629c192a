"""What a merchant reads: balances per currency, its ledger lines, and why money is pending."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.ledger_tables import LedgerAccount, LedgerEntry, LedgerHold, LedgerTransaction

MERCHANT_KINDS = ("pending", "available", "reserved", "debt")


async def balances(session: AsyncSession, merchant_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(LedgerAccount.currency, LedgerAccount.kind, LedgerAccount.balance).where(
            LedgerAccount.owner == merchant_id, LedgerAccount.kind.in_((*MERCHANT_KINDS, "payable"))
        )
    )
    by_currency: dict[str, dict[str, Any]] = {}
    for currency, kind, balance in rows.all():
        line = by_currency.setdefault(
            currency, {"currency": currency, **{f"{k}_cents": 0 for k in (*MERCHANT_KINDS, "payable")}}
        )
        line[f"{kind}_cents"] = balance
    return [by_currency[c] for c in sorted(by_currency)]


async def entries(session: AsyncSession, merchant_id: str, limit: int = 100, before: int | None = None) -> list[dict]:
    """The merchant's own lines, newest first; `before` pages on by entry id."""
    query = (
        select(
            LedgerEntry.id,
            LedgerEntry.transaction_id,
            LedgerTransaction.kind,
            LedgerAccount.kind,
            LedgerEntry.amount,
            LedgerAccount.normal,
            LedgerEntry.balance_after,
            LedgerEntry.currency,
            LedgerTransaction.at,
            LedgerTransaction.order_id,
            LedgerTransaction.idem_key,
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerAccount.owner == merchant_id)
        .order_by(LedgerEntry.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(LedgerEntry.id < before)
    return [
        {
            "entry_id": entry_id,
            "transaction_id": transaction_id,
            "kind": kind,
            "account": account,
            # in the account's normal direction: +500 on `available` is 500 more for the merchant
            "amount_cents": amount if normal == "debit" else -amount,
            "balance_after_cents": balance_after,
            "currency": currency,
            "at": at.isoformat(),
            "order_id": order_id,
            "ref": ref,
        }
        for entry_id, transaction_id, kind, account, amount, normal, balance_after, currency, at, order_id, ref in (
            await session.execute(query)
        ).all()
    ]


async def pending_holds(session: AsyncSession, merchant_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """Each amount still held: which order, why, released when."""
    rows = await session.scalars(
        select(LedgerHold)
        .where(LedgerHold.merchant_id == merchant_id, LedgerHold.released_at.is_(None), LedgerHold.remaining > 0)
        .order_by(LedgerHold.release_at)
        .limit(limit)
    )
    return [
        {
            "order_id": h.order_id,
            "amount_cents": h.remaining,
            "currency": h.currency,
            "reason": h.reason,
            "release_at": h.release_at.isoformat(),
        }
        for h in rows
    ]
