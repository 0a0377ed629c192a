"""The saga's activities as the workflow sees them: names and plain input/result types.

The workflow calls activities by these names, so it never imports the activity code (which
talks to PostgreSQL and gateways) into its sandbox.
"""

from dataclasses import dataclass, field
from datetime import datetime

from miaofa.contract import AWAITING_PAYMENT, StrayPayment

OPEN_ORDER = "open_order"
CREATE_PAYMENT = "create_payment"
QUERY_PAYMENT = "query_payment"
CLOSE_PAYMENT = "close_payment"
REFUND_PAYMENT = "refund_payment"
RECORD_STAGE = "record_stage"
ACCEPT_PAYMENT = "accept_payment"
DELIVER_KEYS = "deliver_keys"
ACCEPT_AND_DELIVER = "accept_and_deliver"  # ACCEPT_PAYMENT then DELIVER_KEYS, in one transaction
RELEASE_STOCK = "release_stock"
RESERVE_AGAIN = "reserve_again"
REFUND_KEYS = "refund_keys"
ISSUE_COUPON = "issue_coupon"
SEND_DELIVERY_EMAIL = "send_delivery_email"
REVIEW_STRAY = "review_stray_payment"
RECORD_STRAY_REFUND = "record_stray_refund"
RECONCILE = "reconcile_payments"
RELEASE_HOLDS = "release_holds"

# Verdicts of ACCEPT_PAYMENT: what a proof of payment means for its order (miaofa.payments.proof.judge).
ACCEPTED = "accepted"  # the order's payment, paid in full: the order is paid now
DUPLICATE = "duplicate"  # the order's payment, already accepted: nothing changes
STRAY = "stray"  # money the order cannot take (wrong amount or currency, another payment): refund it
UNCONFIRMED = "unconfirmed"  # a signal with no verified notify behind it: ignored
NOT_PAID = "not_paid"
# CLOSE_PAYMENT's answer when the gateway has no close API (not a failure: nothing to retry or log).
CLOSE_UNSUPPORTED = "unsupported"
REFUND_BY_HAND = "refund_by_hand"  # a refund step's answer when the gateway has no refund API: a person pays back

# Error type of a step that must not be retried: the data is wrong, not the weather.
DATA_ERROR = "DataError"
NO_RESERVED_KEYS = "NoReservedKeys"
COUPON_SPENT = "CouponSpent"  # delivery found the order's coupon held by another order

# Outcomes of RESERVE_AGAIN (a payment after the order expired or was cancelled).
RESERVED = "reserved"
OUT_OF_STOCK = "out_of_stock"
COUPON_ELSEWHERE = "coupon_elsewhere"


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
    status: str = AWAITING_PAYMENT  # or IN_REVIEW: held for support, no payment yet
    risk: dict[str, str] = field(default_factory=dict)  # the risk stage's detail: rule, verdict, reason
    lang: str | None = None  # the buyer's language for emails


@dataclass
class OpenedOrder:
    outcome: str
    amount_cents: int = 0
    detail: str = ""
    error: str = ""  # public error code when the outcome is a refusal


@dataclass
class CreatePaymentStep:
    order_id: str
    gateway: str
    amount_cents: int
    currency: str
    subject: str
    expires_at: datetime
    at: datetime
    retry_until: datetime | None = None  # a gateway error after this ends the retries (gateway_unavailable)


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
    status: str  # pending | paid | closed | refunded | unknown, or CLOSE_UNSUPPORTED
    amount_cents: int
    currency: str
    paid_at: datetime | None = None
    payment_id: str = ""
    # With CLOSE_UNSUPPORTED: False when the gateway's query is unsigned (only its notify proves a payment).
    query_proves_payment: bool = True


@dataclass
class StageStep:
    order_id: str
    stage: str
    at: datetime
    status: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None  # a new payment deadline (a held order approved)
    audit_actor: str = ""  # set: a person's action, written to the audit log too


@dataclass
class AcceptPaymentStep:
    """A proof of payment for the order: a verified notify (by its log row) or a gateway answer."""

    order_id: str
    source: str  # notify | poll | poll_backup | check | close | late_poll | reconcile | free
    at: datetime
    notify_id: int | None = None
    payment_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    paid_at: datetime | None = None


# The timeline stage written for each source that finds a payment.
SOURCE_STAGES = {
    "notify": "notified",
    "poll": "polled",
    "poll_backup": "polled_backup",
    "check": "checked",
    "close": "paid_at_close",
    "late_poll": "polled_late",
    "reconcile": "reconciled",
    "free": "free",
}


@dataclass
class PaymentVerdict:
    verdict: str  # ACCEPTED | DUPLICATE | STRAY | UNCONFIRMED | NOT_PAID
    payment_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    paid_at: datetime | None = None
    reason: str = ""  # with STRAY: wrong_amount | other_payment


@dataclass
class DeliverStep:
    order_id: str
    at: datetime


@dataclass
class Delivered:
    key_ids: list[int]


@dataclass
class AcceptAndDeliverStep:
    proof: AcceptPaymentStep
    at: datetime  # the delivery's time (delivered_at), as DeliverStep's


@dataclass
class AcceptedAndDelivered:
    verdict: PaymentVerdict
    key_ids: list[int]  # empty unless the proof was the order's payment: then its keys, sold


@dataclass
class ReservedAgain:
    outcome: str  # RESERVED, OUT_OF_STOCK or COUPON_ELSEWHERE
    reason: str = ""  # why not, in the buyer's words: the refund's reason on the timeline


@dataclass
class ReleaseStep:
    order_id: str
    status: str
    at: datetime
    actor: str = "system"
    reason: str = ""  # on the timeline; gateway_unavailable lets the Idempotency-Key open a new order


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


@dataclass
class StrayReview:
    action: str  # refund | nothing | handed_to_order
    amount_cents: int = 0
    detail: str = ""


@dataclass
class StrayRefunded:
    stray: StrayPayment
    refund_id: str
    at: datetime
    outcome: str  # refunded | nothing_to_refund | handed_to_order
    detail: str = ""


@dataclass
class ReconcileStep:
    start: datetime
    end: datetime
    at: datetime
    gateway: str | None = None  # only this gateway's statements (`miaofa reconcile run --gateway`)


# ---- payouts ------------------------------------------------------------------------------------

RECORD_PAYOUT_STAGE = "record_payout_stage"
SUBMIT_TRANSFER = "submit_transfer"
QUERY_TRANSFER = "query_transfer"
CANCEL_TRANSFER = "cancel_transfer"
SETTLE_PAYOUT = "settle_payout"
START_WAITING_PAYOUTS = "start_waiting_payouts"  # reconciliation's sweep: withdrawals left `requested`
RECONCILE_PAYOUTS = "reconcile_payouts"  # each rail's record of transfers against the withdrawals
RECONCILE_PAYOUT_BILLS = "reconcile_payout_bills"  # the same, and the rails' days not out yet

# A rail's answer about one transfer (miaofa/payouts/rails.py maps each rail's words to these).
TRANSFER_PAID = "paid"
TRANSFER_FAILED = "failed"  # definitive only when TransferAnswer.definitive (a whitelisted code)
TRANSFER_PROCESSING = "processing"
TRANSFER_WAIT_CONFIRM = "wait_confirm"  # the payee must accept it (WeChat's WAIT_USER_CONFIRM)
TRANSFER_UNKNOWN = "unknown"  # a timeout, a 5xx, an unreadable answer: never a failure
TRANSFER_NOT_FOUND = "not_found"  # the rail never got it: submit again, with the same number
TRANSFER_RETURNED = "returned"
TRANSFER_CANCELLED = "cancelled"

# What SETTLE_PAYOUT posts in the ledger, with the status and the timeline line, in one transaction.
SETTLE_PAID = "paid"  # reserved → payout_clearing (out) and fees: payout_paid:<id>
SETTLE_RELEASE = "release"  # reserved → available: payout_return:<id>
SETTLE_RETURN = "return"  # after paid: payout_clearing and fees → available: payout_bounce:<id>


@dataclass
class PayoutStageStep:
    withdrawal_id: str
    seq: int
    stage: str
    note: str
    at: datetime
    status: str = ""  # "": the status stays


@dataclass
class TransferStep:
    withdrawal_id: str


@dataclass
class TransferAnswer:
    status: str
    code: str = ""  # the rail's own code, for finance
    reason: str = ""  # in plain words, for the merchant
    definitive: bool = False


@dataclass
class SettleStep:
    withdrawal_id: str
    seq: int
    outcome: str  # SETTLE_PAID, SETTLE_RELEASE or SETTLE_RETURN
    status: str
    stage: str
    note: str
    at: datetime
    rail_code: str = ""
