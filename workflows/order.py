"""OrderWorkflow: one durable workflow per order, reading like the saga in DESIGN.md.

open (reserve) → create payment → wait for the callback, then poll → paid → deliver (with the
SLA watch and its coupon) → serve support until the support window closes. Or: window ends →
close and release → watch for a late payment → deliver again or refund it.
"""

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from miaofa import contract as c
from miaofa import steps as s

# DB steps must not give up: a database outage leaves the order retrying, never half-done.
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
DB_TIMEOUT = timedelta(seconds=15)
# One query attempt per channel: the workflow does the failover and the backoff itself.
QUERY_RETRY = RetryPolicy(maximum_attempts=1)
QUERY_TIMEOUT = timedelta(seconds=10)
GATEWAY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
CLOSE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
CREATE_PAYMENT_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=300), maximum_attempts=3)


@workflow.defn
class OrderWorkflow:
    def __init__(self) -> None:
        self._input: c.OrderInput | None = None
        self._opened: c.OpenOrderResult | None = None
        self._status = ""
        self._amount_cents = 0
        self._expires_at: datetime | None = None
        self._payment: c.PaymentLink | None = None
        self._paid: c.PaymentNotice | None = None
        self._cancel_requested = False
        self._delivered_key_ids: list[int] = []
        self._coupon_issued = False
        self._stages: list[str] = []
        self._support_lock = asyncio.Lock()

    # ---- the saga -------------------------------------------------------------------------

    @workflow.run
    async def run(self, order: c.OrderInput) -> str:
        self._input = order
        opened = await self._open(order)
        if opened.outcome != c.OPENED:
            self._opened = c.OpenOrderResult(outcome=opened.outcome, order_id=order.order_id, detail=opened.detail)
            return opened.outcome
        self._amount_cents = opened.amount_cents
        await self._set_status(c.AWAITING_PAYMENT, c.SA_AMOUNT_CENTS.value_set(self._amount_cents))  # after any coupon

        if self._amount_cents > 0:
            try:
                self._payment = await self._create_payment(order)
            except ActivityError:
                await self._release(c.CANCELLED)
                self._opened = c.OpenOrderResult(
                    outcome=c.GATEWAY_UNAVAILABLE, order_id=order.order_id,
                    detail="the payment gateway did not answer; nothing was charged")
                return c.GATEWAY_UNAVAILABLE
        else:
            self._on_paid(c.PaymentNotice("free", 0, order.currency, workflow.now(), "free"))
        self._opened = self._open_result()

        if await self._await_payment():
            await self._deliver()
        else:
            await self._close_unpaid()
            if await self._watch_for_late_payment():
                await self._deliver_late_payment()
        await self._serve_support()
        return self._status

    async def _open(self, order: c.OrderInput) -> s.OpenedOrder:
        now = workflow.now()
        self._expires_at = now + timedelta(seconds=order.timing.payment_window_seconds)
        return await workflow.execute_local_activity(
            s.OPEN_ORDER,
            s.OpenOrderStep(
                order_id=order.order_id, product_id=order.product_id, sku=order.sku,
                quantity=order.quantity, unit_price_cents=order.unit_price_cents,
                currency=order.currency, email=order.email, buyer_hash=order.buyer_hash,
                gateway=order.gateway, coupon_code=order.coupon_code, at=now,
                expires_at=self._expires_at),
            result_type=s.OpenedOrder, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)

    async def _create_payment(self, order: c.OrderInput) -> c.PaymentLink:
        assert self._expires_at is not None
        return await workflow.execute_activity(
            s.CREATE_PAYMENT,
            s.CreatePaymentStep(order_id=order.order_id, gateway=order.gateway, amount_cents=self._amount_cents,
                                currency=order.currency, subject=order.product_name,
                                expires_at=self._expires_at, at=workflow.now()),
            result_type=c.PaymentLink, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=CREATE_PAYMENT_RETRY)

    async def _await_payment(self) -> bool:
        """Wait for the callback; after the grace time poll with backoff until the window ends."""
        order = self._order
        assert self._expires_at is not None
        settled = lambda: self._paid is not None or self._cancel_requested  # noqa: E731
        grace_end = workflow.now() + timedelta(seconds=order.timing.callback_grace_seconds)
        await self._wait_until(settled, min(grace_end, self._expires_at))
        interval = order.timing.poll_interval_seconds
        while not settled() and workflow.now() < self._expires_at:
            await self._poll_gateway()
            await self._wait_until(settled, min(workflow.now() + timedelta(seconds=interval), self._expires_at))
            interval = min(interval * 2, order.timing.poll_max_interval_seconds)
        if self._paid is None and not self._cancel_requested:
            await self._poll_gateway()  # the last look before the window closes
        return self._paid is not None

    async def _poll_gateway(self) -> None:
        answer = await self._query_gateway()
        if answer is not None and answer[0].status == "paid":
            self._on_paid(self._notice_from(answer[0], "poll" if answer[1] == "primary" else "poll_backup"))

    async def _close_unpaid(self) -> None:
        """Close the gateway payment, then release the stock. A close that lost the race is a payment."""
        status = c.CANCELLED if self._cancel_requested else c.EXPIRED
        try:
            snapshot = await workflow.execute_activity(
                s.CLOSE_PAYMENT, self._gateway_step(), result_type=s.PaymentSnapshot,
                start_to_close_timeout=QUERY_TIMEOUT, retry_policy=CLOSE_RETRY)
        except ActivityError:
            # The gateway may still take the buyer's money: the late-payment watch covers that.
            await self._record(s.StageStep(self._order_id, "close_failed", workflow.now()))
        else:
            if snapshot.status == "paid":
                self._on_paid(self._notice_from(snapshot, "close"))
                if self._paid is not None:  # keep the reservation: this payment gets its keys
                    return
        await self._release(status)

    async def _watch_for_late_payment(self) -> bool:
        if self._paid is not None:
            return True
        watch_end = workflow.now() + timedelta(seconds=self._order.timing.late_payment_watch_seconds)
        await self._wait_until(lambda: self._paid is not None, watch_end)
        return self._paid is not None

    async def _deliver_late_payment(self) -> None:
        """Paid after the window: deliver if stock can be reserved again, otherwise refund."""
        if self._status in (c.EXPIRED, c.CANCELLED):
            await self._record(s.StageStep(self._order_id, "paid_after_expiry", workflow.now()))
            reserved = await workflow.execute_activity(
                s.RESERVE_AGAIN, s.DeliverStep(self._order_id, workflow.now()), result_type=bool,
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
            if not reserved:
                await self._refund("paid after expiry and out of stock", actor="system")
                return
        await self._deliver()

    async def _deliver(self) -> None:
        """Commit the reserved keys as sold, watching the SLA counted from the gateway's paid time."""
        assert self._paid is not None
        await workflow.execute_local_activity(
            s.MARK_PAID, s.PaidStep(self._order_id, self._paid.paid_at, self._paid.source, workflow.now()),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        await self._set_status(c.PAID)
        sla_deadline = self._paid.paid_at + timedelta(seconds=self._order.delivery_sla_seconds)
        delivery = asyncio.create_task(self._commit_keys())
        remaining = (sla_deadline - workflow.now()).total_seconds()
        if remaining > 0:
            try:
                await workflow.wait_condition(delivery.done, timeout=remaining, timeout_summary="delivery-sla")
            except asyncio.TimeoutError:
                await self._compensate_late_delivery("sla_timer")
        await delivery
        if workflow.now() > sla_deadline:
            await self._compensate_late_delivery("delivered_late")
        await self._set_status(c.DELIVERED)
        await self._send_delivery_email()

    async def _commit_keys(self) -> None:
        delivered = await workflow.execute_activity(
            s.DELIVER_KEYS, s.DeliverStep(self._order_id, workflow.now()), result_type=s.Delivered,
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        self._delivered_key_ids = delivered.key_ids

    async def _compensate_late_delivery(self, reason: str) -> None:
        if self._coupon_issued:
            return
        self._coupon_issued = True  # a coupon is issued exactly when delivery is late
        workflow.upsert_search_attributes([c.SA_DELIVERY_LATE.value_set(True)])
        await workflow.execute_activity(
            s.ISSUE_COUPON, s.CouponStep(self._order_id, reason, workflow.now()), result_type=s.IssuedCoupon,
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)

    async def _send_delivery_email(self) -> None:
        await workflow.execute_activity(
            s.SEND_DELIVERY_EMAIL, s.DeliverStep(self._order_id, workflow.now()),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5),
                                     maximum_attempts=10))

    async def _serve_support(self) -> None:
        """Stay open for support Updates until the support window ends; they answer, or refuse why."""
        await workflow.sleep(timedelta(seconds=self._order.timing.support_window_seconds))
        await workflow.wait_condition(workflow.all_handlers_finished)

    # ---- messages -------------------------------------------------------------------------

    @workflow.update(name=c.OPEN_UPDATE)
    async def open_order(self) -> c.OpenOrderResult:
        """The answer POST /orders waits for: reserved with a payment link, or why not."""
        await workflow.wait_condition(lambda: self._opened is not None)
        assert self._opened is not None
        return self._opened

    @workflow.signal(name=c.PAYMENT_SIGNAL)
    def payment_notified(self, notice: c.PaymentNotice) -> None:
        self._on_paid(notice)

    @workflow.update(name=c.CHECK_PAYMENT_UPDATE)
    async def check_payment(self) -> c.CheckPaymentResult:
        """The buyer's "I have paid" button: ask the gateway now instead of at the next poll."""
        if self._paid is None and self._payment is not None:
            answer = await self._query_gateway()
            if answer is not None and answer[0].status == "paid":
                self._on_paid(self._notice_from(answer[0], "check"))
        return c.CheckPaymentResult(status=self._status, paid=self._paid is not None)

    @check_payment.validator
    def _validate_check_payment(self) -> None:
        if self._payment is None:
            raise ApplicationError("this order has no payment to check", type="NoPayment")

    @workflow.update(name=c.CANCEL_UPDATE)
    async def cancel(self, request: c.SupportRequest) -> c.SupportResult:
        self._cancel_requested = True
        await workflow.wait_condition(lambda: self._status != c.AWAITING_PAYMENT)
        if self._status != c.CANCELLED:
            raise ApplicationError(f"the payment arrived first; the order is {self._status}", type="NotCancellable")
        return c.SupportResult(self._order_id, self._status, "order cancelled and its stock released")

    @cancel.validator
    def _validate_cancel(self, request: c.SupportRequest) -> None:
        if self._status != c.AWAITING_PAYMENT or self._paid is not None:
            raise ApplicationError(f"only unpaid orders can be cancelled; this one is {self._status}",
                                   type="NotCancellable")

    @workflow.update(name=c.REFUND_UPDATE)
    async def refund(self, request: c.SupportRequest) -> c.SupportResult:
        async with self._support_lock:
            if self._status == c.REFUNDED:
                raise ApplicationError("the order is already refunded", type="AlreadyRefunded")
            await self._refund(request.reason or "support refund", actor=request.actor)
        return c.SupportResult(self._order_id, self._status, "refunded at the gateway; keys marked refunded")

    @refund.validator
    def _validate_refund(self, request: c.SupportRequest) -> None:
        if self._status == c.REFUNDED:
            raise ApplicationError("the order is already refunded", type="AlreadyRefunded")
        if self._status != c.DELIVERED:
            raise ApplicationError(f"only delivered orders can be refunded; this one is {self._status or 'new'}",
                                   type="NotRefundable")
        if self._payment is None:
            raise ApplicationError("this order was free; there is no payment to refund", type="NotRefundable")

    @workflow.update(name=c.RESEND_UPDATE)
    async def resend(self, request: c.SupportRequest) -> c.SupportResult:
        async with self._support_lock:
            await self._record(s.StageStep(self._order_id, "resent", workflow.now(),
                                           detail={"actor": request.actor}))
            await self._send_delivery_email()
        return c.SupportResult(self._order_id, self._status, "delivery email sent again")

    @resend.validator
    def _validate_resend(self, request: c.SupportRequest) -> None:
        if self._status != c.DELIVERED:
            raise ApplicationError(f"only delivered orders can be resent; this one is {self._status or 'new'}",
                                   type="NotDelivered")

    @workflow.query(name=c.STATUS_QUERY)
    def state(self) -> c.OrderState:
        return c.OrderState(
            order_id=self._input.order_id if self._input else "", status=self._status,
            paid=self._paid is not None, delivered_key_count=len(self._delivered_key_ids),
            coupon_issued=self._coupon_issued, delivery_late=self._coupon_issued, stages=list(self._stages))

    # ---- helpers ---------------------------------------------------------------------------

    @property
    def _order(self) -> c.OrderInput:
        assert self._input is not None
        return self._input

    @property
    def _order_id(self) -> str:
        return self._order.order_id

    def _on_paid(self, notice: c.PaymentNotice) -> None:
        """The one transition notify, poll, check and close share: the first proof of payment wins."""
        if self._paid is not None:
            return
        if notice.amount_cents != self._amount_cents or notice.currency != self._order.currency:
            workflow.logger.warning("payment with the wrong amount or currency ignored")
            return
        self._paid = notice

    def _notice_from(self, snapshot: s.PaymentSnapshot, source: str) -> c.PaymentNotice:
        assert self._payment is not None
        return c.PaymentNotice(self._payment.payment_id, snapshot.amount_cents, snapshot.currency,
                               snapshot.paid_at or workflow.now(), source)

    def _gateway_step(self, channel: str = "primary") -> s.GatewayStep:
        assert self._payment is not None
        return s.GatewayStep(self._order_id, self._order.gateway, self._payment.payment_id, channel)

    async def _query_gateway(self) -> tuple[s.PaymentSnapshot, str] | None:
        """Query the primary channel; when it errors, the backup one. None when both fail."""
        for channel in ("primary", "backup"):
            try:
                snapshot = await workflow.execute_activity(
                    s.QUERY_PAYMENT, self._gateway_step(channel), result_type=s.PaymentSnapshot,
                    start_to_close_timeout=QUERY_TIMEOUT, retry_policy=QUERY_RETRY)
            except ActivityError:
                continue
            return snapshot, channel
        return None

    def _open_result(self) -> c.OpenOrderResult:
        return c.OpenOrderResult(
            outcome=c.OPENED, order_id=self._order_id, status=self._status, amount_cents=self._amount_cents,
            currency=self._order.currency, expires_at=self._expires_at, payment=self._payment,
            sku=self._order.sku, quantity=self._order.quantity)

    async def _release(self, status: str) -> None:
        await workflow.execute_activity(
            s.RELEASE_STOCK, s.ReleaseStep(self._order_id, status, workflow.now()),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        await self._set_status(status)

    async def _refund(self, reason: str, actor: str) -> None:
        assert self._payment is not None
        await workflow.execute_activity(
            s.REFUND_PAYMENT,
            s.RefundStep(self._order_id, self._order.gateway, self._payment.payment_id, self._amount_cents,
                         refund_id=f"refund-{self._order_id}"),
            result_type=s.PaymentSnapshot, start_to_close_timeout=QUERY_TIMEOUT, retry_policy=GATEWAY_RETRY)
        await workflow.execute_activity(
            s.REFUND_KEYS, s.RefundKeysStep(self._order_id, reason, actor, workflow.now()),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        await self._set_status(c.REFUNDED)

    async def _record(self, step: s.StageStep) -> None:
        self._stages.append(step.stage)
        await workflow.execute_local_activity(
            s.RECORD_STAGE, step, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)

    async def _set_status(self, status: str, *also: SearchAttributeUpdate) -> None:
        self._status = status
        self._stages.append(status)
        workflow.upsert_search_attributes([c.SA_ORDER_STATUS.value_set(status), *also])
        workflow.set_current_details(f"**{status}** — stages so far: {', '.join(self._stages)}")  # for the UI

    @staticmethod
    async def _wait_until(condition, until: datetime) -> None:
        """Wait for the condition or the deadline, whichever comes first (a durable timer)."""
        seconds = (until - workflow.now()).total_seconds()
        if seconds <= 0 or condition():
            return
        try:
            await workflow.wait_condition(condition, timeout=seconds)
        except asyncio.TimeoutError:
            pass
