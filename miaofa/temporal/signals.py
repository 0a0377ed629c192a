"""What the core tells workflows: a payment to look at (its order), a payment to review (a stray).

The API's notify route, `miaofa notify replay`, reconciliation and a stray's review all reach the
orders through here, by the names in miaofa.contract.
"""

from dataclasses import dataclass

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from miaofa.contract import (
    PAYMENT_SIGNAL,
    STRAY_PAYMENT_WORKFLOW,
    PaymentNotified,
    StrayPayment,
    order_workflow_id,
    stray_workflow_id,
)
from miaofa.errors import TemporalUnavailable


async def signal_payment(
    client: Client, order_id: str, *, notify_id: int | None = None, source: str = "notify"
) -> bool:
    """Ask an open order to look at its payment: the verified notify logged as `notify_id`, or (without
    one) its gateway, now. False when its workflow has closed or never was."""
    try:
        await client.get_workflow_handle(order_workflow_id(order_id)).signal(
            PAYMENT_SIGNAL, PaymentNotified(notify_id=notify_id, source=source)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def start_stray_review(client: Client, task_queue: str, stray: StrayPayment) -> None:
    """Hand a payment no open order took to its review (and refund); one review per payment at a time."""
    await client.start_workflow(
        STRAY_PAYMENT_WORKFLOW,
        stray,
        id=stray_workflow_id(stray.gateway, stray.payment_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"stray payment ({stray.reason}), found by {stray.found_by}",
    )


@dataclass(frozen=True)
class Signaller:
    """The notify flow's way to the orders (miaofa/payments/notify.py): Temporal not answering is
    TemporalUnavailable (a 503 for the gateway, which sends the notify again)."""

    client: Client
    task_queue: str

    async def payment(self, order_id: str, notify_id: int) -> bool:
        try:
            return await signal_payment(self.client, order_id, notify_id=notify_id)
        except RPCError as exc:
            raise TemporalUnavailable("the order service is not answering") from exc

    async def stray(self, stray: StrayPayment) -> None:
        try:
            await start_stray_review(self.client, self.task_queue, stray)
        except RPCError as exc:
            raise TemporalUnavailable("the order service is not answering") from exc
