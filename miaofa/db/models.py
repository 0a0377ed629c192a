"""The shop's tables as typed SQLAlchemy 2 models."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from miaofa.db.base import DEFAULT_MERCHANT, NAMING_CONVENTION, Base, created_at_column, merchant_column
from miaofa.db.merchant_tables import KeyFlag, Merchant, MerchantToken
from miaofa.db.shared_tables import OrderStartSlot, RateHit

__all__ = [
    "DEFAULT_MERCHANT",
    "NAMING_CONVENTION",
    "Base",
    "KeyFlag",
    "Merchant",
    "MerchantToken",
    "OrderStartSlot",
    "RateHit",
]


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = merchant_column()
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))  # false: not sold
    price_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    delivery_sla_seconds: Mapped[int] = mapped_column(Integer, default=60)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)  # else MIAOFA_WEBHOOK_URL
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("price_cents > 0", name="price_positive"),
        CheckConstraint("delivery_sla_seconds > 0", name="sla_positive"),
        UniqueConstraint("merchant_id", "sku"),
        UniqueConstraint("id", "merchant_id"),  # the target of the composite keys below
    )


class CardKey(Base):
    """One sellable code. The text is AES-GCM ciphertext; key_hash is an HMAC for dedupe within the
    merchant (across merchants a repeat is flagged, not refused: KeyFlag).

    The composite keys are the isolation in the schema: a key belongs to a product of its own
    merchant, and is only ever held by an order of that merchant."""

    __tablename__ = "card_keys"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant_id: Mapped[str] = merchant_column()
    product_id: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    status: Mapped[str] = mapped_column(String(16), default="available")
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reserved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sold_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("status in ('available','reserved','sold','refunded')", name="status_known"),
        Index("ix_card_keys_product_status", "product_id", "status"),
        Index("ix_card_keys_order", "order_id"),
        UniqueConstraint("merchant_id", "key_hash"),
        ForeignKeyConstraint(
            ["product_id", "merchant_id"], ["products.id", "products.merchant_id"], name="fk_card_keys_product_merchant"
        ),
        ForeignKeyConstraint(
            ["order_id", "merchant_id"], ["orders.id", "orders.merchant_id"], name="fk_card_keys_order_merchant"
        ),
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = merchant_column()
    product_id: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(254))
    buyer_hash: Mapped[str] = mapped_column(String(32), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    list_cents: Mapped[int | None] = mapped_column(BigInteger)  # before any coupon: who pays the discount
    currency: Mapped[str] = mapped_column(String(8))
    gateway: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24), index=True)
    coupon_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lang: Mapped[str | None] = mapped_column(String(8), nullable=True)  # zh | en; unset: emails in both
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint("amount_cents >= 0", name="amount_not_negative"),
        UniqueConstraint("id", "merchant_id"),
        ForeignKeyConstraint(
            ["product_id", "merchant_id"], ["products.id", "products.merchant_id"], name="fk_orders_product_merchant"
        ),
        ForeignKeyConstraint(
            ["coupon_id", "merchant_id"], ["coupons.id", "coupons.merchant_id"], name="fk_orders_coupon_merchant"
        ),
        Index("ix_orders_merchant_created", "merchant_id", "created_at"),
    )


class OutboxMessage(Base):
    """A message to send (email or merchant webhook), written in the transaction of what causes it.

    Only ids are stored: the sender reads the order (and decrypts what it must) at send time, so no
    key, coupon code or email address sits here. event_id is the webhook's idempotency key."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    topic: Mapped[str] = mapped_column(String(40))  # e.g. order.paid, email.refunded, email.lookup
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    buyer_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str] = mapped_column(String(80), default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("channel in ('email','webhook')", name="channel_known"),
        CheckConstraint("status in ('pending','sent','skipped','failed')", name="status_known"),
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_outbox_order", "order_id"),
    )


class OrderEvent(Base):
    """The order's timeline: one row per stage reached."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), unique=True)
    gateway: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(128))
    pay_url: Mapped[str] = mapped_column(Text)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(24), default="pending")
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("ix_payments_gateway_payment", "gateway", "payment_id", unique=True),)


class NotifyLog(Base):
    """Every notify a gateway sent us, raw, with what we made of it."""

    __tablename__ = "notify_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = created_at_column()
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    body: Mapped[str] = mapped_column(Text)
    order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    outcome: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    # What the verified notify proves (payment id, amount, currency, paid_at, status); the order
    # workflow confirms a payment signal against this, never against the signal itself.
    proof: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)


class Coupon(Base):
    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant_id: Mapped[str] = merchant_column()
    code: Mapped[str] = mapped_column(String(40))
    percent_off: Mapped[int | None] = mapped_column(Integer)
    amount_off_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    issued_for_order_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    reason: Mapped[str] = mapped_column(String(40), default="late_delivery")
    used_by_order_id: Mapped[str | None] = mapped_column(String(40))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("(percent_off is null) <> (amount_off_cents is null)", name="one_discount_kind"),
        CheckConstraint("percent_off is null or (percent_off between 1 and 100)", name="percent_range"),
        UniqueConstraint("merchant_id", "code"),
        UniqueConstraint("id", "merchant_id"),
    )


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = created_at_column()
    merchant_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("merchants.id"), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(80))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class ReconcileFinding(Base):
    """A mismatch between a gateway's statement and our orders, and what was done about it."""

    __tablename__ = "reconcile_findings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(40))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    times_seen: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (Index("ix_reconcile_findings_payment_kind", "gateway", "payment_id", "kind", unique=True),)


class OrderAdmission(Base):
    """One row per order the API let through its admission rules (miaofa/risk/admission.py), written before the
    order's workflow starts, so concurrent requests and other API processes count it at once. Only
    keyed hashes: of the buyer's email and of the client's address (an IPv6 client by its /64, and by
    its /56 and /48 too; an IPv4 client by its address in all three)."""

    __tablename__ = "order_admissions"

    order_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    buyer_hash: Mapped[str] = mapped_column(String(32))
    client_hash: Mapped[str] = mapped_column(String(32))
    net56_hash: Mapped[str] = mapped_column(String(32), default="", server_default="")
    net48_hash: Mapped[str] = mapped_column(String(32), default="", server_default="")
    product_id: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_order_admissions_buyer", "buyer_hash", "created_at"),
        Index("ix_order_admissions_client", "client_hash", "created_at"),
        Index("ix_order_admissions_net56", "net56_hash", "created_at"),
        Index("ix_order_admissions_net48", "net48_hash", "created_at"),
        Index("ix_order_admissions_product", "product_id", "created_at"),
        Index("ix_order_admissions_created", "created_at"),
    )


class StaffToken(Base):
    """A named support, admin or finance token. Only its keyed hash is kept (Vault.staff_token_hash): the
    token itself is shown once, when it is made. Revoked rows stay, so the audit log's names keep
    meaning something; a name is unique among the live tokens only."""

    __tablename__ = "staff_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = created_at_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("role in ('support','admin','finance')", name="role_known"),
        Index("ix_staff_tokens_live_name", "name", unique=True, postgresql_where=text("revoked_at is null")),
    )


class MerchantGatewayCredential(Base):
    """A direct merchant's own account at one gateway: its fields as vault-sealed JSON (bound to the
    merchant and gateway), and a masked summary that is all anybody is ever shown again."""

    __tablename__ = "merchant_gateway_credentials"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(32), ForeignKey("merchants.id"))
    gateway: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    summary: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (UniqueConstraint("merchant_id", "gateway"),)
