"""The order workflow's contract: task queue, ids, message names, statuses and message types.

`api/`, `activities/`, `workflows/` and `worker.py` all import this module, so it holds only the
standard library and `temporalio.common`: it is safe inside the workflow sandbox.
"""

from dataclasses import dataclass, field
from datetime import datetime

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "miaofa-orders"


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


# Statuses (DESIGN.md): the order row, the status query and the OrderStatus search attribute agree.
AWAITING_PAYMENT = "awaiting_payment"
IN_REVIEW = "in_review"
PAID = "paid"
DELIVERED = "delivered"
EXPIRED = "expired"
CANCELLED = "cancelled"
REJECTED = "rejected"
REFUNDED = "refunded"
STATUSES = (AWAITING_PAYMENT, IN_REVIEW, PAID, DELIVERED, EXPIRED, CANCELLED, REJECTED, REFUNDED)

# Outcomes of opening an order (the answer POST /orders waits for).
OPENED = "created"
SOLD_OUT = "sold_out"
COUPON_INVALID = "coupon_invalid"
GATEWAY_UNAVAILABLE = "gateway_unavailable"

# Message names.
OPEN_UPDATE = "open_order"
CHECK_PAYMENT_UPDATE = "check_payment"
REFUND_UPDATE = "refund"
RESEND_UPDATE = "resend"
CANCEL_UPDATE = "cancel"
PAYMENT_SIGNAL = "payment_notified"
STATUS_QUERY = "status"

# Search attributes, for ops in the Temporal UI. Never secrets, keys or raw emails.
SA_ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
SA_PRODUCT_SKU = SearchAttributeKey.for_keyword("ProductSku")
SA_PAYMENT_GATEWAY = SearchAttributeKey.for_keyword("PaymentGateway")
SA_BUYER_HASH = SearchAttributeKey.for_keyword("BuyerHash")
SA_DELIVERY_LATE = SearchAttributeKey.for_bool("DeliveryLate")
SA_AMOUNT_CENTS = SearchAttributeKey.for_int("AmountCents")
SEARCH_ATTRIBUTES = {
    "OrderStatus": "Keyword",
    "ProductSku": "Keyword",
    "PaymentGateway": "Keyword",
    "BuyerHash": "Keyword",
    "DeliveryLate": "Bool",
    "AmountCents": "Int",
}


@dataclass
class Timing:
    """The saga's clocks, fixed at order time so a settings change never alters a running order."""

    payment_window_seconds: int
    callback_grace_seconds: int
    poll_interval_seconds: int
    poll_max_interval_seconds: int = 30
    late_payment_watch_seconds: int = 86400
    support_window_seconds: int = 7 * 86400


@dataclass
class OrderInput:
    order_id: str
    product_id: int
    sku: str
    product_name: str
    unit_price_cents: int
    currency: str
    quantity: int
    email: str
    buyer_hash: str
    gateway: str
    delivery_sla_seconds: int
    timing: Timing
    coupon_code: str | None = None


@dataclass
class PaymentLink:
    gateway: str
    payment_id: str
    pay_url: str


@dataclass
class OpenOrderResult:
    outcome: str  # OPENED, SOLD_OUT, COUPON_INVALID or GATEWAY_UNAVAILABLE
    order_id: str
    status: str = ""
    amount_cents: int = 0
    currency: str = ""
    expires_at: datetime | None = None
    payment: PaymentLink | None = None
    detail: str = ""
    sku: str = ""
    quantity: int = 0


@dataclass
class PaymentNotice:
    """The gateway says the buyer paid; from a verified notify, a poll or a buyer's check."""

    payment_id: str
    amount_cents: int
    currency: str
    paid_at: datetime
    source: str  # notify | poll | poll_backup | check | close


@dataclass
class CheckPaymentResult:
    status: str
    paid: bool


@dataclass
class SupportRequest:
    reason: str = ""
    actor: str = "support"


@dataclass
class SupportResult:
    order_id: str
    status: str
    detail: str


@dataclass
class OrderState:
    """The status query's answer: live, straight from the workflow."""

    order_id: str
    status: str
    paid: bool
    delivered_key_count: int
    coupon_issued: bool
    delivery_late: bool
    stages: list[str] = field(default_factory=list)
