"""ReconcileWorkflow as released before RECONCILE_PAYOUT_BILLS (commit f54310e), kept as it ran: the
upgrade test records a run on it and replays that history on today's workflow."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from miaofa import contract as c
from miaofa import steps as s
from workflows import patches


@workflow.defn(name=c.RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self, request: c.ReconcileInput) -> c.ReconcileReport:
        now = workflow.now()
        window = s.ReconcileStep(
            start=now - timedelta(seconds=request.lookback_seconds),
            end=now - timedelta(seconds=request.grace_seconds),
            at=now,
            gateway=request.gateway,
        )
        report = await workflow.execute_activity(
            s.RECONCILE,
            window,
            result_type=c.ReconcileReport,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5), maximum_attempts=5, non_retryable_error_types=[s.DATA_ERROR]
            ),
        )
        if workflow.patched(patches.RECONCILE_STARTS_WAITING_PAYOUTS):
            report.payouts_started = await workflow.execute_activity(
                s.START_WAITING_PAYOUTS,
                request.payout_start_grace_seconds,
                result_type=int,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=5),
            )
        if workflow.patched(patches.RECONCILE_CHECKS_PAYOUTS):
            found = await workflow.execute_activity(
                s.RECONCILE_PAYOUTS,
                window,
                result_type=dict[str, int],
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=5),
            )
            for kind, count in found.items():
                report.findings[kind] = report.findings.get(kind, 0) + count
        return report
