"""Temporal Schedules the shop relies on, created or updated idempotently."""

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from miaofa import contract as c
from miaofa.settings import Settings


def reconcile_schedule(settings: Settings, task_queue: str = c.TASK_QUEUE) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            c.RECONCILE_WORKFLOW,
            c.ReconcileInput(
                lookback_seconds=settings.reconcile_lookback_seconds, grace_seconds=settings.reconcile_grace_seconds
            ),
            id="reconcile",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.reconcile_interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def apply_reconcile_schedule(
    client: Client, settings: Settings, task_queue: str = c.TASK_QUEUE, schedule_id: str = c.RECONCILE_SCHEDULE_ID
) -> str:
    """Create the reconcile schedule, or bring an existing one in line with the settings."""
    return await _apply(client, schedule_id, reconcile_schedule(settings, task_queue))


def hold_release_schedule(settings: Settings, task_queue: str = c.TASK_QUEUE) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(c.HOLD_RELEASE_WORKFLOW, id="hold-release", task_queue=task_queue),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.hold_release_interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def apply_hold_release_schedule(
    client: Client, settings: Settings, task_queue: str = c.TASK_QUEUE, schedule_id: str = c.HOLD_RELEASE_SCHEDULE_ID
) -> str:
    """Create the hold-release schedule, or bring an existing one in line with the settings."""
    return await _apply(client, schedule_id, hold_release_schedule(settings, task_queue))


async def _apply(client: Client, schedule_id: str, schedule: Schedule) -> str:
    try:
        await client.create_schedule(schedule_id, schedule)
        return "created"
    except ScheduleAlreadyRunningError:

        async def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
        return "updated"
