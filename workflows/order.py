"""OrderWorkflow: one durable workflow per order, reading like the saga in DESIGN.md.

open (reserve) → [held for review until support approves] → create payment → wait for the
callback, then poll → paid → deliver (with the SLA watch and its coupon). Or: window ends → close
and release. Then, until the order closes, every proof of payment still ends in a delivery or a
refund (workflows/proofs.py), and support can act (workflows/support.py).
"""

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from miaofa import contract as c
from miaofa import steps as s
from workflows import patches
from workflows.policies import (
    CLOSE_RETRY,
    CREATE_PAYMENT_ATTEMPT_TIMEOUT,
    CREATE_PAYMENT_RETRY,
    DB_STEP,
    QUERY_TIMEOUT,
    STEP_FAILED,
    Backoff,
    failure_type,
)
from workflows.proofs import PaymentProofs
from workflows.support import SupportActions


@workflow.defn(name=c.ORDER_WORKFLOW)
class OrderWorkflow(PaymentProofs, SupportActions):
    @workflow.init
    def __init__(self, order: c.OrderInput) -> None:
        # The input is set before any handler runs: a retried first task may carry a signal too.
        self._input: c.OrderInput | None = order
        self._opened: c.OpenOrderResult | None = None
        self._status = ""
        self._amount_cents = 0
        self._expires_at: datetime | None = None
        self._payment: c.PaymentLink | None = None
        self._paid: s.PaymentVerdict | None = None
        self._proofs: list[s.AcceptPaymentStep] = []
        self._seen_notifies: set[int] = set()
        self._look_requested = False
        self._close_failed = False  # the gateway may still take the money: watch for a late payment
        self._poll_late = True  # False: its query proves nothing, only its signed notify does
        self._strays: set[str] = set()
        self._cancel_requested = False
        self._cancel_actor = "system"
        self._delivered_key_ids: list[int] = []
        self._keys_committed = False  # by ACCEPT_AND_DELIVER: _deliver has no keys left to commit
        self._coupon_issued = False
        self._refund_refused = False
        self._stages: list[str] = []
        self._support_lock = asyncio.Lock()
        self._review_outcome = ""
        self._review_request: c.SupportRequest | None = None

    # ---- the saga -------------------------------------------------------------------------

    @workflow.run
    async def run(self, order: c.OrderInput) -> c.OrderResult:
        self._input = order
        opened = await self._open(order)
        if opened.outcome != c.OPENED:
            self._opened = c.OpenOrderResult(
                outcome=opened.outcome, order_id=order.order_id, detail=opened.detail, error=opened.error
            )
            return await self._end_early(opened.outcome)
        self._amount_cents = opened.amount_cents
        if _held(order):
            self._set_status(c.IN_REVIEW, c.SA_AMOUNT_CENTS.value_set(self._amount_cents))
            self._opened = self._open_result()  # POST /orders answers 202: in review, no payment yet
            if not await self._hold_for_review():
                await self._until_closed()
                return self._result()
        else:
            self._set_status(c.AWAITING_PAYMENT, c.SA_AMOUNT_CENTS.value_set(self._amount_cents))  # after any coupon

        if self._amount_cents > 0:
            try:
                self._payment = await self._create_payment(order)
            except STEP_FAILED:
                await self._release(c.CANCELLED, reason=c.GATEWAY_UNAVAILABLE)
                self._opened = c.OpenOrderResult(
                    outcome=c.GATEWAY_UNAVAILABLE,
                    order_id=order.order_id,
                    detail="the payment gateway did not answer; nothing was charged",
                )
                return await self._end_early(c.GATEWAY_UNAVAILABLE)
        else:
            self._proofs.append(s.AcceptPaymentStep(order.order_id, "free", workflow.now()))
        self._opened = self._open_result()

        if await self._await_payment():
            await self._deliver()
        else:
            await self._close_unpaid()
            if self._paid is not None:  # the close lost the race to the buyer
                await self._deliver()
        await self._until_closed()
        return self._result()

    async def _end_early(self, outcome: str) -> c.OrderResult:
        """The order never got going: answer POST /orders, let the handlers finish, and end."""
        if workflow.patched(patches.WAIT_HANDLERS_ON_EARLY_RETURN):
            await workflow.wait_condition(workflow.all_handlers_finished)
        return c.OrderResult(self._order_id, outcome, self._status)

    def _result(self) -> c.OrderResult:
        return c.OrderResult(self._order_id, c.OPENED, self._status)

    async def _open(self, order: c.OrderInput) -> s.OpenedOrder:
        now = workflow.now()
        # Held for review, the order's deadline is the review's; the payment window starts on approval.
        window = order.timing.review_window_seconds if _held(order) else order.timing.payment_window_seconds
        self._expires_at = now + timedelta(seconds=window)
        try:
            return await workflow.execute_local_activity(
                s.OPEN_ORDER,
                s.OpenOrderStep(
                    order_id=order.order_id,
                    product_id=order.product_id,
                    sku=order.sku,
                    quantity=order.quantity,
                    unit_price_cents=order.unit_price_cents,
                    currency=order.currency,
                    email=order.email,
                    buyer_hash=order.buyer_hash,
                    gateway=order.gateway,
                    coupon_code=order.coupon_code,
                    at=now,
                    expires_at=self._expires_at,
                    status=c.IN_REVIEW if _held(order) else c.AWAITING_PAYMENT,
                    risk=_risk_detail(order.risk),
                    lang=order.lang,
                ),
                result_type=s.OpenedOrder,
                **DB_STEP,
            )
        except STEP_FAILED:
            return s.OpenedOrder(
                c.INVALID_ORDER, detail="the order's data was refused; nothing was kept", error="invalid_input"
            )

    async def _create_payment(self, order: c.OrderInput) -> c.PaymentLink:
        assert self._expires_at is not None
        retrying = timedelta(seconds=order.timing.payment_create_seconds)  # a step's input: no patch
        return await workflow.execute_local_activity(
            s.CREATE_PAYMENT,
            s.CreatePaymentStep(
                order_id=order.order_id,
                gateway=order.gateway,
                amount_cents=self._amount_cents,
                currency=order.currency,
                subject=order.product_name,
                expires_at=self._expires_at,
                at=workflow.now(),
                retry_until=workflow.now() + retrying,
            ),
            result_type=c.PaymentLink,
            start_to_close_timeout=min(CREATE_PAYMENT_ATTEMPT_TIMEOUT, retrying),
            retry_policy=CREATE_PAYMENT_RETRY,
        )

    async def _await_payment(self) -> bool:
        """Wait for the callback; after the grace time poll with backoff until the window ends."""
        timing = self._order.timing
        assert self._expires_at is not None
        polls = Backoff(
            workflow.now() + timedelta(seconds=timing.callback_grace_seconds),
            timing.poll_interval_seconds,
            timing.poll_max_interval_seconds,
        )
        while True:
            await self._settle_proofs(deliver=True)
            if self._paid is not None:
                return True
            if self._cancel_requested or workflow.now() >= self._expires_at:
                break
            if self._look_requested or polls.due(workflow.now()):
                if not self._look_requested:
                    polls.step(workflow.now())
                self._look_requested = False
                await self._poll_gateway("poll")
                continue
            await self._wait_until(self._has_news, min(polls.next_at, self._expires_at))
        if not self._cancel_requested:
            await self._poll_gateway("poll")  # the last look before the window closes
            await self._settle_proofs(deliver=True)
        return self._paid is not None

    async def _close_unpaid(self) -> None:
        """Close the gateway payment, then release the stock. A close that lost the race is a payment."""
        status = c.CANCELLED if self._cancel_requested else c.EXPIRED
        try:
            snapshot = await workflow.execute_activity(
                s.CLOSE_PAYMENT,
                self._gateway_step(),
                result_type=s.PaymentSnapshot,
                start_to_close_timeout=QUERY_TIMEOUT,
                retry_policy=CLOSE_RETRY,
            )
        except ActivityError:
            # The gateway may still take the buyer's money: the late-payment watch looks for it.
            self._close_failed = True
            await self._record(s.StageStep(self._order_id, "close_failed", workflow.now()))
        else:
            if snapshot.status == "paid":
                self._queue_snapshot(snapshot, "close")
                await self._settle_proofs()
                if self._paid is not None:  # keep the reservation: this payment gets its keys
                    return
            elif snapshot.status == s.CLOSE_UNSUPPORTED and workflow.patched(patches.CLOSE_UNSUPPORTED_ANSWER):
                # No close there: the payment stays open, so the late watch looks for it (by query
                # only where a query can prove a payment; else its signed notify wakes the order).
                self._close_failed = True
                self._poll_late = snapshot.query_proves_payment
                await self._record(s.StageStep(self._order_id, c.CLOSE_UNSUPPORTED_STAGE, workflow.now()))
        await self._release(status)

    async def _until_closed(self) -> None:
        """Until the support window ends, every proof of payment still ends in delivery or refund.

        While the gateway may still take money (its close failed), look for it with a backoff.
        """
        timing = self._order.timing
        closes_at = workflow.now() + timedelta(
            seconds=max(timing.support_window_seconds, timing.late_payment_watch_seconds)
        )
        watch_end = workflow.now() + timedelta(seconds=timing.late_payment_watch_seconds)
        looks = Backoff(
            workflow.now() + timedelta(seconds=timing.late_poll_interval_seconds),
            timing.late_poll_interval_seconds,
            timing.late_poll_max_interval_seconds,
        )
        while True:
            await self._settle_proofs()
            if self._paid is not None and self._status in (c.EXPIRED, c.CANCELLED) and not self._refund_refused:
                await self._deliver_late_payment()
                continue
            # A gateway whose query cannot prove a payment is not asked: its signed notify wakes us.
            askable = self._paid is None and self._payment is not None and self._poll_late
            watching = askable and self._close_failed and workflow.now() < watch_end
            if askable and (self._look_requested or (watching and looks.due(workflow.now()))):
                if not self._look_requested:
                    looks.step(workflow.now())
                self._look_requested = False
                await self._poll_gateway("late_poll")
                continue
            self._look_requested = False
            if workflow.now() >= closes_at:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._proofs:
                    return
                continue
            await self._wait_until(
                lambda: bool(self._proofs) or self._look_requested,
                min(looks.next_at, closes_at) if watching else closes_at,
            )

    async def _deliver_late_payment(self) -> None:
        """Paid after the window: deliver if stock (and the order's coupon) can be had again, otherwise refund."""
        await self._record(s.StageStep(self._order_id, "paid_after_expiry", workflow.now()))
        step = s.DeliverStep(self._order_id, workflow.now())
        if workflow.patched(patches.LATE_PAYMENT_CLAIMS_COUPON):
            again = await workflow.execute_local_activity(s.RESERVE_AGAIN, step, result_type=s.ReservedAgain, **DB_STEP)
            if again.outcome != s.RESERVED:  # out of stock, or its coupon went to another order
                await self._refund_unasked(again.reason or "paid after expiry and not deliverable")
                return
        elif not await workflow.execute_local_activity(s.RESERVE_AGAIN, step, result_type=bool, **DB_STEP):
            await self._refund_unasked("paid after expiry and out of stock")
            return
        await self._deliver()

    async def _deliver(self) -> None:
        """Commit the reserved keys as sold, watching the SLA counted from the gateway's paid time."""
        assert self._paid is not None and self._paid.paid_at is not None
        self._set_status(c.PAID)
        sla_deadline = self._paid.paid_at + timedelta(seconds=self._order.delivery_sla_seconds)
        delivery = asyncio.create_task(self._commit_keys())
        remaining = (sla_deadline - workflow.now()).total_seconds()
        if remaining > 0:
            try:
                await workflow.wait_condition(delivery.done, timeout=remaining, timeout_summary="delivery-sla")
            except TimeoutError:
                await self._compensate_late_delivery("sla_timer")
        try:
            await delivery
        except STEP_FAILED as failure:
            await self._delivery_failed(failure)
            return
        if workflow.now() > sla_deadline:
            await self._compensate_late_delivery("delivered_late")
        self._set_status(c.DELIVERED)
        try:
            await self._send_delivery_email()
        except STEP_FAILED:  # the keys are on the order page; support can resend once mail works again
            await self._record(s.StageStep(self._order_id, "email_failed", workflow.now()))

    async def _commit_keys(self) -> None:
        if self._keys_committed:  # with the payment's acceptance
            self._keys_committed = False
            return
        delivered = await workflow.execute_local_activity(
            s.DELIVER_KEYS, s.DeliverStep(self._order_id, workflow.now()), result_type=s.Delivered, **DB_STEP
        )
        self._delivered_key_ids = delivered.key_ids

    async def _delivery_failed(self, failure: BaseException) -> None:
        """The keys cannot be committed (a broken invariant, bad data): say so, and give the money back."""
        reason = failure_type(failure) or "delivery_error"
        workflow.logger.error("delivery failed for order %s: %s", self._order_id, reason)
        workflow.metric_meter().create_counter(
            "miaofa_delivery_failures", "Paid orders whose keys could not be delivered (refunded)"
        ).add(1)
        self._set_status(c.DELIVERY_FAILED)
        await self._record(
            s.StageStep(
                self._order_id, "delivery_failed", workflow.now(), status=c.DELIVERY_FAILED, detail={"reason": reason}
            )
        )
        await self._refund_unasked(f"delivery failed ({reason})")

    async def _compensate_late_delivery(self, reason: str) -> None:
        if self._coupon_issued:
            return
        self._coupon_issued = True  # a coupon is issued exactly when delivery is late
        workflow.upsert_search_attributes([c.SA_DELIVERY_LATE.value_set(True)])
        await workflow.execute_local_activity(
            s.ISSUE_COUPON, s.CouponStep(self._order_id, reason, workflow.now()), result_type=s.IssuedCoupon, **DB_STEP
        )

    async def _send_delivery_email(self) -> None:
        await workflow.execute_local_activity(
            s.SEND_DELIVERY_EMAIL,
            s.DeliverStep(self._order_id, workflow.now()),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5), maximum_attempts=10
            ),
            local_retry_threshold=timedelta(seconds=3),
        )  # an SMTP outage waits on timers, not in the task

    # ---- messages -------------------------------------------------------------------------

    @workflow.update(name=c.OPEN_UPDATE)
    async def open_order(self) -> c.OpenOrderResult:
        """The answer POST /orders waits for: reserved with a payment link, or why not."""
        await workflow.wait_condition(lambda: self._opened is not None)
        assert self._opened is not None
        return self._opened

    @workflow.query(name=c.STATUS_QUERY)
    def state(self) -> c.OrderState:
        return c.OrderState(
            order_id=self._input.order_id if self._input else "",
            status=self._status,
            paid=self._paid is not None,
            delivered_key_count=len(self._delivered_key_ids),
            coupon_issued=self._coupon_issued,
            delivery_late=self._coupon_issued,
            stages=list(self._stages),
        )

    # ---- helpers ---------------------------------------------------------------------------

    def _open_result(self) -> c.OpenOrderResult:
        return c.OpenOrderResult(
            outcome=c.OPENED,
            order_id=self._order_id,
            status=self._status,
            amount_cents=self._amount_cents,
            currency=self._order.currency,
            expires_at=self._expires_at,
            payment=self._payment,
            sku=self._order.sku,
            quantity=self._order.quantity,
        )


def _held(order: c.OrderInput) -> bool:
    return order.risk is not None and order.risk.verdict == c.RISK_REVIEW


def _risk_detail(risk: c.RiskDecision | None) -> dict[str, str]:
    """The risk stage's detail: which rule decided what, and the device's hash (the new-device rule
    reads it back from delivered orders). Never an email or an address."""
    if risk is None:
        return {}
    detail = {"verdict": risk.verdict, "reason": risk.reason, **({"rule": risk.rule} if risk.rule else {})}
    return {**detail, "device": risk.device_hash} if risk.device_hash else detail
