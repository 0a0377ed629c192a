"""Reconciliation (对账): gateway statements against orders, over the simulator's statement API."""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from temporalio.client import ScheduleIntervalSpec

from miaofa import contract as c
from miaofa.db.models import ReconcileFinding
from miaofa.ledger.posting import PLATFORM, credit, debit, post
from miaofa.payments import reconcile
from miaofa.temporal.schedules import apply_reconcile_schedule
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack

SIM_AUTH = {"Authorization": "Bearer sim-test-secret-0123456789"}


@pytest.fixture(scope="module")
async def closing_stack(dev_env, sessionmaker, sim_url, database_url, smtp):
    """Orders that expire and whose workflows close within seconds; the gateway cannot close them."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=2,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=1,
            support_window_seconds=1,
        ),
    ) as stack:
        yield stack


async def _closed_order(stack: Stack) -> dict:
    sku = await stack.product(1)
    order = await stack.ordered(sku)
    await stack.control(close_fail=True)
    await stack.wait_status(order, "expired")
    await stack.handle(order).result()
    await stack.control(notify="drop")  # nobody tells the shop about what comes next
    return order


async def _reconcile(stack: Stack) -> c.ReconcileReport:
    return await stack.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=600, grace_seconds=0),
        id=f"reconcile-test-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=c.ReconcileReport,
    )


async def _settled(stack: Stack, payment_id: str) -> str:
    """The payment's status at the gateway once its review (if any) has finished."""
    handle = stack.env.client.get_workflow_handle(f"stray-simulator-{payment_id}")
    await handle.result()
    return (await stack.sim_payment(payment_id))["status"]


async def _findings(stack: Stack, payment_id: str) -> list[tuple[str, str, int]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(select(ReconcileFinding).where(ReconcileFinding.payment_id == payment_id))
        return [(row.kind, row.action, row.times_seen) for row in rows]


async def test_a_payment_after_the_order_closed_is_found_and_refunded(closing_stack: Stack, database_url) -> None:
    order = await _closed_order(closing_stack)
    payment_id = order["payment"]["payment_id"]
    assert (await closing_stack.pay(order)).status_code == 200  # the notify is dropped: only 对账 sees it

    report = await _reconcile(closing_stack)
    assert report.findings.get("paid_order_closed", 0) >= 1 and report.refunds_started >= 1
    assert await _settled(closing_stack, payment_id) == "refunded"
    assert await _findings(closing_stack, payment_id) == [("paid_order_closed", "refund", 1)]
    reconciled = [e for e in (await closing_stack.view(order))["timeline"] if e["stage"] == "reconcile"]
    assert [e["detail"] for e in reconciled] == [{"kind": "paid_order_closed", "action": "refund"}]

    await _reconcile(closing_stack)  # refunded now: the next run finds nothing new about it
    assert await _findings(closing_stack, payment_id) == [("paid_order_closed", "refund", 1)]

    listed = subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "reconcile", "report", "--json"],
        env={**os.environ, "MIAOFA_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [row for row in rows if row["payment_id"] == payment_id]
    assert [(row["kind"], row["action"], row["order_id"]) for row in mine] == [
        ("paid_order_closed", "refund", order["order_id"])
    ]


async def test_a_wrong_amount_and_an_unknown_order_are_refunded(closing_stack: Stack) -> None:
    order = await _closed_order(closing_stack)
    wrong_id = order["payment"]["payment_id"]
    assert (await closing_stack.sim.post(f"/pay/{wrong_id}", json={"amount_cents": 1})).status_code == 200
    ghost = await closing_stack.sim.post(
        "/api/payments",
        headers=SIM_AUTH,
        json={
            "merchant_id": closing_stack.settings.sim_merchant_id,
            "order_id": f"ghost-{uuid.uuid4().hex[:8]}",
            "amount_cents": 500,
            "currency": "CNY",
            "subject": "not ours",
            "notify_url": "http://127.0.0.1:9/notify",
            "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
        },
    )
    ghost_id = ghost.json()["payment_id"]
    assert (await closing_stack.sim.post(f"/pay/{ghost_id}")).status_code == 200

    await _reconcile(closing_stack)
    assert await _settled(closing_stack, wrong_id) == "refunded"
    assert await _settled(closing_stack, ghost_id) == "refunded"
    assert await _findings(closing_stack, wrong_id) == [("wrong_amount", "refund", 1)]
    assert await _findings(closing_stack, ghost_id) == [("unknown_order", "refund", 1)]


async def test_an_open_order_that_missed_its_notify_is_nudged_and_delivered(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    # A long callback grace: the order will not poll by itself in this test's lifetime.
    async with running_stack(
        dev_env, sessionmaker, sim_url, **stack_settings(database_url, smtp[0], callback_grace_seconds=600)
    ) as stack:
        sku = await stack.product(1)
        order = await stack.ordered(sku)
        await stack.control(notify="drop")
        await stack.pay(order)
        await stack.settled(order)
        assert (await stack.view(order))["status"] == "awaiting_payment"
        report = await _reconcile(stack)
        assert report.orders_nudged >= 1
        view = await stack.wait_status(order, "delivered")
        stages = [e["stage"] for e in view["timeline"]]
        assert "reconcile" in stages and "polled" in stages and len(view["keys"]) == 1
        assert await _findings(stack, order["payment"]["payment_id"]) == [("paid_not_delivered", "nudge_order", 1)]


async def test_a_delivered_order_missing_from_the_statement_is_flagged(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    now = datetime.now(UTC)
    async with dev_stack.sessionmaker() as session:
        findings = await reconcile.compare(session, "simulator", [], now - timedelta(minutes=5), now + timedelta(1))
    mine = [f for f in findings if f.order_id == order["order_id"]]
    assert [(f.kind, f.action, f.payment_id) for f in mine] == [
        ("delivered_not_paid", "flag", order["payment"]["payment_id"])
    ]


async def test_the_reconcile_schedule_is_applied_idempotently(dev_env) -> None:
    from miaofa.settings import Settings

    settings = Settings(reconcile_interval_seconds=300)
    schedule_id = f"test-reconcile-{uuid.uuid4().hex[:8]}"
    assert await apply_reconcile_schedule(dev_env.client, settings, "tq-none", schedule_id) == "created"
    assert (
        await apply_reconcile_schedule(dev_env.client, Settings(reconcile_interval_seconds=900), "tq-none", schedule_id)
        == "updated"
    )
    handle = dev_env.client.get_schedule_handle(schedule_id)
    try:
        described = await handle.describe()
        assert described.schedule.action.workflow == c.RECONCILE_WORKFLOW
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(seconds=900))]
    finally:
        await handle.delete()


async def test_the_clearing_account_is_held_to_the_gateways_statement(dev_stack: Stack) -> None:
    """A delivered order's payment sits in gateway_clearing exactly as the statement says; a posting
    that takes some of it out without the gateway's word is a clearing_differs finding."""
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, c.DELIVERED)
    payment_id = order["payment"]["payment_id"]
    await _reconcile(dev_stack)
    assert [kind for kind, _, _ in await _findings(dev_stack, payment_id)] == []

    async with dev_stack.sessionmaker.begin() as session:  # money leaves the clearing account unseen
        await post(
            session,
            key=f"refund:{order['order_id']}",
            kind="test_tamper",
            currency="CNY",
            lines=[credit(PLATFORM, "gateway_clearing:simulator", 100), debit(PLATFORM, "world", 100)],
            at=datetime.now(UTC),
        )
    report = await _reconcile(dev_stack)
    assert report.findings.get("clearing_differs", 0) >= 1
    assert await _findings(dev_stack, payment_id) == [("clearing_differs", "flag", 1)]
    async with dev_stack.sessionmaker() as session:
        row = await session.scalar(select(ReconcileFinding).where(ReconcileFinding.payment_id == payment_id))
        assert row is not None and row.amount_cents == 100  # what the ledger is short of the statement


async def test_one_accounts_bill_outage_does_not_hold_up_the_others(dev_env, sessionmaker, sim_url) -> None:
    """A direct merchant's revoked key or a gateway that is down is reported; the other bills still count.
    Only when no bill at all could be fetched does the step fail (and Temporal retries it)."""
    import socket

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.reconcile import ReconcileActivities
    from miaofa import steps as s
    from miaofa.gateways.simulator import SimulatorGateway
    from tests.conftest import SIM_MERCHANT, SIM_SECRET

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    good = SimulatorGateway(sim_url, SIM_MERCHANT, SIM_SECRET)
    down = SimulatorGateway(f"http://127.0.0.1:{closed.getsockname()[1]}", SIM_MERCHANT, SIM_SECRET)
    now = datetime.now(UTC)
    step = s.ReconcileStep(start=now - timedelta(minutes=10), end=now, at=now)
    try:
        both = ReconcileActivities(sessionmaker, {"simulator": good, "elsewhere": down}, dev_env.client)
        report = await ActivityEnvironment().run(both.reconcile_payments, step)
        assert [entry.split(":")[0] for entry in report.unavailable] == ["elsewhere"]
        assert SIM_SECRET not in report.unavailable[0]
        only_down = ReconcileActivities(sessionmaker, {"elsewhere": down}, dev_env.client)
        with pytest.raises(ApplicationError):
            await ActivityEnvironment().run(only_down.reconcile_payments, step)
    finally:
        await good.aclose()
        await down.aclose()
        closed.close()
