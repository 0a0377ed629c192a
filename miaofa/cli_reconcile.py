"""`miaofa schedules …` and `miaofa reconcile …`: the reconciliation schedule, a run on demand, its report."""

import asyncio
import json
import uuid
from datetime import datetime

import typer
from rich.table import Table

from miaofa import contract as c

schedules_app = typer.Typer(help="Temporal Schedules the shop needs.", no_args_is_help=True)
reconcile_app = typer.Typer(help="Reconciliation (对账) of gateway statements with orders.", no_args_is_help=True)


def _cli():
    from miaofa import cli  # the shared settings loader, failure printer and consoles

    return cli


async def _client(settings):
    from miaofa.temporal.client import connect
    from miaofa.crypto.vault import Vault

    return await connect(settings, Vault(settings.vault_key))


@schedules_app.command("apply")
def schedules_apply() -> None:
    """Create the reconcile schedule, or update it to the current settings (safe to repeat)."""
    cli = _cli()
    settings = cli._settings()
    cli._require(settings, "vault_key")

    async def apply() -> str:
        from miaofa.temporal.schedules import apply_reconcile_schedule

        return await apply_reconcile_schedule(await _client(settings), settings)

    try:
        outcome = asyncio.run(apply())
    except RuntimeError as exc:  # temporalio's connection failure
        cli._fail(f"cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}")
    cli.console.print(f"Reconcile schedule {outcome}: every {settings.reconcile_interval_seconds} s, "
                      f"looking back {settings.reconcile_lookback_seconds} s.")
    cli._leave(0)


@reconcile_app.command("run")
def reconcile_run() -> None:
    """Reconcile now and print what was found (the worker must be running)."""
    cli = _cli()
    settings = cli._settings()
    cli._require(settings, "vault_key")

    async def run() -> c.ReconcileReport:
        client = await _client(settings)
        return await client.execute_workflow(
            c.RECONCILE_WORKFLOW, c.ReconcileInput(settings.reconcile_lookback_seconds, settings.reconcile_grace_seconds),
            id=f"reconcile-now-{uuid.uuid4().hex[:8]}", task_queue=c.TASK_QUEUE, result_type=c.ReconcileReport)

    try:
        report = asyncio.run(run())
    except RuntimeError as exc:
        cli._fail(f"cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}")
    found = ", ".join(f"{kind} {count}" for kind, count in sorted(report.findings.items())) or "no mismatches"
    cli.console.print(f"Checked {report.checked} payments: {found}. "
                      f"Refunds started: {report.refunds_started}. Orders nudged: {report.orders_nudged}.")
    cli._leave(0)


@reconcile_app.command("report")
def reconcile_report(limit: int = typer.Option(50, min=1, max=1000, help="How many findings, newest first."),
                     as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """The mismatches reconciliation found, newest first, and what was done about each."""
    cli = _cli()
    settings = cli._settings()
    cli._require(settings, "database_url")
    try:
        rows = asyncio.run(_findings(settings.database_url, limit))
    except OSError as exc:
        cli._fail(f"cannot reach the database: {exc.strerror or exc}")
    if as_json:
        for row in rows:
            print(json.dumps(row, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
        return
    if not rows:
        cli.console.print("No mismatches found.")
        return
    table = Table("last seen", "kind", "action", "gateway", "payment", "order", "amount", "seen")
    for row in rows:
        table.add_row(row["last_seen_at"].strftime("%Y-%m-%d %H:%M:%S"), row["kind"], row["action"], row["gateway"],
                      row["payment_id"], row["order_id"], f"{row['amount_cents'] / 100:.2f} {row['currency']}",
                      str(row["times_seen"]))
    cli.console.print(table)


async def _findings(database_url: str, limit: int) -> list[dict]:
    from miaofa.payments import reconcile
    from miaofa.db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            found = await reconcile.report(session, limit)
    finally:
        await engine.dispose()
    return [{"last_seen_at": f.last_seen_at, "first_seen_at": f.first_seen_at, "kind": f.kind, "action": f.action,
             "gateway": f.gateway, "payment_id": f.payment_id, "order_id": f.order_id,
             "amount_cents": f.amount_cents, "currency": f.currency, "times_seen": f.times_seen} for f in found]
