"""Starting a withdrawal's PayoutWorkflow: one per withdrawal id, however often it is asked for
(by the API after its commit, by a GET or a replayed request, by reconciliation's sweep)."""

import logging

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from miaofa import contract as c

log = logging.getLogger("miaofa.payouts")


async def start_payout(client: Client, task_queue: str, payout: c.PayoutInput) -> bool:
    """True when the workflow runs (or ran); False when Temporal did not answer (try again later)."""
    try:
        await client.start_workflow(
            c.PAYOUT_WORKFLOW,
            payout,
            id=c.payout_workflow_id(payout.withdrawal_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:  # it ran and closed: nothing to start
            return True
        log.warning("payout workflow of %s not started: %s", payout.withdrawal_id, exc.status)
        return False
    return True
