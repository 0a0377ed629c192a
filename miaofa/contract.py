"""The order workflow's contract: task queue, ids, message names, statuses and message types.

`api/`, `activities/`, `workflows/` and `worker.py` all import this module, so it holds only the
standard library and `temporalio.common`: it is safe inside the workflow sandbox.
"""

from dataclasses import dataclass, field
from datetime import datetime

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "miaofa-orders"

# Workflow types, by name: the API starts and messages them without importing workflows/.
ORDER_WORKFLOW = "OrderWorkflow"
STRAY_PAYMENT_WORKFLOW = "StrayPaymentWorkflow"
RECONCILE_WORKFLOW = "ReconcileWorkflow"
RECONCILE_SCHEDULE_ID = "miaofa-reconcile"
HOLD_RELEASE_WORKFLOW = "HoldReleaseWorkflow"
HOLD_RELEASE_SCHEDULE_ID = "miaofa-hold-release"


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


def stray_workflow_id(gateway: str, payment_id: str) -> str:
    """One review per gateway payment, however many notifies or reconciliations find it."""
    return f"stray-{gateway}-{payment_id}"


# Statuses (DESIGN.md): the order row, the status query and the OrderStatus search attribute agree.
AWAITING_PAYMENT = "awaiting_payment"
IN_REVIEW = "in_review"
PAID = "paid"
DELIVERED = "delivered"
DELIVERY_FAILED = "delivery_failed"  # passing: the keys could not be committed; the payment is refunded
EXPIRED = "expired"
CANCELLED = "cancelled"
REJECTED = "rejected"
REFUNDED = "refunded"
STATUSES = (AWAITING_PAYMENT, IN_REVIEW, PAID, DELIVERED, DELIVERY_FAILED, EXPIRED, CANCELLED, REJECTED, REFUNDED)

# Outcomes of opening an order (the answer POST /orders waits for).
OPENED = "created"
SOLD_OUT = "sold_out"
COUPON_INVALID = "coupon_invalid"
GATEWAY_UNAVAILABLE = "gateway_unavailable"
INVALID_ORDER = "invalid_order"  # the database refused the order's data: nothing was kept

# Refusal codes of the order's Updates (the API renders each as a 409 with this code).
REFUSED_ALREADY_REFUNDED = "already_refunded"
REFUSED_NOT_REFUNDABLE = "not_refundable"
REFUSED_NOT_CANCELLABLE = "not_cancellable"
REFUSED_NOT_DELIVERED = "not_delivered"
REFUSED_NO_PAYMENT = "no_payment"
REFUSED_MISSING_INPUT = "missing_input"
REFUSED_NOT_IN_REVIEW = "not_in_review"

# Message names.
OPEN_UPDATE = "open_order"
CHECK_PAYMENT_UPDATE = "check_payment"
REFUND_UPDATE = "refund"
RESEND_UPDATE = "resend"
CANCEL_UPDATE = "cancel"
APPROVE_UPDATE = "approve"  # a held order (in_review): go on to payment
REJECT_UPDATE = "reject"  # a held order: release its stock, status rejected
PAYMENT_SIGNAL = "payment_notified"
STATUS_QUERY = "status"

# Risk verdicts (miaofa/risk/rules.py): allow opens the order, review holds it in_review for support,
# deny refuses it before anything is reserved.
RISK_ALLOW = "allow"
RISK_REVIEW = "review"
RISK_DENY = "deny"
# Timeline stages of the risk decision and the review hold.
RISK_STAGE = "risk"
REVIEW_APPROVED_STAGE = "review_approved"
REVIEW_REJECTED_STAGE = "review_rejected"
REVIEW_TIMED_OUT_STAGE = "review_timed_out"
# The gateway refused a refund nobody asked for (a late payment out of stock, a failed delivery):
# the money is recorded for a person, with the gateway's reason, on the timeline and in the audit log.
REFUND_REFUSED_STAGE = "refund_refused"
# The gateway has no close (epay, epusdt): its payment stays open there, so a late payment is still
# delivered or refunded; it is looked for by query only where the query can prove a payment.
CLOSE_UNSUPPORTED_STAGE = "close_unsupported"

# Search attributes, for ops in the Temporal UI. Never secrets, keys or raw emails.
SA_ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
SA_PRODUCT_SKU = SearchAttributeKey.for_keyword("ProductSku")
SA_PAYMENT_GATEWAY = SearchAttributeKey.for_keyword("PaymentGateway")
SA_BUYER_HASH = SearchAttributeKey.for_keyword("BuyerHash")
SA_DELIVERY_LATE = SearchAttributeKey.for_bool("DeliveryLate")
SA_AMOUNT_CENTS = SearchAttributeKey.for_int("AmountCents")
SA_MERCHANT_ID = SearchAttributeKey.for_keyword("MerchantId")  # set at start, by the API: no workflow command
SEARCH_ATTRIBUTES = {
    "OrderStatus": "Keyword",
    "ProductSku": "Keyword",
    "PaymentGateway": "Keyword",
    "BuyerHash": "Keyword",
    "DeliveryLate": "Bool",
    "AmountCents": "Int",
    "MerchantId": "Keyword",
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
    late_poll_interval_seconds: int = 60  # during the late-payment watch, doubling up to an hour
    late_poll_max_interval_seconds: int = 3600
    review_window_seconds: int = 1800  # a held order not decided by then is rejected
    payment_create_seconds: float = 10  # creating the payment is retried this long (a gateway blip) before a cancel


@dataclass
class RiskDecision:
    """What the rule chain decided at order time, and which rule decided it (never an email or address)."""

    verdict: str = RISK_ALLOW
    rule: str = ""
    reason: str = ""
    device_hash: str = ""  # the buyer's device, as a keyed hash ("" without X-Device-Id)


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
    risk: RiskDecision | None = None  # None: an order started before the rule chain (allowed)
    lang: str | None = None  # the buyer's language for emails (zh | en); None: both


@dataclass
class PaymentLink:
    gateway: str
    payment_id: str
    pay_url: str


@dataclass
class OpenOrderResult:
    outcome: str  # OPENED, SOLD_OUT, COUPON_INVALID, GATEWAY_UNAVAILABLE or INVALID_ORDER
    order_id: str
    error: str = ""  # with COUPON_INVALID: the public error code (miaofa.errors catalogue)
    status: str = ""
    amount_cents: int = 0
    currency: str = ""
    expires_at: datetime | None = None
    payment: PaymentLink | None = None
    detail: str = ""
    sku: str = ""
    quantity: int = 0


@dataclass
class PaymentNotified:
    """The payment signal. It is a hint, never proof: the workflow confirms it with the verified
    notify-log row `notify_id`, or, without one (reconciliation, ops), by asking the gateway."""

    notify_id: int | None = None
    source: str = "notify"  # notify | reconcile


@dataclass
class OrderResult:
    """What an order workflow's run returns: how the order opened, and the status it closed in."""

    order_id: str
    outcome: str  # OPENED, or why it never opened (SOLD_OUT, COUPON_INVALID, …)
    status: str = ""  # the final status; "" when it never opened


@dataclass
class CheckPaymentResult:
    status: str
    paid: bool


@dataclass
class SupportRequest:
    """The input of every support Update: who acts, and why."""

    reason: str = ""
    actor: str = ""


@dataclass
class StrayPayment:
    """A payment no open order took: reviewed with the gateway, then refunded (or handed to its order)."""

    gateway: str
    payment_id: str
    order_id: str  # as the gateway names it; may be unknown to us
    amount_cents: int
    currency: str
    reason: str  # why no order took it: order_closed | wrong_amount | other_payment | unknown_order
    found_by: str  # notify | reconcile | order


@dataclass
class ReconcileInput:
    lookback_seconds: int = 2 * 86400
    grace_seconds: int = 120  # payments younger than this may still be on their way in
    payout_start_grace_seconds: int = 60  # a withdrawal `requested` longer than this has its workflow started
    gateway: str | None = None  # only this gateway's statements; None: every gateway


@dataclass
class ReconcileReport:
    checked: int
    findings: dict[str, int] = field(default_factory=dict)  # kind → count
    refunds_started: int = 0
    orders_nudged: int = 0
    payouts_started: int = 0
    not_ready: list[str] = field(default_factory=list)  # "<gateway> <day>": a bill not out yet, tried next run
    # "<gateway[ of merchant m]>: <error class>": an account whose bill could not be fetched, tried next run
    unavailable: list[str] = field(default_factory=list)


@dataclass
class PayoutReconcileReport:
    findings: dict[str, int] = field(default_factory=dict)  # kind → count
    not_ready: list[str] = field(default_factory=list)  # "payout:<rail> <day>": a rail's bill not out yet


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


# ---- payouts: one PayoutWorkflow per withdrawal (README "Withdrawals") -----------------------------

PAYOUT_WORKFLOW = "PayoutWorkflow"


def payout_workflow_id(withdrawal_id: str) -> str:
    return f"payout-{withdrawal_id}"


# Withdrawal statuses (DESIGN.md): the row, the status query and the API agree.
WITHDRAWAL_REQUESTED = "requested"
WITHDRAWAL_IN_REVIEW = "in_review"
WITHDRAWAL_APPROVED = "approved"
WITHDRAWAL_SUBMITTED = "submitted"
WITHDRAWAL_PAID = "paid"
WITHDRAWAL_FAILED = "failed"  # the rail said no for good (or the payee never confirmed): money back
WITHDRAWAL_REJECTED = "rejected"  # platform finance said no before submit: money back
WITHDRAWAL_RETURNED = "returned"  # paid, then sent back by the payee's bank: money back
WITHDRAWAL_OPEN = (WITHDRAWAL_REQUESTED, WITHDRAWAL_IN_REVIEW, WITHDRAWAL_APPROVED, WITHDRAWAL_SUBMITTED)

# Refusal codes of the payout's review Updates (409 with this code); REFUSED_NOT_IN_REVIEW and
# REFUSED_MISSING_INPUT above are shared with the order's review.
REFUSED_SAME_APPROVER = "same_approver"
# The review Updates reuse APPROVE_UPDATE and REJECT_UPDATE; the status query is STATUS_QUERY.


@dataclass
class PayoutTiming:
    """The payout's thresholds and clocks, fixed when it is requested."""

    auto_approve_cents: int
    two_person_cents: int
    review_sla_seconds: int
    confirm_timeout_seconds: int
    query_interval_seconds: float
    query_max_interval_seconds: float
    return_watch_seconds: int
    return_poll_seconds: float


@dataclass
class PayoutInput:
    """Ids and amounts only: the destination stays in the vault, the activities look it up."""

    withdrawal_id: str
    merchant_id: str
    amount_cents: int
    fee_cents: int
    currency: str
    rail: str
    timing: PayoutTiming
    # Set: a person reviews it whatever the amount, and the timeline says why (the shop is suspended).
    # A field with a default: inputs recorded before it existed decode as "" and replay as they ran.
    review_reason: str = ""


@dataclass
class PayoutReview:
    actor: str = ""
    reason: str = ""


@dataclass
class PayoutState:
    withdrawal_id: str
    status: str
    approvals: list[str] = field(default_factory=list)
