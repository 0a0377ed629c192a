"""Proofs of payment in an order: queued from notifies and polls, judged one by one, strays handed over.

A mixin of OrderWorkflow (workflows/order.py), split out to keep the saga readable: the payment
signal and the buyer's "I have paid" Update land here, and use the workflow's state (`_proofs`,
`_paid`, `_payment`, `_strays` …) and steps (`_record`).
"""

from temporalio import workflow
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

from miaofa import contract as c
from miaofa import steps as s
from workflows import patches
from workflows.policies import (
    DB_STEP,
    DB_TIMEOUT,
    MAX_QUEUED_PROOFS,
    ONE_ATTEMPT,
    QUERY_RETRY,
    QUERY_TIMEOUT,
    STEP_FAILED,
)
from workflows.state import SagaState
from workflows.support import refuse


class PaymentProofs(SagaState):
    @workflow.signal(name=c.PAYMENT_SIGNAL)
    def payment_notified(self, notified: c.PaymentNotified | None = None) -> None:
        """A hint, never proof: a notify id is confirmed against its verified log row; without one,
        the workflow asks the gateway."""
        if notified is None or notified.notify_id is None:
            self._look_requested = True
        elif notified.notify_id not in self._seen_notifies and len(self._proofs) < MAX_QUEUED_PROOFS:
            self._seen_notifies.add(notified.notify_id)
            self._proofs.append(
                s.AcceptPaymentStep(self._order_id, "notify", workflow.now(), notify_id=notified.notify_id)
            )

    @workflow.update(name=c.CHECK_PAYMENT_UPDATE)
    async def check_payment(self) -> c.CheckPaymentResult:
        """The buyer's "I have paid" button: ask the gateway now instead of at the next poll."""
        found = False
        if self._paid is None and self._payment is not None:
            answer = await self._query_gateway()
            if answer is not None and answer[0].status == "paid":
                self._queue_snapshot(answer[0], "check")
                found = True
        return c.CheckPaymentResult(status=self._status, paid=found or self._paid is not None)

    @check_payment.validator
    def _validate_check_payment(self) -> None:
        if self._payment is None:
            raise refuse("this order has no payment to check", c.REFUSED_NO_PAYMENT)

    async def _settle_proofs(self, deliver: bool = False) -> None:
        """Judge each queued proof (miaofa.payments.proof.judge, in one local step): the order's own
        payment makes it paid; money it cannot take goes to a stray-payment review and refund.
        deliver: the order awaits payment, so its payment's keys go out in the same step (_deliver
        then finds them committed)."""
        while self._proofs:
            proof = self._proofs.pop(0)
            verdict = None
            if deliver and self._paid is None and workflow.patched(patches.ACCEPT_DELIVERS):
                verdict = await self._accept_and_deliver(proof)
            if verdict is None:
                verdict = await workflow.execute_local_activity(
                    s.ACCEPT_PAYMENT, proof, result_type=s.PaymentVerdict, **DB_STEP
                )
            if verdict.verdict in (s.ACCEPTED, s.DUPLICATE):  # a duplicate after a lost answer is still ours
                if self._paid is None:
                    self._paid = verdict
            elif verdict.verdict == s.STRAY:
                await self._hand_over_stray(verdict, proof.source)
            elif verdict.verdict == s.UNCONFIRMED:
                workflow.logger.warning("order %s: payment signal without a verified notify ignored", self._order_id)

    async def _accept_and_deliver(self, proof: s.AcceptPaymentStep) -> s.PaymentVerdict | None:
        """None when the step failed (no keys, its coupon elsewhere, the database away): nothing was
        written, or it was and a repeat finds it so; the proof is judged alone and _deliver does the rest,
        refunding what cannot be delivered (_delivery_failed) and watching the SLA while it is retried."""
        try:
            done = await workflow.execute_local_activity(
                s.ACCEPT_AND_DELIVER,
                s.AcceptAndDeliverStep(proof, workflow.now()),
                result_type=s.AcceptedAndDelivered,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=ONE_ATTEMPT,  # any failure: the two steps apart, the delivery under its SLA watch
            )
        except STEP_FAILED:
            return None
        if done.key_ids:
            self._delivered_key_ids = done.key_ids
            self._keys_committed = True
        return done.verdict

    async def _hand_over_stray(self, verdict: s.PaymentVerdict, source: str) -> None:
        if verdict.payment_id in self._strays:
            return
        self._strays.add(verdict.payment_id)
        stray = c.StrayPayment(
            gateway=self._order.gateway,
            payment_id=verdict.payment_id,
            order_id=self._order_id,
            amount_cents=verdict.amount_cents,
            currency=verdict.currency,
            reason=verdict.reason,
            found_by=source,
        )
        try:
            await workflow.start_child_workflow(
                c.STRAY_PAYMENT_WORKFLOW,
                stray,
                id=c.stray_workflow_id(stray.gateway, stray.payment_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"stray payment of order {self._order_id}: {stray.reason}",
            )
        except WorkflowAlreadyStartedError:
            pass  # a notify or a reconciliation already handed it over
        await self._record(
            s.StageStep(
                self._order_id,
                "stray_payment",
                workflow.now(),
                detail={"payment_id": stray.payment_id, "reason": stray.reason},
            )
        )

    async def _poll_gateway(self, source: str) -> None:
        answer = await self._query_gateway()
        if answer is not None and answer[0].status == "paid":
            self._queue_snapshot(answer[0], source if answer[1] == "primary" else f"{source}_backup")

    def _queue_snapshot(self, snapshot: s.PaymentSnapshot, source: str) -> None:
        assert self._payment is not None
        self._proofs.append(
            s.AcceptPaymentStep(
                self._order_id,
                source,
                workflow.now(),
                payment_id=snapshot.payment_id or self._payment.payment_id,
                amount_cents=snapshot.amount_cents,
                currency=snapshot.currency,
                paid_at=snapshot.paid_at or workflow.now(),
            )
        )

    def _has_news(self) -> bool:
        return bool(self._proofs) or self._look_requested or self._cancel_requested

    def _gateway_step(self, channel: str = "primary") -> s.GatewayStep:
        assert self._payment is not None
        return s.GatewayStep(self._order_id, self._order.gateway, self._payment.payment_id, channel)

    async def _query_gateway(self) -> tuple[s.PaymentSnapshot, str] | None:
        """Query the primary channel; when it errors, the backup one. None when both fail."""
        for channel in ("primary", "backup"):
            try:
                snapshot = await workflow.execute_activity(
                    s.QUERY_PAYMENT,
                    self._gateway_step(channel),
                    result_type=s.PaymentSnapshot,
                    start_to_close_timeout=QUERY_TIMEOUT,
                    retry_policy=QUERY_RETRY,
                )
            except ActivityError:
                continue
            return snapshot, channel
        return None
