"""Payout reconciliation: the simulator rail's record of transfers against the withdrawals, run by
ReconcileWorkflow. A clean run finds nothing; a transfer we never asked for, a paid transfer whose
money our books gave back, and a withdrawal we call paid that the rail never paid are each found
once and kept for a person. A run recorded on the released workflow replays on today's."""

import uuid

from sqlalchemy import select, update
from temporalio.worker import Replayer

from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.models import ReconcileFinding
from miaofa.db.payout_tables import Withdrawal
from tests.conftest import replay_data_converter
from tests.helpers import payouts as p
from tests.helpers.released.reconcile_v1 import ReconcileWorkflow as Released
from tests.helpers.stack import Stack
from worker import build_worker
from workflows.reconcile import ReconcileWorkflow


async def _reconcile(stack: Stack) -> c.ReconcileReport:
    return await stack.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=600, grace_seconds=0),
        id=f"reconcile-payouts-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=c.ReconcileReport,
    )


async def _findings(stack: Stack, number: str) -> list[tuple[str, str, str, int]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(select(ReconcileFinding).where(ReconcileFinding.payment_id == number))
        return [(row.gateway, row.kind, row.action, row.times_seen) for row in rows]


async def _paid_withdrawal(stack: Stack) -> tuple[p.Shop, str]:
    shop = await p.funded_shop(stack, 5000)
    await stack.control(payout="normal")
    wid = await p.withdrawn(stack, shop, 1000, await p.destination(stack, shop))
    await p.wait_status(stack, shop, wid, c.WITHDRAWAL_PAID)
    return shop, wid


async def test_a_clean_payout_is_not_a_finding(payout_stack: Stack) -> None:
    _, wid = await _paid_withdrawal(payout_stack)
    await _reconcile(payout_stack)
    assert await _findings(payout_stack, wid) == []


async def test_a_transfer_nobody_asked_for_is_found_once(payout_stack: Stack) -> None:
    number = "wd_" + uuid.uuid4().hex[:20]
    await payout_stack.control(payout="normal")
    sent = await payout_stack.sim.post(
        "/api/payouts",
        json={"transfer_no": number, "amount_cents": 700, "currency": "CNY", "account": "6222", "name": "X"},
        headers={"Authorization": f"Bearer {payout_stack.settings.sim_secret}"},
    )
    assert sent.status_code == 201, sent.text
    report = await _reconcile(payout_stack)
    assert report.findings.get("payout_unknown_transfer", 0) >= 1
    await _reconcile(payout_stack)  # seen again: counted, not duplicated
    assert await _findings(payout_stack, number) == [("payout:simulator", "payout_unknown_transfer", "flag", 2)]


async def test_paid_at_the_rail_but_released_here_and_paid_here_but_not_at_the_rail_are_found(
    payout_stack: Stack,
) -> None:
    _, wid = await _paid_withdrawal(payout_stack)
    async with payout_stack.sessionmaker.begin() as session:  # our books say the money went back
        await session.execute(update(Withdrawal).where(Withdrawal.id == wid).values(status=c.WITHDRAWAL_FAILED))
    try:
        await _reconcile(payout_stack)
    finally:
        async with payout_stack.sessionmaker.begin() as session:
            await session.execute(update(Withdrawal).where(Withdrawal.id == wid).values(status=c.WITHDRAWAL_PAID))
    assert await _findings(payout_stack, wid) == [("payout:simulator", "payout_paid_but_released", "flag", 1)]

    shop = await p.funded_shop(payout_stack, 5000)
    await payout_stack.control(payout="fail")
    failed = await p.withdrawn(payout_stack, shop, 1000, await p.destination(payout_stack, shop))
    await p.wait_status(payout_stack, shop, failed, c.WITHDRAWAL_FAILED)
    async with payout_stack.sessionmaker.begin() as session:  # our books say paid; the rail refused it
        await session.execute(update(Withdrawal).where(Withdrawal.id == failed).values(status=c.WITHDRAWAL_PAID))
    try:
        report = await _reconcile(payout_stack)
    finally:
        async with payout_stack.sessionmaker.begin() as session:
            await session.execute(update(Withdrawal).where(Withdrawal.id == failed).values(status=c.WITHDRAWAL_FAILED))
        await payout_stack.control(payout="normal")
    assert report.findings.get("payout_paid_not_at_rail", 0) >= 1
    assert await _findings(payout_stack, failed) == [("payout:simulator", "payout_paid_not_at_rail", "flag", 1)]


async def test_a_run_of_the_released_reconcile_workflow_replays_on_todays(payout_stack: Stack) -> None:
    """A run recorded on the released workflow (payouts through RECONCILE_PAYOUTS) replays on today's:
    RECONCILE_PAYOUT_BILLS keeps it on its old branch; a new run takes the new activity."""
    queue = f"tq-released-{uuid.uuid4().hex[:8]}"
    client = payout_stack.env.client
    async with build_worker(client, activities=payout_stack.activities, task_queue=queue, workflows=[Released]):
        handle = await client.start_workflow(
            c.RECONCILE_WORKFLOW,
            c.ReconcileInput(lookback_seconds=600, grace_seconds=0),
            id=f"reconcile-released-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=c.ReconcileReport,
        )
        await handle.result()
    replayer = Replayer(workflows=[ReconcileWorkflow], data_converter=replay_data_converter())
    released = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert released.replay_failure is None, released.replay_failure

    today = await client.start_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=600, grace_seconds=0),
        id=f"reconcile-today-{uuid.uuid4().hex[:8]}",
        task_queue=payout_stack.task_queue,
        result_type=c.ReconcileReport,
    )
    await today.result()
    ran = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        async for event in today.fetch_history_events()
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    assert s.RECONCILE_PAYOUT_BILLS in ran and s.RECONCILE_PAYOUTS not in ran
