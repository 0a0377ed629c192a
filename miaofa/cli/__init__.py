"""The `miaofa` command: its sub-apps assembled. Each lives in its own module; the helpers they share
are in `miaofa.cli.common`, which imports none of them."""

import typer

from miaofa.bench.cli import bench_app
from miaofa.cli import run
from miaofa.cli.audit import audit_log
from miaofa.cli.keys import keys_app
from miaofa.cli.ledger import ledger_app, statements_app
from miaofa.cli.merchants import merchants_app
from miaofa.cli.notify import gateways, notify_app
from miaofa.cli.orders import orders_app
from miaofa.cli.payouts import payouts_app
from miaofa.cli.reconcile import reconcile_app, schedules_app
from miaofa.cli.support import support_app
from miaofa.cli.tokens import tokens_app

app = typer.Typer(
    help="Miaofa (秒发): automatic card-key delivery, every order a Temporal workflow.",
    no_args_is_help=True,
    add_completion=False,
)
for command in (run.up, run.api, run.worker, run.sim):
    app.command()(command)
app.add_typer(run.db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(schedules_app, name="schedules")
app.add_typer(reconcile_app, name="reconcile")
app.add_typer(notify_app, name="notify")
app.command("gateways")(gateways)
app.add_typer(support_app, name="support")
app.add_typer(orders_app, name="orders")
app.add_typer(tokens_app, name="tokens")
app.add_typer(merchants_app, name="merchants")
app.add_typer(ledger_app, name="ledger")
app.add_typer(payouts_app, name="payouts")
app.add_typer(statements_app, name="statements")
app.command("audit")(audit_log)
app.add_typer(bench_app, name="bench")
