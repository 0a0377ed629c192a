"""Support's hand in an order: the review hold, and the Updates support acts through.

A mixin of OrderWorkflow (workflows/order.py), split out to keep the saga readable: it uses the
workflow's state (`_status`, `_expires_at` …) and steps (`_record`, `_release`, `_refund` …).
Every Update is validated before it is accepted and answered with a SupportResult or a refusal
whose code the API renders as a 409.
"""

import unicodedata
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from miaofa import contract as c
from miaofa import steps as s
from workflows.state import SagaState

TIMED_OUT = "timed_out"
# The API's rule (miaofa/text.py), restated: workflow code imports no more of miaofa than the contract.
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def refuse(message: str, code: str) -> ApplicationError:
    """A support Update's refusal: final, so neither the API nor the Temporal CLI retries it."""
    return ApplicationError(message, type=code, non_retryable=True)


class SupportActions(SagaState):
    # ---- the review hold ----------------------------------------------------------------------

    async def _hold_for_review(self) -> bool:
        """The rule chain asked for a person: keep the reservation, create no payment, and wait for
        support's decision until the review window ends. True: approved, go on to payment."""
        assert self._expires_at is not None  # set by _open
        await self._wait_until(lambda: bool(self._review_outcome), self._expires_at)
        now = workflow.now()
        if not self._review_outcome:  # set before any await: a decision arriving now is refused
            self._review_outcome = TIMED_OUT
            await self._record(s.StageStep(self._order_id, c.REVIEW_TIMED_OUT_STAGE, now))
            await self._release(c.REJECTED)
            return False
        request = self._review_request
        assert request is not None
        detail = {"actor": request.actor[:40], **({"reason": request.reason[:200]} if request.reason else {})}
        if self._review_outcome == c.APPROVE_UPDATE:
            self._expires_at = now + timedelta(seconds=self._order.timing.payment_window_seconds)
            await self._record(
                s.StageStep(
                    self._order_id,
                    c.REVIEW_APPROVED_STAGE,
                    now,
                    status=c.AWAITING_PAYMENT,
                    detail=detail,
                    expires_at=self._expires_at,
                    audit_actor=request.actor,
                )
            )
            self._set_status(c.AWAITING_PAYMENT)
            return True
        await self._record(
            s.StageStep(self._order_id, c.REVIEW_REJECTED_STAGE, now, detail=detail, audit_actor=request.actor)
        )
        await self._release(c.REJECTED, actor=request.actor)
        return False

    @workflow.update(name=c.APPROVE_UPDATE)
    async def approve(self, request: c.SupportRequest | None = None) -> c.SupportResult:
        await self._decide(c.APPROVE_UPDATE, request)
        if self._status == c.AWAITING_PAYMENT:
            return c.SupportResult(self._order_id, self._status, "approved; the buyer can pay now")
        raise refuse(f"the order is {self._status}", c.REFUSED_NOT_IN_REVIEW)

    @approve.validator
    def _validate_approve(self, request: c.SupportRequest | None = None) -> None:
        self._validate_decision(request, "approve")

    @workflow.update(name=c.REJECT_UPDATE)
    async def reject(self, request: c.SupportRequest | None = None) -> c.SupportResult:
        await self._decide(c.REJECT_UPDATE, request)
        return c.SupportResult(self._order_id, self._status, "rejected; its stock is released")

    @reject.validator
    def _validate_reject(self, request: c.SupportRequest | None = None) -> None:
        self._validate_decision(request, "reject")

    async def _decide(self, outcome: str, request: c.SupportRequest | None) -> None:
        assert request is not None
        if self._review_outcome:  # two decisions passed the validator together: the first one counts
            raise refuse(f"the review was already decided ({self._review_outcome})", c.REFUSED_NOT_IN_REVIEW)
        self._review_outcome, self._review_request = outcome, request
        await workflow.wait_condition(lambda: self._status != c.IN_REVIEW)

    def _validate_decision(self, request: c.SupportRequest | None, update: str) -> None:
        _require_input(request, update)
        if self._status != c.IN_REVIEW or self._review_outcome:
            raise refuse(
                f"only orders in review can be approved or rejected; this one is {self._status or 'new'}",
                c.REFUSED_NOT_IN_REVIEW,
            )

    # ---- after the order opened ----------------------------------------------------------------

    @workflow.update(name=c.CANCEL_UPDATE)
    async def cancel(self, request: c.SupportRequest | None = None) -> c.SupportResult:
        assert request is not None
        self._cancel_requested = True
        self._cancel_actor = request.actor
        await workflow.wait_condition(lambda: self._status != c.AWAITING_PAYMENT)
        if self._status != c.CANCELLED:
            raise refuse(f"the payment arrived first; the order is {self._status}", c.REFUSED_NOT_CANCELLABLE)
        return c.SupportResult(self._order_id, self._status, "order cancelled and its stock released")

    @cancel.validator
    def _validate_cancel(self, request: c.SupportRequest | None = None) -> None:
        _require_input(request, "cancel")
        if self._status != c.AWAITING_PAYMENT or self._paid is not None:
            raise refuse(
                f"only unpaid orders can be cancelled; this one is {self._status or 'new'}", c.REFUSED_NOT_CANCELLABLE
            )

    @workflow.update(name=c.REFUND_UPDATE)
    async def refund(self, request: c.SupportRequest | None = None) -> c.SupportResult:
        assert request is not None
        async with self._support_lock:
            if self._status == c.REFUNDED:
                raise refuse("the order is already refunded", c.REFUSED_ALREADY_REFUNDED)
            await self._refund(request.reason or "support refund", actor=request.actor)
        return c.SupportResult(self._order_id, self._status, "refunded at the gateway; keys marked refunded")

    @refund.validator
    def _validate_refund(self, request: c.SupportRequest | None = None) -> None:
        _require_input(request, "refund")
        if self._status == c.REFUNDED:
            raise refuse("the order is already refunded", c.REFUSED_ALREADY_REFUNDED)
        if self._status != c.DELIVERED:
            raise refuse(
                f"only delivered orders can be refunded; this one is {self._status or 'new'}", c.REFUSED_NOT_REFUNDABLE
            )
        if self._payment is None:
            raise refuse("this order was free; there is no payment to refund", c.REFUSED_NOT_REFUNDABLE)

    @workflow.update(name=c.RESEND_UPDATE)
    async def resend(self, request: c.SupportRequest | None = None) -> c.SupportResult:
        assert request is not None
        async with self._support_lock:
            await self._record(s.StageStep(self._order_id, "resent", workflow.now(), detail={"actor": request.actor}))
            await self._send_delivery_email()
        return c.SupportResult(self._order_id, self._status, "delivery email sent again")

    @resend.validator
    def _validate_resend(self, request: c.SupportRequest | None = None) -> None:
        _require_input(request, "resend")
        if self._status != c.DELIVERED:
            raise refuse(
                f"only delivered orders can be resent; this one is {self._status or 'new'}", c.REFUSED_NOT_DELIVERED
            )


def _require_input(request: c.SupportRequest | None, update: str) -> None:
    """The Temporal CLI can send an Update with no input; say what it needs instead of a TypeError.
    An input in clear arrives as none too: the worker's codec decodes what it did not encrypt to null
    (miaofa/crypto/codec.py), so only an API or a codec-holder can act."""
    if request is None:
        raise refuse(
            f"{update} needs its input, encrypted through the codec (--codec-endpoint), "
            f'e.g. {{"reason": "…", "actor": "your name"}}',
            c.REFUSED_MISSING_INPUT,
        )
    if not request.actor.strip():
        raise refuse(f"{update} needs an actor: who is acting", c.REFUSED_MISSING_INPUT)
    if _has_control(request.actor) or _has_control(request.reason):
        # Refused before any step runs: the database would refuse it after the gateway refunded.
        raise refuse(f"{update}: the actor and reason must not contain control characters", c.REFUSED_MISSING_INPUT)


def _has_control(text: str) -> bool:
    """A control or format character, as the API refuses them; not other non-printables (an ideographic
    space, an emoji unknown to this Python), which the API takes and the database stores."""
    return not text.isprintable() and any(unicodedata.category(char) in CONTROL_CATEGORIES for char in text)
