"""Posting: one transaction of entries that sum to zero, once per idempotency key.

Accounts are created on first use and locked in id order in one statement, so two postings that
touch the same accounts queue instead of deadlocking. A posting is always part of the caller's
database transaction: it commits, or rolls back, with the state change it records."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Text, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.ledger_tables import LedgerAccount, LedgerEntry, LedgerTransaction

PLATFORM = "platform"
# An account's normal side: where its balance grows. Merchant accounts first, then the platform's.
NORMALS = {
    "pending": "credit",  # owed to the merchant, on hold
    "available": "credit",  # owed to the merchant, withdrawable
    "reserved": "credit",  # owed to the merchant, promised to a withdrawal
    "debt": "debit",  # the merchant owes the platform (a refund after its share was gone)
    "payable": "debit",  # a direct merchant's fees, owed to the platform
    "fees": "credit",  # the platform's revenue
    "compensation": "debit",  # what the platform's promises cost it (late-delivery coupons)
    "world": "credit",  # money passing through that is nobody's sale (strays, refunds of unsold payments)
}


def normal_of(kind: str) -> str:
    """gateway_clearing:<gw>: what a gateway holds for the platform (an asset: debit).
    payout_clearing:<rail>: the platform's funds at a payout rail (an asset: debit). A paid withdrawal
    credits it (the money went out through the rail), a bank's return debits it back; so its balance
    is minus what was paid out through that rail, which miaofa/ledger/check.py holds to the payouts."""
    if kind.startswith(("gateway_clearing:", "payout_clearing:")):
        return "debit"
    return NORMALS[kind]


@dataclass
class Held:
    """A locked account as this posting sees it (plain data: the ORM is not asked to track it)."""

    id: int
    kind: str
    normal: str
    balance: int
    version: int


@dataclass(frozen=True)
class Line:
    owner: str  # a merchant id, or PLATFORM
    kind: str
    amount: int  # debit +, credit −


def debit(owner: str, kind: str, amount: int) -> Line:
    return Line(owner, kind, amount)


def credit(owner: str, kind: str, amount: int) -> Line:
    return Line(owner, kind, -amount)


class Unbalanced(ValueError):
    """A transaction whose lines do not sum to zero: a bug, never posted."""


async def begin(
    session: AsyncSession,
    *,
    key: str,
    kind: str,
    at: datetime,
    merchant_id: str | None = None,
    order_id: str | None = None,
    memo: str = "",
) -> int | None:
    """The transaction's row, or None when this key was posted before (nothing more to do)."""
    return await session.scalar(
        pg_insert(LedgerTransaction)
        .values(idem_key=key, kind=kind, merchant_id=merchant_id, order_id=order_id, memo=memo[:200], at=at)
        .on_conflict_do_nothing(index_elements=["idem_key"])
        .returning(LedgerTransaction.id)
    )


async def lock(
    session: AsyncSession, currency: str, accounts: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Held]:
    """The accounts (owner, kind) in this currency, made if new, locked FOR UPDATE in id order."""
    wanted = sorted(set(accounts))
    if not wanted:
        return {}
    await session.execute(
        pg_insert(LedgerAccount)
        .values(
            [
                {"owner": o, "kind": k, "currency": currency, "normal": normal_of(k), "balance": 0, "version": 0}
                for o, k in wanted
            ]
        )
        .on_conflict_do_nothing(index_elements=["owner", "kind", "currency"])
    )
    a = LedgerAccount
    rows = await session.execute(
        select(a.id, a.owner, a.kind, a.normal, a.balance, a.version)
        .where(a.currency == currency, tuple_(a.owner, a.kind).in_(wanted))
        .order_by(a.id)
        .with_for_update()
    )
    return {
        (owner, kind): Held(id_, kind, normal, balance, version) for id_, owner, kind, normal, balance, version in rows
    }


async def write(
    session: AsyncSession,
    transaction_id: int,
    currency: str,
    accounts: dict[tuple[str, str], Held],
    lines: Iterable[Line],
) -> None:
    """The entries, each with its account's balance after it; the accounts' balances and versions."""
    lines = [line for line in lines if line.amount]
    if sum(line.amount for line in lines) != 0:
        raise Unbalanced(f"ledger transaction {transaction_id}: lines sum to {sum(x.amount for x in lines)}")
    entries = []
    for line in lines:
        account = accounts[(line.owner, line.kind)]
        account.balance += line.amount if account.normal == "debit" else -line.amount
        account.version += 1
        entries.append(
            {
                "transaction_id": transaction_id,
                "account_id": account.id,
                "amount": line.amount,
                "currency": currency,
                "balance_after": account.balance,
                "account_version": account.version,
            }
        )
    if not entries:
        return
    touched = {accounts[(line.owner, line.kind)].id: accounts[(line.owner, line.kind)] for line in lines}
    for _, account in sorted(touched.items()):
        await session.execute(
            update(LedgerAccount)
            .where(LedgerAccount.id == account.id)
            .values(balance=account.balance, version=account.version)
        )
    await session.execute(insert(LedgerEntry), entries)


async def post(
    session: AsyncSession,
    *,
    key: str,
    kind: str,
    currency: str,
    lines: list[Line],
    at: datetime,
    merchant_id: str | None = None,
    order_id: str | None = None,
    memo: str = "",
) -> int | None:
    """Post lines known in advance, in one round trip (the ledger_post function, migration 0010);
    None when the key was posted before."""
    lines = [line for line in lines if line.amount]
    if sum(line.amount for line in lines) != 0:
        raise Unbalanced(f"{key}: lines sum to {sum(x.amount for x in lines)}")
    if not lines:
        return None  # nothing moves: nothing to record
    return await session.scalar(
        select(
            func.ledger_post(
                key,
                kind,
                merchant_id,
                order_id,
                memo[:200],
                at,
                currency,
                array([line.owner for line in lines], type_=Text),
                array([line.kind for line in lines], type_=Text),
                array([normal_of(line.kind) for line in lines], type_=Text),
                array([line.amount for line in lines], type_=BigInteger),
            )
        )
    )
