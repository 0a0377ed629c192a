"""HoldReleaseWorkflow: run by a Temporal Schedule, it moves the sales whose hold is over from a
merchant's `pending` to its `available`, a batch at a time (miaofa.ledger.order_money.release_due).
Each release posts under its own key, so a retried batch or an overlapping run posts nothing twice."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from miaofa import contract as c
from miaofa import steps as s

BATCH = 500
MAX_BATCHES = 200  # 100,000 holds a run; the next run takes the rest


@workflow.defn(name=c.HOLD_RELEASE_WORKFLOW)
class HoldReleaseWorkflow:
    @workflow.run
    async def run(self) -> int:
        released = 0
        for _ in range(MAX_BATCHES):
            done = await workflow.execute_activity(
                s.RELEASE_HOLDS,
                BATCH,
                result_type=int,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=10),
            )
            released += done
            if done < BATCH:
                break
        return released
