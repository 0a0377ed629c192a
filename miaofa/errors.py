"""One error base class; the API renders every subclass as {"error", "detail"} with its status.

The catalogue: each public error code is one class, so a code that crosses a process boundary (an
activity's result, a workflow's refusal) turns back into the same error with `from_code`.
"""

CATALOGUE: dict[str, type["MiaofaError"]] = {}


class MiaofaError(Exception):
    status_code = 400
    error = "bad_request"
    headers: dict[str, str] | None = None  # sent with the answer (Retry-After)
    risk_rule: str | None = None  # the risk rule that denied an order, when one did (miaofa/risk/chain.py)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        CATALOGUE.setdefault(cls.error, cls)

    def __init__(self, detail: str, *, error: str | None = None, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code


CATALOGUE[MiaofaError.error] = MiaofaError  # the base's own code too: from_code("bad_request") is a 400


class Unauthorized(MiaofaError):
    status_code = 401
    error = "unauthorized"


class NotFound(MiaofaError):
    status_code = 404
    error = "not_found"


class Conflict(MiaofaError):
    status_code = 409
    error = "conflict"


class InvalidInput(MiaofaError):
    status_code = 422
    error = "invalid_input"


class Unavailable(MiaofaError):
    status_code = 503
    error = "unavailable"


class PayloadTooLarge(MiaofaError):
    status_code = 413
    error = "payload_too_large"


class UnsupportedMediaType(MiaofaError):
    status_code = 415
    error = "unsupported_media_type"


class Forbidden(MiaofaError):
    """Known, and not allowed this: a staff token asking what only the shop's owner may do."""

    status_code = 403
    error = "forbidden"


class CsrfRefused(MiaofaError):
    """An HTML form posted from another site, or without this browser's token for it (api/csrf.py)."""

    status_code = 403
    error = "csrf_refused"


def from_code(code: str, detail: str, default: type[MiaofaError]) -> MiaofaError:
    """The catalogued error for a code; an unknown code keeps its text under the default's status."""
    cls = CATALOGUE.get(code)
    return cls(detail) if cls is not None else default(detail, error=code or default.error)


# ---- merchants ------------------------------------------------------------------------------


class MerchantSuspended(Conflict):
    """The shop is suspended: it takes no new orders, and its payout destinations cannot change."""

    error = "merchant_suspended"


# ---- buyers ----------------------------------------------------------------------------------


class SoldOut(Conflict):
    error = "sold_out"


class OrderNotFound(NotFound):
    error = "order_not_found"


class CouponNotFound(NotFound):  # a well-formed code nobody issued: not found, like an unknown product
    error = "coupon_not_found"


class CouponUsed(InvalidInput):
    error = "coupon_used"


class CouponExpired(InvalidInput):
    error = "coupon_expired"


class CouponCurrency(InvalidInput):
    error = "coupon_currency"


class RailNotOffered(InvalidInput):  # a payout rail this deployment does not offer
    error = "rail_not_offered"


class CouponCodeTaken(Conflict):  # the shop already has a coupon with this code
    error = "coupon_code_taken"


# ---- the order's answers to support (codes shared with the workflow through miaofa.contract) ----


class AlreadyRefunded(Conflict):
    error = "already_refunded"


class NotRefundable(Conflict):
    error = "not_refundable"


class NotCancellable(Conflict):
    error = "not_cancellable"


class NotDelivered(Conflict):
    error = "not_delivered"


class NoPayment(Conflict):
    error = "no_payment"


class NotInReview(Conflict):
    error = "not_in_review"


class MissingInput(InvalidInput):
    error = "missing_input"


class OrderClosed(Conflict):
    error = "order_closed"


class OrderTimeout(Unavailable):
    error = "order_timeout"


class TemporalUnavailable(Unavailable):
    error = "temporal_unavailable"


# ---- order admission (miaofa/risk/) and other abuse guards ----------------------------------------


class TooManyRequests(MiaofaError):
    """Slow down: `retry_after` seconds (sent as the Retry-After header)."""

    status_code = 429
    error = "too_many_requests"

    def __init__(self, detail: str, *, retry_after: float = 1, **kwargs) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = max(1, int(retry_after + 0.999))
        self.headers = {"Retry-After": str(self.retry_after)}


class Busy(MiaofaError):
    """Past the order starts in flight (README "Capacity"): nothing was reserved; come back in
    `retry_after` seconds."""

    status_code = 503
    error = "busy"

    def __init__(self, detail: str, *, retry_after: int = 2, **kwargs) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = max(1, retry_after)
        self.headers = {"Retry-After": str(self.retry_after)}


class TooManyOpenOrders(MiaofaError):
    status_code = 403
    error = "too_many_open_orders"


class QuantityLimit(MiaofaError):
    status_code = 403
    error = "quantity_limit"


# Denials of the rule chain (miaofa/risk/rules.py): the code says which kind of rule, never what matched.


class EmailBlocked(MiaofaError):
    status_code = 403
    error = "email_blocked"


class NetworkBlocked(MiaofaError):
    status_code = 403
    error = "network_blocked"


class DeviceBlocked(MiaofaError):
    status_code = 403
    error = "device_blocked"


class OrderRefused(MiaofaError):
    """An anomaly rule set to deny (rather than review)."""

    status_code = 403
    error = "order_refused"


# ---- payouts (miaofa/payouts/) --------------------------------------------------------------------


class InsufficientFunds(Conflict):
    error = "insufficient_funds"


class DebtOutstanding(Conflict):
    error = "debt_outstanding"


class DestinationCoolingOff(Conflict):
    error = "destination_cooling_off"


class IdempotencyKeyReused(Conflict):
    """The same Idempotency-Key with another body: a client bug, never a second withdrawal."""

    error = "idempotency_key_reused"


class SameApprover(Conflict):
    error = "same_approver"
