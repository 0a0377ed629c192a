"""Issue 12: per-stage latencies and the saga's counters, scraped as Prometheus scrapes them — the
worker's from its runtime's /metrics (beside the SDK's own), the API's from GET /metrics."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, text, update
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from miaofa import contract as c
from miaofa.db.models import Order, ReconcileFinding
from miaofa.devstack.procs import free_port
from miaofa.telemetry.watch import Watch
from miaofa.temporal.client import metrics_runtime
from tests.conftest import SIM_SECRET, stack_settings
from tests.helpers.stack import Stack, running_stack

Samples = dict[tuple[str, frozenset], float]


class Metered:
    def __init__(self, stack: Stack, worker_url: str, meter) -> None:
        self.stack, self.worker_url, self.meter = stack, worker_url, meter

    async def scrape(self) -> Samples:
        async with httpx.AsyncClient() as http:
            worker = (await http.get(self.worker_url)).text
        api = (await self.stack.http.get("/metrics")).text
        return {**_parse(worker), **_parse(api)}


def _parse(body: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "service_name"}
            samples[(sample.name, frozenset(labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
async def metered(dev_env: WorkflowEnvironment, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Metered]:
    """A shop whose worker runs on a runtime serving Prometheus metrics, as `miaofa worker` does."""
    address = f"127.0.0.1:{free_port()}"
    runtime = metrics_runtime(address)
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=dev_env.client.data_converter,
        runtime=runtime,
    )
    env = WorkflowEnvironment.from_client(client)
    async with running_stack(
        env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=30,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
    ) as stack:
        yield Metered(stack, f"http://{address}/metrics", runtime.metric_meter)


async def test_an_order_through_the_stack_fills_every_stage_histogram(metered: Metered) -> None:
    stack = metered.stack
    sku = await stack.product(3)
    before = await metered.scrape()
    order = await stack.ordered(sku)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    after = await metered.scrape()
    sim = {"gateway": "simulator"}
    assert moved(before, after, "miaofa_order_reserve_seconds_count") == 1
    assert moved(before, after, "miaofa_callback_lag_seconds_count", **sim) == 1  # on the API
    assert moved(before, after, "miaofa_paid_to_delivered_seconds_count", **sim) == 1
    assert moved(before, after, "miaofa_notify_to_delivered_seconds_count", **sim) == 1
    # One order, one delivery: the headline is a real, short duration (a loose bound: 2 shared cores).
    assert 0 < moved(before, after, "miaofa_paid_to_delivered_seconds_sum", **sim) < 10
    assert moved(before, after, "miaofa_orders_paid_total", gateway="simulator", found_by="notified") == 1
    assert moved(before, after, "miaofa_order_outcomes_total", outcome="delivered") == 1
    assert moved(before, after, "miaofa_notifies_total", gateway="simulator", outcome="accepted") == 1
    assert moved(before, after, "miaofa_orders_opened_total", outcome="created") == 1
    assert (
        moved(before, after, "miaofa_gateway_call_seconds_count", gateway="simulator", operation="create_payment") == 1
    )
    # The SDK's own metrics are on the same endpoint (the alert for "no worker polling" reads them).
    assert any(name == "temporal_num_pollers" for name, _ in after)


async def test_a_lost_notify_is_a_poll_recovery_through_the_backup_channel(metered: Metered) -> None:
    stack = metered.stack
    await stack.control(notify="drop", query_fail_rate=1.0, query_fail_channel="primary")
    sku = await stack.product(1)
    before = await metered.scrape()
    order = await stack.ordered(sku)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    after = await metered.scrape()
    labels = {"gateway": "simulator", "operation": "query"}
    assert moved(before, after, "miaofa_orders_paid_total", gateway="simulator", found_by="polled_backup") == 1
    assert moved(before, after, "miaofa_orders_paid_total", gateway="simulator", found_by="notified") == 0
    assert moved(before, after, "miaofa_gateway_failovers_total", gateway="simulator") >= 1
    errors = moved(before, after, "miaofa_gateway_errors_total", **labels, kind="error")
    assert errors >= 1 and errors == moved(before, after, "miaofa_gateway_failovers_total", gateway="simulator")
    assert moved(before, after, "miaofa_gateway_call_seconds_count", **labels) >= 2  # failed primaries, a backup
    assert moved(before, after, "miaofa_notify_to_delivered_seconds_count", gateway="simulator") == 0
    assert moved(before, after, "miaofa_paid_to_delivered_seconds_count", gateway="simulator") == 1


async def test_a_refund_is_counted_and_the_stock_gauge_follows_the_hint(metered: Metered) -> None:
    stack = metered.stack
    sku = await stack.product(3)
    order = await stack.ordered(sku)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    before = await metered.scrape()
    refund = await stack.http.post(
        f"/support/orders/{order['order_id']}/refund",
        headers=stack.support,
        json={"reason": "ops test", "actor": "tester"},
    )
    assert refund.status_code == 200, refund.text
    after = await metered.scrape()
    assert moved(before, after, "miaofa_refunds_total", kind="order") == 1
    assert moved(before, after, "miaofa_order_outcomes_total", outcome="refunded") == 1
    assert moved(before, after, "miaofa_gateway_call_seconds_count", gateway="simulator", operation="refund") == 1
    await stack.app.state.miaofa.hot.refresh()
    assert value(await metered.scrape(), "miaofa_stock_available", sku=sku) == 2  # one sold, and refunded keys stay out


async def test_the_watch_reports_paid_orders_left_undelivered_and_unrepaired_mismatches(metered: Metered) -> None:
    stack = metered.stack
    sku = await stack.product(1)
    order = await stack.ordered(sku)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    watch = Watch(stack.sessionmaker, metered.meter, reconcile_interval_seconds=600)
    paid, findings = await watch.measure()
    now = datetime.now(UTC)
    payment_id = f"pay-{uuid.uuid4().hex[:12]}"
    async with stack.sessionmaker.begin() as session:  # stuck for ten minutes, and a mismatch seen for two hours
        await session.execute(
            update(Order)
            .where(Order.id == order["order_id"])
            .values(status="paid", paid_at=now - timedelta(minutes=10))
        )
        session.add(
            ReconcileFinding(
                gateway="simulator",
                payment_id=payment_id,
                order_id=order["order_id"],
                kind="delivered_not_paid",
                action="flag",
                amount_cents=990,
                currency="CNY",
                first_seen_at=now - timedelta(hours=2),
                last_seen_at=now,
                times_seen=12,
            )
        )
    try:
        stuck, unrepaired = await watch.measure()
        scraped = await metered.scrape()
    finally:
        async with stack.sessionmaker.begin() as session:
            await session.execute(update(Order).where(Order.id == order["order_id"]).values(status="delivered"))
            await session.execute(delete(ReconcileFinding).where(ReconcileFinding.payment_id == payment_id))
    assert (stuck.count, unrepaired.count) == (paid.count + 1, findings.count + 1)
    assert value(scraped, "miaofa_paid_undelivered_orders") == stuck.count
    assert value(scraped, "miaofa_paid_undelivered_oldest_seconds") >= 600
    assert value(scraped, "miaofa_reconcile_unrepaired") == unrepaired.count
    assert value(scraped, "miaofa_reconcile_unrepaired_oldest_seconds") >= 7200
    # A finding no recent run reported has been repaired: it leaves the gauge.
    async with stack.sessionmaker() as session:
        old = (
            await session.execute(
                text("SELECT count(*) FROM reconcile_findings WHERE last_seen_at >= :t"),
                {"t": now - timedelta(seconds=1260)},
            )
        ).scalar_one()
    assert (await watch.measure())[1].count == old


async def test_a_reconcile_run_counts_its_mismatches_repairs_and_the_refund(metered: Metered) -> None:
    stack = metered.stack
    ghost = await stack.sim.post(
        "/api/payments",
        headers={"Authorization": f"Bearer {SIM_SECRET}"},
        json={
            "merchant_id": stack.settings.sim_merchant_id,
            "order_id": f"ghost-{uuid.uuid4().hex[:8]}",
            "amount_cents": 500,
            "currency": "CNY",
            "subject": "not ours",
            "notify_url": "http://127.0.0.1:9/notify",
            "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
        },
    )
    ghost_id = ghost.json()["payment_id"]
    assert (await stack.sim.post(f"/pay/{ghost_id}")).status_code == 200
    before = await metered.scrape()
    report = await stack.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=600, grace_seconds=0),
        id=f"reconcile-ops-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=c.ReconcileReport,
    )
    await stack.env.client.get_workflow_handle(f"stray-simulator-{ghost_id}").result()
    after = await metered.scrape()
    sim = {"gateway": "simulator"}
    assert report.findings.get("unknown_order", 0) >= 1 and report.refunds_started >= 1
    assert moved(before, after, "miaofa_reconcile_runs_total", **sim) == 1
    assert moved(before, after, "miaofa_reconcile_repairs_total", **sim, action="refund") == report.refunds_started
    assert moved(before, after, "miaofa_reconcile_repairs_total", **sim, action="nudge_order") == report.orders_nudged
    assert moved(before, after, "miaofa_gateway_call_seconds_count", **sim, operation="statement") == 1
    assert moved(before, after, "miaofa_refunds_total", kind="stray") >= 1
    assert (
        abs(value(after, "miaofa_reconcile_last_success_timestamp_seconds", **sim) - datetime.now(UTC).timestamp()) < 60
    )
    # Counted by the activity on its own meter (extra labels: activity_type, task_queue…); the parser
    # reads a counter's samples with the `_total` suffix.
    mismatches = sum(
        v - before.get(k, 0)
        for k, v in after.items()
        if k[0] == "miaofa_reconcile_mismatches_total" and ("kind", "unknown_order") in k[1]
    )
    assert mismatches == report.findings["unknown_order"]


async def test_the_reserved_gauge_counts_keys_held_by_unpaid_orders(metered: Metered) -> None:
    """Issue 17, N4: what MiaofaUnpaidReservationsSpike reads (deploy/prometheus/alerts.yml)."""
    stack = metered.stack
    sku = await stack.product(5)
    await stack.ordered(sku, quantity=3, email="holder@example.com")
    hot = stack.app.state.miaofa.hot
    hot._reserved_at = float("-inf")  # measure now, not at the next GAUGE_SECONDS
    await hot.refresh()
    scraped = await metered.scrape()
    assert (value(scraped, "miaofa_stock_reserved", sku=sku), value(scraped, "miaofa_stock_available", sku=sku)) == (
        3,
        2,
    )


async def test_the_watch_counts_ledger_violations_and_logs_them(metered: Metered, caplog) -> None:
    from tests.api.test_ledger import money_shop, sold

    stack = metered.stack
    shop = await money_shop(stack, fee_bps=100, hold_seconds=3600)
    await sold(stack, shop)
    watch = Watch(stack.sessionmaker, metered.meter, reconcile_interval_seconds=600, ledger_check_seconds=0)
    await watch.measure()
    assert value(await metered.scrape(), "miaofa_ledger_violations") == 0
    tamper = "UPDATE ledger_accounts SET balance = balance + :d WHERE owner = :m AND kind = 'pending'"
    async with stack.sessionmaker.begin() as session:
        await session.execute(text(tamper), {"d": 5, "m": shop.merchant_id})
    try:
        await watch.measure()
        assert value(await metered.scrape(), "miaofa_ledger_violations") == 3
        assert f"ledger check: pending_not_held: {shop.merchant_id}'s pending CNY differs" in caplog.text
    finally:
        async with stack.sessionmaker.begin() as session:
            await session.execute(text(tamper), {"d": -5, "m": shop.merchant_id})
    await watch.measure()
    assert value(await metered.scrape(), "miaofa_ledger_violations") == 0


async def test_the_watch_counts_withdrawals_waiting_for_review(metered: Metered) -> None:
    """What MiaofaWithdrawalReviewLate reads (deploy/prometheus/alerts.yml): the queue platform finance
    has not answered, and the age of its oldest withdrawal."""
    from miaofa import steps as s
    from miaofa.db.payout_tables import Withdrawal
    from miaofa.payouts import destinations, settle, withdrawals
    from tests.helpers import payouts as p

    stack = metered.stack
    watch = Watch(stack.sessionmaker, metered.meter, reconcile_interval_seconds=600)
    await watch.measure()
    before = watch.waiting_review.count
    shop = await p.funded_shop(stack, 5000)
    now = datetime.now(UTC)
    async with stack.sessionmaker.begin() as session:  # asked for five hours ago, and still in review
        dest = await destinations.add(
            session,
            stack.vault,
            merchant_id=shop.merchant_id,
            rail="simulator",
            account=p.ACCOUNT,
            name=p.NAME,
            actor="test",
            now=now,
            delay_seconds=0,
        )
        made, _ = await withdrawals.request(
            session,
            stack.settings,
            shop.merchant_id,
            withdrawals.Asked(1000, "CNY", dest.id, uuid.uuid4().hex, "test"),
            now,
        )
        await session.execute(
            update(Withdrawal)
            .where(Withdrawal.id == made.id)
            .values(status=c.WITHDRAWAL_IN_REVIEW, created_at=now - timedelta(hours=5))
        )
    try:
        await watch.measure()
        scraped = await metered.scrape()
        assert watch.waiting_review.count == before + 1
        assert value(scraped, "miaofa_withdrawals_waiting_review") == before + 1
        assert value(scraped, "miaofa_withdrawals_waiting_review_oldest_seconds") >= 5 * 3600
        async with stack.sessionmaker.begin() as session:  # sent a day and two hours ago, outcome unknown
            await session.execute(
                update(Withdrawal)
                .where(Withdrawal.id == made.id)
                .values(status=c.WITHDRAWAL_SUBMITTED, created_at=now - timedelta(hours=26))
            )
        await watch.measure()
        scraped = await metered.scrape()
        assert value(scraped, "miaofa_withdrawals_unsettled") >= 1
        assert value(scraped, "miaofa_withdrawals_unsettled_oldest_seconds") >= 26 * 3600
    finally:  # decided as a reject is: the reservation goes back, and the ledger stays clean
        async with stack.sessionmaker.begin() as session:
            step = s.SettleStep(made.id, 1, s.SETTLE_RELEASE, c.WITHDRAWAL_REJECTED, "rejected", "test", now)
            await settle.settle(session, step)
    await watch.measure()
    assert value(await metered.scrape(), "miaofa_withdrawals_waiting_review") == before
