"""The merchants' tables: shops, their people's tokens, and keys flagged across shops."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from miaofa.db.base import Base, created_at_column


class Merchant(Base):
    """A shop on the platform. Its id never changes; its slug names its storefront (/s/<slug>/)."""

    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    slug: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    settlement: Mapped[str] = mapped_column(String(16))
    fee_bps: Mapped[int] = mapped_column(Integer)
    hold_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str] = mapped_column(String(300), default="", server_default="")
    # The shop's own tightening of the platform's risk rules (miaofa/risk/shop_rules.py).
    risk_rules: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    webhook_url: Mapped[str | None] = mapped_column(String(500))  # its orders' events go here, nowhere else
    webhook_secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # vault ciphertext: it signs them
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint("settlement in ('platform','direct')", name="settlement_known"),
        CheckConstraint("status in ('active','suspended')", name="status_known"),
        CheckConstraint("fee_bps between 0 and 10000", name="fee_range"),
        CheckConstraint("hold_seconds >= 0", name="hold_not_negative"),
    )


class MerchantToken(Base):
    """An owner's or a staff member's token for one merchant: kept only as a keyed hash, like
    StaffToken. A name is unique among the merchant's live tokens."""

    __tablename__ = "merchant_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(32), ForeignKey("merchants.id"))
    name: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = created_at_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("role in ('owner','staff')", name="role_known"),
        Index(
            "ix_merchant_tokens_live_name",
            "merchant_id",
            "name",
            unique=True,
            postgresql_where=text("revoked_at is null"),
        ),
    )


class KeyFlag(Base):
    """A key one merchant imported that another merchant already holds: a possible double sale.
    The importer is told nothing (that would be an oracle across shops); the platform admin sees this."""

    __tablename__ = "key_flags"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary)
    merchant_id: Mapped[str] = mapped_column(String(32), ForeignKey("merchants.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    held_by: Mapped[str] = mapped_column(String(32), ForeignKey("merchants.id"))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (UniqueConstraint("merchant_id", "key_hash", "held_by"),)
