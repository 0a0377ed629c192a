"""The state and the small steps every part of the order workflow shares: releasing, refunding,
recording a stage, setting the status, waiting on a durable timer.

OrderWorkflow (workflows/order.py) sets every field in its `@workflow.init`; its mixins
(workflows/proofs.py, workflows/support.py) read and write them through this base.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError

from miaofa import contract as c
from miaofa import steps as s
from workflows import patches
from workflows.policies import DB_STEP, GATEWAY_RETRY, QUERY_TIMEOUT, failure_type


class SagaState:
    _input: c.OrderInput | None
    _status: str
    _amount_cents: int
    _expires_at: datetime | None
    _payment: c.PaymentLink | None
    _paid: s.PaymentVerdict | None
    _proofs: list[s.AcceptPaymentStep]
    _seen_notifies: set[int]
    _refund_refused: bool
    _delivered_key_ids: list[int]
    _keys_committed: bool
    _stages: list[str]
    _look_requested: bool
    _strays: set[str]
    _cancel_requested: bool
    _cancel_actor: str
    _support_lock: asyncio.Lock
    # The review's outcome: "" while undecided, then APPROVE_UPDATE, REJECT_UPDATE or TIMED_OUT.
    _review_outcome: str
    _review_request: c.SupportRequest | None

    @property
    def _order(self) -> c.OrderInput:
        assert self._input is not None
        return self._input

    @property
    def _order_id(self) -> str:
        return self._order.order_id

    async def _release(self, status: str, actor: str | None = None, reason: str = "") -> None:
        actor = actor or (self._cancel_actor if status == c.CANCELLED else "system")
        await workflow.execute_local_activity(
            s.RELEASE_STOCK,
            s.ReleaseStep(self._order_id, status, workflow.now(), actor=actor, reason=reason),
            **DB_STEP,
        )
        self._set_status(status)

    async def _refund(self, reason: str, actor: str) -> None:
        if self._payment is not None:  # a free order took no money: only its keys go back
            await workflow.execute_activity(
                s.REFUND_PAYMENT,
                s.RefundStep(
                    self._order_id,
                    self._order.gateway,
                    self._payment.payment_id,
                    self._amount_cents,
                    refund_id=f"refund-{self._order_id}",
                ),
                result_type=s.PaymentSnapshot,
                start_to_close_timeout=QUERY_TIMEOUT,
                retry_policy=GATEWAY_RETRY,
            )
        await workflow.execute_local_activity(
            s.REFUND_KEYS, s.RefundKeysStep(self._order_id, reason, actor, workflow.now()), **DB_STEP
        )
        self._set_status(c.REFUNDED)

    async def _refund_unasked(self, reason: str) -> None:
        """A refund the system owes (a late payment out of stock, a failed delivery). A gateway that
        refuses it leaves the money recorded for a person with its reason, never a failed run."""
        try:
            await self._refund(reason, actor="system")
        except ActivityError as failure:
            if not workflow.patched(patches.SYSTEM_REFUND_REFUSED):
                raise  # released runs failed here; their histories replay as they were
            self._refund_refused = True
            if self._status in (c.EXPIRED, c.CANCELLED):  # a late payment: paid and not delivered, as the row says
                self._set_status(c.PAID)
            refusal = failure_type(failure) or "refused"
            workflow.logger.error("refund refused for order %s: %s", self._order_id, refusal)
            workflow.metric_meter().create_counter(
                "miaofa_refund_refusals", "Refunds the system owed that a gateway refused (a person must act)"
            ).add(1)
            await self._record(
                s.StageStep(
                    self._order_id,
                    c.REFUND_REFUSED_STAGE,
                    workflow.now(),
                    detail={"reason": reason[:200], "refusal": refusal[:80]},
                    audit_actor="system",
                )
            )

    async def _record(self, step: s.StageStep) -> None:
        if step.stage != step.status:  # a status's own timeline row: _set_status already listed it
            self._stages.append(step.stage)
        await workflow.execute_local_activity(s.RECORD_STAGE, step, **DB_STEP)

    def _set_status(self, status: str, *also: SearchAttributeUpdate) -> None:
        self._status = status
        self._stages.append(status)
        workflow.upsert_search_attributes([c.SA_ORDER_STATUS.value_set(status), *also])
        workflow.set_current_details(f"**{status}** — stages so far: {', '.join(self._stages)}")  # for the UI

    @staticmethod
    async def _wait_until(condition: Callable[[], bool], until: datetime) -> None:
        """Wait for the condition or the deadline, whichever comes first (a durable timer)."""
        seconds = (until - workflow.now()).total_seconds()
        if seconds <= 0 or condition():
            return
        try:
            await workflow.wait_condition(condition, timeout=seconds)
        except TimeoutError:
            pass

    async def _send_delivery_email(self) -> None:
        raise NotImplementedError
