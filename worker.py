"""Runs the Temporal worker: the order workflow and every activity, dependencies wired once here."""

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import uvloop
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.email import EmailActivities
from activities.ledger import LedgerActivities
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from activities.payout_reconcile import PayoutReconcileActivities
from activities.payouts import PayoutActivities
from activities.reconcile import ReconcileActivities
from miaofa import contract
from miaofa.crypto.vault import Vault
from miaofa.db.engine import make_engine, make_sessionmaker
from miaofa.direct.book import GatewayBook
from miaofa.gateways.base import Gateway
from miaofa.gateways.registry import build_gateways
from miaofa.messaging.dispatcher import Dispatcher
from miaofa.messaging.mailer import Mailer
from miaofa.payouts.rail_set import build_rails
from miaofa.settings import Settings, get_settings
from miaofa.telemetry import tracing
from miaofa.telemetry.metrics import TimedGateway, WorkerMetrics, merchant_label, meter_of
from miaofa.telemetry.watch import Watch
from miaofa.temporal.client import connect, metrics_runtime
from miaofa.temporal.schedules import apply_hold_release_schedule, apply_reconcile_schedule
from workflows.holds import HoldReleaseWorkflow
from workflows.order import OrderWorkflow
from workflows.payout import PayoutWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.stray import StrayPaymentWorkflow

WORKFLOWS: Sequence[type] = (
    OrderWorkflow,
    StrayPaymentWorkflow,
    ReconcileWorkflow,
    HoldReleaseWorkflow,
    PayoutWorkflow,
)
# The sandbox re-imports the workflow modules for every new workflow: a third of the worker's CPU per
# order (docs/benchmarks.md). So production runs them unsandboxed (WORKFLOW_SANDBOX=false), and the
# tests run every workflow path on this guarded runner, which refuses a non-deterministic call
# (tests/saga/test_sandbox.py). Passing our modules through would not help: the sandbox does not
# check a passed-through module's calls. The contract and step types are plain data: imported once.
GUARDED_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("miaofa.contract", "miaofa.steps")
)


def run_on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop, as uvicorn runs the API: the worker's socket writes and callbacks cost less in C
    (docs/benchmarks.md, "Flash-sale throughput")."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def saga_activities(
    *,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: Vault,
    gateways: dict[str, Gateway],
    temporal: Client,
) -> list[Callable]:
    metrics = WorkerMetrics(meter_of(temporal))  # on the worker's /metrics beside the SDK's
    gateways = {name: TimedGateway(gateway, metrics) for name, gateway in gateways.items()}
    # A direct merchant's orders go through adapters of its own credentials (miaofa/direct/book.py).
    book = GatewayBook(
        settings, sessionmaker, vault, gateways, lambda gw: TimedGateway(gw, metrics, merchant_label(gw.name))
    )
    orders = OrderActivities(sessionmaker, metrics, coupon_payer=settings.coupon_cost_payer)
    ledger = LedgerActivities(sessionmaker)
    payments = PaymentActivities(
        sessionmaker, gateways, settings.notify_url_base, settings.api_url, vault, temporal, metrics, book
    )
    email = EmailActivities(sessionmaker, vault, Mailer(settings.smtp_url, settings.mail_from), settings.api_url)
    reconcile = ReconcileActivities(sessionmaker, gateways, temporal, metrics, book)
    rails = build_rails(settings)
    payouts = PayoutActivities(sessionmaker, vault, rails, temporal, settings)
    payout_reconcile = PayoutReconcileActivities(sessionmaker, rails)
    return [
        orders.open_order,
        orders.record_stage,
        orders.accept_payment,
        orders.deliver_keys,
        orders.accept_and_deliver,
        orders.release_stock,
        orders.reserve_again,
        orders.refund_keys,
        orders.issue_coupon,
        payments.create_payment,
        payments.query_payment,
        payments.close_payment,
        payments.refund_payment,
        payments.review_stray,
        payments.record_stray_refund,
        email.send_delivery_email,
        reconcile.reconcile_payments,
        ledger.release_holds,
        payouts.record_payout_stage,
        payouts.settle_payout,
        payouts.submit_transfer,
        payouts.query_transfer,
        payouts.cancel_transfer,
        payouts.start_waiting_payouts,
        payout_reconcile.reconcile_payouts,
        payout_reconcile.reconcile_payout_bills,
    ]


def build_worker(
    client: Client,
    *,
    activities: Sequence[Callable],
    task_queue: str = contract.TASK_QUEUE,
    sandboxed: bool = True,
    workflows: Sequence[type] = WORKFLOWS,
) -> Worker:
    """`workflows`: today's by default; the upgrade test runs a released OrderWorkflow first.
    `sandboxed`: on for tests (the guard), off in production unless WORKFLOW_SANDBOX says so."""
    runner = GUARDED_RUNNER if sandboxed else UnsandboxedWorkflowRunner()
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        max_concurrent_activities=100,
        workflow_runner=runner,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )  # running activities may finish


async def run_worker(settings: Settings) -> None:
    vault = Vault(settings.vault_key)
    engine = make_engine(settings.database_url, pre_ping=False)  # every step is retried by Temporal
    runtime = metrics_runtime(settings.worker_metrics_address) if settings.worker_metrics_address else None
    tracing.setup(settings, "miaofa-worker")
    client = await connect(settings, vault, runtime)
    gateways = build_gateways(settings)
    worker = build_worker(
        client,
        activities=saga_activities(
            settings=settings, sessionmaker=make_sessionmaker(engine), vault=vault, gateways=gateways, temporal=client
        ),
        sandboxed=settings.workflow_sandbox,
    )
    await apply_reconcile_schedule(client, settings)  # idempotent: every worker may, one schedule results
    await apply_hold_release_schedule(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log = logging.getLogger("miaofa.worker")
    dispatcher = outbox_dispatcher(settings, make_sessionmaker(engine), vault, runtime)
    try:
        async with worker:  # on exit: stop polling, let running activities finish
            log.info("worker polling task queue %s", contract.TASK_QUEUE)
            sending = asyncio.create_task(dispatcher.run(stop), name="outbox")
            watch = Watch(
                make_sessionmaker(engine),
                runtime.metric_meter if runtime else None,
                settings.reconcile_interval_seconds,
            )
            watching = asyncio.create_task(watch.run(stop), name="ops-watch")
            await stop.wait()
            log.info("worker stopping")
            await sending  # it ends its round: a send cut short would only be sent again
            await watching
    finally:
        await dispatcher.aclose()
        await engine.dispose()


def outbox_dispatcher(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], vault: Vault, runtime: Runtime | None = None
) -> Dispatcher:
    """Sends the outbox's emails and webhooks from this process (any number of workers may)."""
    return Dispatcher(
        sessionmaker,
        vault,
        Mailer(settings.smtp_url, settings.mail_from),
        shop_url=settings.api_url,
        webhook_url=settings.webhook_url,
        webhook_secret=settings.webhook_secret,
        webhook_allow_networks=settings.webhook_allow_networks,
        meter=runtime.metric_meter if runtime else None,
    )


if __name__ == "__main__":
    from miaofa.telemetry import logs

    logs.configure(get_settings().log_level, get_settings().log_format)  # as `miaofa worker` logs
    run_on_uvloop(run_worker(get_settings()))
