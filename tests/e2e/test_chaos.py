"""Chaos tests (issue 8): faults injected into a running `miaofa up` while buyers order and pay.

Each test starts its own `miaofa up` (tests/helpers/chaos_stack.py) with a real SMTP server, runs buyers
that open orders and pay them at once at the simulator (every 25th never pays, every 7th buys two
keys), injects a fault at a process `miaofa up` supervises, waits until every paid order is
settled, and ends with the invariants read from PostgreSQL and the simulator's statement:
- every order is delivered, or awaiting payment only if it was never paid (its keys still reserved);
- no key is delivered twice: a delivered order holds exactly `quantity` sold keys, no code is sold
  twice, every order has one `delivered` event;
- no paid order is left undelivered or unrefunded (orders' paid_at, and every payment in the
  gateway's statement);
- every buyer who paid got a delivery email with exactly the keys of the order.

They take a whole shop each (about 30 s to 2 minutes on two cores): `.venv/bin/pytest -m chaos`
runs them; the default run skips them (pyproject addopts). docs/chaos.md says what each showed.
The last test here is not chaos: it reproduces, deterministically and quickly, a bug the worker-kill
run found (docs/chaos.md, finding 1).
"""

import asyncio
import sys
import time
from pathlib import Path

import pytest

from miaofa.devstack.procs import free_port, spawn
from tests.helpers.chaos_stack import ChaosStack, Order, SmtpServer, at_times, latency_summary, log

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def chaos(tmp_path: Path):
    """Start a private `miaofa up` mailing to a local SMTP server; stop both on the way out."""
    smtp = SmtpServer()
    smtp.start()
    stacks: list[ChaosStack] = []

    def start(**extra_env: str) -> ChaosStack:
        stack = ChaosStack(tmp_path, {"MIAOFA_SMTP_URL": smtp.url, **extra_env})
        stack.smtp = smtp
        stacks.append(stack)
        log(f"miaofa up healthy in {stack.start():.1f} s (data and logs in {stack.data})")
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            stack.stop()
            restarts = [line for line in stack.up_output().splitlines() if "exited with" in line]
            log(f"miaofa up said: {restarts}")
        smtp.stop()


async def _finish(stack: ChaosStack, sku: str, orders: list[Order], began: float) -> dict:
    """The run's numbers, then wait for every paid order to settle and check every invariant."""
    creates = sorted(o.create_seconds for o in orders)
    log(
        f"run: {len(orders)} orders in {time.monotonic() - began:.1f} s; POST /orders answers "
        f"{dict(stack.stats.statuses)}, client errors {dict(stack.stats.errors)}, pay answers "
        f"{dict(stack.stats.pay_statuses)}; open p50 {creates[len(creates) // 2]:.2f} s max {creates[-1]:.2f} s"
    )
    await stack.wait_settled(orders)
    report = await stack.check_invariants(sku, orders)
    report["mail"] = await stack.check_mail(stack.smtp, sku, orders)
    assert report["statuses"].get("delivered", 0) == sum(o.paid for o in orders)  # plenty of stock: no refunds
    return report


# ---- 1. the worker, kill -9 three times during the 300-order run ------------------------

WORKER_KILL_ORDERS = 300


@pytest.mark.chaos
def test_worker_killed_three_times_during_300_orders(chaos) -> None:
    stack = chaos()
    sku = stack.create_product(WORKER_KILL_ORDERS * 2)
    victims: list[int] = []

    async def kill_worker() -> None:
        victims.append(stack.kill("worker"))
        log(f"worker back as pid {await stack.wait_child('worker', victims[-1])}")

    async def run() -> dict:
        began = time.monotonic()
        buyers = asyncio.create_task(stack.buyers(sku, WORKER_KILL_ORDERS, rate=8))
        await at_times([(8, kill_worker), (18, kill_worker), (28, kill_worker)])
        return await _finish(stack, sku, await buyers, began)

    asyncio.run(run())
    assert len(victims) == 3 and stack.proc.poll() is None
    assert stack.up_output().count("worker exited with code -9") == 3


# ---- 2. the Temporal dev server, kill -9 and restarted by `miaofa up` ---------------------------


@pytest.mark.chaos
def test_temporal_restarted_mid_run(chaos) -> None:
    stack = chaos()
    count, kill_at = 150, 8
    sku = stack.create_product(count * 2)
    down: dict[str, float] = {}

    async def kill_temporal() -> None:
        victim = stack.kill("temporal")
        down["killed"] = time.monotonic()
        pid = await stack.wait_child("temporal", victim)
        port = int(stack.env["MIAOFA_TEMPORAL_ADDRESS"].rsplit(":", 1)[1])
        while True:  # until its frontend listens again
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        log(f"temporal back as pid {pid}, listening {time.monotonic() - down['killed']:.1f} s after the kill")

    async def run() -> list[Order]:
        began = time.monotonic()
        buyers = asyncio.create_task(stack.buyers(sku, count, rate=8))
        await at_times([(kill_at, kill_temporal)])
        orders = await buyers
        await _finish(stack, sku, orders, began)
        # The unpaid orders opened before the restart still have their workflows (the dev server's
        # SQLite file): paid now, they are delivered.
        unpaid = [o for o in orders if not o.paid]
        before = [o for o in unpaid if o.index < kill_at * 8]
        assert len(before) >= 2
        log(f"paying the {len(unpaid)} orders left unpaid ({len(before)} opened before the restart)")
        await stack.pay_all(unpaid)
        await _finish(stack, sku, orders, time.monotonic())
        return orders

    orders = asyncio.run(run())
    assert all(o.paid for o in orders)
    assert "temporal exited with code -9" in stack.up_output()


# ---- 3. PostgreSQL unavailable for 10 s ----------------------------------------------------------


@pytest.mark.chaos
def test_postgres_stopped_for_10_s(chaos) -> None:
    stack = chaos()
    count = 150
    sku = stack.create_product(count * 2)

    async def stop_postgres() -> None:
        with stack.postgres_stopped():
            await asyncio.sleep(10)

    async def run() -> dict:
        began = time.monotonic()
        buyers = asyncio.create_task(stack.buyers(sku, count, rate=8))
        await at_times([(8, stop_postgres)])
        return await _finish(stack, sku, await buyers, began)

    asyncio.run(run())
    assert "postgres exited" not in stack.up_output()  # the same server throughout: nothing was lost


# ---- 4. the gateway fails half of its queries and drops half of its notifies --------------------


@pytest.mark.chaos
def test_gateway_fails_half_the_queries_and_drops_half_the_notifies(chaos) -> None:
    stack = chaos()
    count, batch = 160, 20
    sku = stack.create_product(count * 2)

    async def run() -> list[Order]:
        began = time.monotonic()
        stack.control(query_fail_rate=0.5, query_fail_channel="both")
        orders: list[Order] = []
        # The simulator drops all notifies or none: alternate batches of buyers, dropped then sent.
        for start in range(0, count, batch):
            stack.control(notify="drop" if (start // batch) % 2 == 0 else "normal")
            orders += await stack.buyers(sku, batch, rate=10, first_index=start)
        stack.control(notify="normal")
        await _finish(stack, sku, orders, began)
        return orders

    orders = asyncio.run(run())
    dropped = stack.log_text("sim").count("dropped (control)")
    # Counted where they are answered: the worker never logs request URLs (they may hold a key).
    queries = [
        line
        for line in stack.log_text("sim").splitlines()
        if "channel answered (control)" in line or "channel failed (control)" in line
    ]
    failed = sum("failed (control)" in line for line in queries)
    log(f"simulator: {dropped} notifies dropped; {len(queries)} gateway queries, {failed} failed (503)")
    assert dropped == sum(1 for o in orders if o.paid and (o.index // batch) % 2 == 0)
    assert 0.3 < failed / len(queries) < 0.7


# ---- 5. SMTP down for 30 s -----------------------------------------------------------------------


@pytest.mark.chaos
def test_smtp_down_for_30_s(chaos) -> None:
    stack = chaos()
    smtp = stack.smtp
    count = 120
    sku = stack.create_product(count * 2)
    outage: dict[str, float] = {}

    def smtp_down() -> None:
        smtp.stop()
        outage["down"], outage["down_mono"] = time.time(), time.monotonic()
        log("SMTP stopped (its port refuses connections)")

    def smtp_up() -> None:
        smtp.start()
        outage["up"], outage["up_mono"] = time.time(), time.monotonic()
        log("SMTP started again on the same port")

    async def run() -> tuple[dict, list]:
        began = time.monotonic()
        buyers = asyncio.create_task(stack.buyers(sku, count, rate=4))
        await at_times([(5, smtp_down), (35, smtp_up)])
        report = await _finish(stack, sku, await buyers, began)
        conn = await stack.db()
        try:
            rows = await conn.fetch(
                "SELECT paid_at, delivered_at FROM orders WHERE sku = $1 AND status = 'delivered'", sku
            )
        finally:
            await conn.close()
        return report, rows

    report, rows = asyncio.run(run())
    # Keys were never held back by SMTP: orders paid while it was down were delivered while it was down.
    during = [
        (r["paid_at"].timestamp(), r["delivered_at"].timestamp())
        for r in rows
        if outage["down"] <= r["paid_at"].timestamp() <= outage["up"] - 5
    ]
    latency = latency_summary([d - p for p, d in during])
    log(
        f"{len(during)} orders paid during the outage, paid → delivered {latency}; last mail "
        f"{report['mail']['last_mail_at'] - outage['up_mono']:.1f} s after SMTP came back"
    )
    assert len(during) >= 50 and all(d < outage["up"] for _, d in during)
    assert report["mail"]["last_mail_at"] > outage["up_mono"]  # the mails waited for SMTP, the keys did not


# ---- Scale past one machine: two workers never deliver twice ------------------------------------


@pytest.mark.chaos
def test_two_workers_never_deliver_twice(chaos) -> None:
    stack = chaos()
    count = 200
    sku = stack.create_product(count * 2)
    first = stack.child("worker")
    assert first is not None
    # The environment `miaofa up` gave its worker, with the metrics on another port.
    env = {**stack.worker_env(), "MIAOFA_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}"}
    second_log = stack.data / "logs" / "worker2.log"
    second = spawn([sys.executable, "-m", "miaofa.cli", "worker"], log=second_log, env=env, cwd=stack.root)
    handled: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while "worker polling task queue" not in second_log.read_text(errors="replace"):
            assert second.poll() is None and time.monotonic() < deadline, second_log.read_text()
            time.sleep(0.2)
        log(f"second worker polling (pid {second.pid})")

        def kill_second() -> None:
            handled["second"] = second_log.read_text(errors="replace").count("delivery email sent")
            handled["first_then"] = stack.log_text("worker").count("delivery email sent")
            second.kill()
            second.wait(10)
            log(
                f"kill -9 the second worker (pid {second.pid}); it had sent {handled['second']} delivery "
                f"emails, the first {handled['first_then']}"
            )

        async def run() -> dict:
            began = time.monotonic()
            buyers = asyncio.create_task(stack.buyers(sku, count, rate=8))
            await at_times([(15, kill_second)])
            return await _finish(stack, sku, await buyers, began)

        asyncio.run(run())
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    first_total = stack.log_text("worker").count("delivery email sent")
    log(f"delivery emails: first worker {first_total}, second worker {handled['second']} (before its kill)")
    assert handled["second"] > 0 and handled["first_then"] > 0  # both workers were delivering
    assert stack.child("worker").pid == first.pid  # the first worker ran throughout


# ---- what the worker-kill run found, reproduced without a kill ----------------------------------


async def test_a_payment_signal_in_the_first_workflow_task_does_not_fail_the_order(dev_stack) -> None:
    """What the worker-kill run found, without a kill: a worker killed after opening an order (its local
    activities made the order row and the payment) but before its first workflow task completed. The
    buyer pays, the notify's signal lands in the history, and the retried first task carries the
    start and the signal together. Temporal's Python SDK runs the signal handlers of an activation
    before the workflow's run(), so the handler must not need what run() sets. Signal-with-start gives
    that same first task, deterministically. (Under miaofa up the AssertionError fails the task, retried
    for ever: the paid order never delivers. Under the test environment it fails the workflow.)"""
    from sqlalchemy import select
    from temporalio.api.enums.v1 import EventType

    from miaofa import contract as c
    from miaofa.db.models import Product

    stack = dev_stack
    sku = await stack.product(1)
    async with stack.sessionmaker() as session:
        product_id = await session.scalar(select(Product.id).where(Product.sku == sku))
    order_id = f"chaos-signal-{time.monotonic_ns() % 10**12}"
    order = c.OrderInput(
        order_id=order_id,
        product_id=product_id,
        sku=sku,
        product_name="Chaos card",
        unit_price_cents=990,
        currency="CNY",
        quantity=1,
        email="buyer@example.com",
        buyer_hash="0" * 32,
        gateway="simulator",
        delivery_sla_seconds=60,
        timing=c.Timing(payment_window_seconds=30, callback_grace_seconds=1, poll_interval_seconds=1),
    )
    handle = await stack.env.client.start_workflow(
        c.ORDER_WORKFLOW,
        order,
        id=c.order_workflow_id(order_id),
        task_queue=stack.task_queue,
        start_signal=c.PAYMENT_SIGNAL,
        start_signal_args=[c.PaymentNotified(notify_id=2**31)],
    )
    try:
        done = {EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED}
        deadline = time.monotonic() + 20
        while not done & (kinds := {event.event_type async for event in handle.fetch_history_events()}):
            assert time.monotonic() < deadline, kinds
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        kinds = {event.event_type async for event in handle.fetch_history_events()}
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in kinds
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED not in kinds
    finally:
        try:
            await handle.terminate("test over")
        except Exception:
            pass  # it ended already (failed)
