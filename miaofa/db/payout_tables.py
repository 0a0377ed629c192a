"""Payouts: a merchant's saved destinations (sealed in the vault), its withdrawals and their timelines.

A destination's account and holder's name are stored only encrypted; `masked` is what every view,
log line and note shows. A withdrawal's id is its transfer number on the rail, fixed once."""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from miaofa.db.models import Base, created_at_column, merchant_column

WITHDRAWAL_STATUSES = ("requested", "in_review", "approved", "submitted", "paid", "failed", "rejected", "returned")


class PayoutDestination(Base):
    __tablename__ = "payout_destinations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = merchant_column()
    rail: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # the vault's ciphertext of {"account", "name"}
    masked: Mapped[str] = mapped_column(String(80))  # e.g. "****6789 (张*)": all that is ever shown
    created_by: Mapped[str] = mapped_column(String(40))
    usable_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the end of the cooling-off
    created_at: Mapped[datetime] = created_at_column()


class Withdrawal(Base):
    __tablename__ = "withdrawals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also the rail's transfer number
    merchant_id: Mapped[str] = merchant_column()
    destination_id: Mapped[str] = mapped_column(ForeignKey("payout_destinations.id"))
    rail: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)  # what leaves `available`
    fee_cents: Mapped[int] = mapped_column(BigInteger)  # the platform's; the payee gets amount − fee
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    idem_key: Mapped[str] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(40))
    rail_code: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # Why a person must review it whatever its amount (the shop was suspended when it was asked for),
    # in words the merchant reads; empty: the thresholds decide.
    review_reason: Mapped[str] = mapped_column(String(300), default="", server_default="")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        UniqueConstraint("merchant_id", "idem_key"),
        CheckConstraint("fee_cents >= 0 and amount_cents > fee_cents", name="amounts"),
        CheckConstraint(f"status in {WITHDRAWAL_STATUSES!r}", name="status_known"),
    )


class WithdrawalEvent(Base):
    """One step on a withdrawal's timeline, in words the merchant reads. `seq` is given by the
    writer (0 by the API, then the workflow's own counter), so a retried step writes nothing twice."""

    __tablename__ = "withdrawal_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("withdrawal_id", "seq"),)
