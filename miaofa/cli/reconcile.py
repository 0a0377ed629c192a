"""`miaofa schedules …` and `miaofa reconcile …`: the reconciliation schedule, a run on demand, its report."""

import asyncio
import uuid

import typer

from miaofa import contract as c
from miaofa.cli.common import Column, _fail, _leave, _require, _settings, console, database, print_rows
from miaofa.settings import Settings

schedules_app = typer.Typer(help="Temporal Schedules the shop needs.", no_args_is_help=True)
reconcile_app = typer.Typer(help="Reconciliation (对账) of gateway statements with orders.", no_args_is_help=True)

FINDING_COLUMNS = (
    Column("last_seen_at", "last seen", show=lambda at: at.strftime("%Y-%m-%d %H:%M:%S")),
    Column("kind"),
    Column("action"),
    Column("gateway"),
    Column("payment_id", "payment", whole=True),
    Column("order_id", "order", whole=True),
    Column("amount_cents", "amount", show=lambda cents: f"{cents / 100:.2f}"),
    Column("currency"),
    Column("times_seen", "seen"),
)


async def _client(settings: Settings):
    from miaofa.crypto.vault import Vault
    from miaofa.temporal.client import connect

    return await connect(settings, Vault(settings.vault_key))


@schedules_app.command("apply")
def schedules_apply() -> None:
    """Create the reconcile schedule, or update it to the current settings (safe to repeat)."""
    settings = _settings()
    _require(settings, "vault_key")

    async def apply() -> str:
        from miaofa.temporal.schedules import apply_reconcile_schedule

        return await apply_reconcile_schedule(await _client(settings), settings)

    try:
        outcome = asyncio.run(apply())
    except RuntimeError as exc:  # temporalio's connection failure
        _fail(f"cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}")
    console.print(
        f"Reconcile schedule {outcome}: every {settings.reconcile_interval_seconds} s, "
        f"looking back {settings.reconcile_lookback_seconds} s."
    )
    _leave(0)


GATEWAYS = ("simulator", "alipay", "wechat", "stripe", "epay", "epusdt")
ALIASES = {"wechatpay": "wechat"}  # the name WeChat Pay goes by in its own API


@reconcile_app.command("run")
def reconcile_run(
    gateway: str | None = typer.Option(
        None, "--gateway", help="Only this gateway's bills: alipay, wechat (or wechatpay), stripe, simulator …"
    ),
) -> None:
    """Reconcile now and print what was found (the worker must be running)."""
    settings = _settings()
    _require(settings, "vault_key")
    if gateway is not None:
        gateway = ALIASES.get(gateway.lower(), gateway.lower())
        if gateway not in GATEWAYS:
            _fail(f"unknown gateway {gateway[:20]!r}: one of {', '.join(GATEWAYS)}")

    async def run() -> c.ReconcileReport:
        client = await _client(settings)
        window = c.ReconcileInput(
            settings.reconcile_lookback_seconds, settings.reconcile_grace_seconds, gateway=gateway
        )
        return await client.execute_workflow(
            c.RECONCILE_WORKFLOW,
            window,
            id=f"reconcile-now-{uuid.uuid4().hex[:8]}",
            task_queue=c.TASK_QUEUE,
            result_type=c.ReconcileReport,
        )

    try:
        report = asyncio.run(run())
    except RuntimeError as exc:
        _fail(f"cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}")
    found = ", ".join(f"{kind} {count}" for kind, count in sorted(report.findings.items())) or "no mismatches"
    console.print(
        f"Checked {report.checked} payments: {found}. "
        f"Refunds started: {report.refunds_started}. Orders nudged: {report.orders_nudged}."
    )
    for day in report.not_ready:
        console.print(f"Not ready, try later: the bill of {day}.")
    for account in report.unavailable:
        console.print(f"Could not fetch the bill of {account}; the next run tries again.")
    _leave(0)


@reconcile_app.command("report")
def reconcile_report(
    limit: int = typer.Option(50, min=1, max=1000, help="How many findings, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts."),
) -> None:
    """The mismatches reconciliation found, newest first, and what was done about each."""
    settings = _settings()
    _require(settings, "database_url")
    try:
        rows = asyncio.run(_findings(settings, limit))
    except OSError as exc:
        _fail(f"cannot reach the database: {exc.strerror or exc}")
    print_rows(rows, FINDING_COLUMNS, as_json=as_json, empty="No mismatches found.")


async def _findings(settings: Settings, limit: int) -> list[dict]:
    from miaofa.payments import reconcile

    async with database(settings) as sessionmaker, sessionmaker() as session:
        found = await reconcile.report(session, limit)
    return [
        {
            "last_seen_at": f.last_seen_at,
            "first_seen_at": f.first_seen_at,
            "kind": f.kind,
            "action": f.action,
            "gateway": f.gateway,
            "payment_id": f.payment_id,
            "order_id": f.order_id,
            "amount_cents": f.amount_cents,
            "currency": f.currency,
            "times_seen": f.times_seen,
        }
        for f in found
    ]
