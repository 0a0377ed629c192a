"""The saga's activities as the workflow sees them: names and plain input/result types.

The workflow calls activities by these names, so it never imports the activity code (which
talks to PostgreSQL and gateways) into its sandbox.
"""

from dataclasses import dataclass, field
from datetime import datetime

OPEN_ORDER = "open_order"
CREATE_PAYMENT = "create_payment"
QUERY_PAYMENT = "query_payment"
CLOSE_PAYMENT = "close_payment"
REFUND_PAYMENT = "refund_payment"
RECORD_STAGE = "record_stage"
MARK_PAID = "mark_paid"
DELIVER_KEYS = "deliver_keys"
RELEASE_STOCK = "release_stock"
RESERVE_AGAIN = "reserve_again"
REFUND_KEYS = "refund_keys"
ISSUE_COUPON = "issue_coupon"
SEND_DELIVERY_EMAIL = "send_delivery_email"


@dataclass
class OpenOrderStep:
    order_id: str
    product_id: int
    sku: str
    quantity: int
    unit_price_cents: int
    currency: str
    email: str
    buyer_hash: str
    gateway: str
    coupon_code: str | None
    at: datetime
    expires_at: datetime


@dataclass
class OpenedOrder:
    outcome: str
    amount_cents: int = 0
    detail: str = ""


@dataclass
class CreatePaymentStep:
    order_id: str
    gateway: str
    amount_cents: int
    currency: str
    subject: str
    expires_at: datetime
    at: datetime


@dataclass
class GatewayStep:
    order_id: str
    gateway: str
    payment_id: str
    channel: str = "primary"


@dataclass
class RefundStep:
    order_id: str
    gateway: str
    payment_id: str
    amount_cents: int
    refund_id: str


@dataclass
class PaymentSnapshot:
    status: str  # pending | paid | closed | refunded | unknown
    amount_cents: int
    currency: str
    paid_at: datetime | None = None


@dataclass
class StageStep:
    order_id: str
    stage: str
    at: datetime
    status: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


@dataclass
class PaidStep:
    order_id: str
    paid_at: datetime
    source: str
    at: datetime


@dataclass
class DeliverStep:
    order_id: str
    at: datetime


@dataclass
class Delivered:
    key_ids: list[int]


@dataclass
class ReleaseStep:
    order_id: str
    status: str
    at: datetime


@dataclass
class RefundKeysStep:
    order_id: str
    reason: str
    actor: str
    at: datetime


@dataclass
class CouponStep:
    order_id: str
    reason: str
    at: datetime


@dataclass
class IssuedCoupon:
    coupon_id: int
