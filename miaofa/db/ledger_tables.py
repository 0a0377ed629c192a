"""The ledger's tables: accounts, transactions, entries (append-only, double-entry) and holds.

Amounts are integer minor units. An entry's `amount` is signed the bookkeeping way (a debit is
positive, a credit negative), so each transaction's entries sum to zero per currency. An account's
`balance` is kept in its normal direction (what a merchant reads: a credit-normal `available` of
500 is 500 owed to the merchant) with a version that every posting bumps."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from miaofa.db.base import Base, created_at_column

# The merchant's accounts that may never go below zero; `debt` and the platform's may.
FLOORED = ("pending", "available", "reserved")


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    owner: Mapped[str] = mapped_column(String(32))  # a merchant id, or "platform"
    kind: Mapped[str] = mapped_column(String(48))  # pending, available, …, fees, gateway_clearing:<gw>, …
    currency: Mapped[str] = mapped_column(String(8))
    normal: Mapped[str] = mapped_column(String(6))  # debit | credit
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("owner", "kind", "currency"),
        CheckConstraint("normal in ('debit','credit')", name="normal_known"),
        CheckConstraint("kind not in ('pending','available','reserved') or balance >= 0", name="floor"),
    )


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idem_key: Mapped[str] = mapped_column(String(120), unique=True)  # sale:<order>, refund:<order>, …
    kind: Mapped[str] = mapped_column(String(24))
    merchant_id: Mapped[str | None] = mapped_column(String(32), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    memo: Mapped[str] = mapped_column(String(200), default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)  # debit +, credit −
    currency: Mapped[str] = mapped_column(String(8))
    balance_after: Mapped[int] = mapped_column(BigInteger)  # the account's, in its normal direction
    account_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("amount <> 0", name="not_zero"),
        Index("ix_ledger_entries_account", "account_id", "id"),
    )


class LedgerHold(Base):
    """A sale's share held in `pending` until `release_at`, with a reason the merchant reads.
    `remaining` falls when a refund claws from it or the release moves it to `available`."""

    __tablename__ = "ledger_holds"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(32), index=True)
    order_id: Mapped[str] = mapped_column(String(40), unique=True)
    currency: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(120))
    release_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("remaining >= 0 and remaining <= amount", name="remaining_range"),
        Index("ix_ledger_holds_due", "release_at", postgresql_where=text("released_at is null")),
    )


class LedgerStatement(Base):
    """A merchant's closed day, made once and never changed: its body (opening, lines, closing per
    currency) and the hash of the previous statement, so history cannot be rewritten unseen."""

    __tablename__ = "ledger_statements"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(32))
    day: Mapped[date] = mapped_column(Date)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (UniqueConstraint("merchant_id", "day"),)
