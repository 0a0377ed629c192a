"""`miaofa bench …`: the scenarios as commands. Imports nothing heavy until a command runs.

The commands live by concern, in cli_shop.py (against a shop) and cli_alone.py (a scenario that
brings its own); the options and runners they share are in cli_common.py, which imports neither.
"""

import typer

from miaofa.bench import cli_alone, cli_shop

bench_app = typer.Typer(
    help="Benchmarks of the whole shop: progress, a table with PASS/FAIL per target, and a JSON file. "
    "Against the `miaofa up` the settings name, or a stack of their own with --start.",
    no_args_is_help=True,
)

for name, command in (
    ("latency", cli_shop.latency),
    ("burst", cli_shop.burst),
    ("steady", cli_shop.steady),
    ("flash-sale", cli_shop.flash_sale),
    ("lost-callbacks", cli_shop.lost_callbacks),
    ("durability-cost", cli_shop.durability_cost),
    ("import-keys", cli_shop.import_keys),
    ("sync-commit", cli_shop.sync_commit),
    ("payouts", cli_shop.payouts),
    ("up-time", cli_alone.up_time),
    ("risk-chain", cli_alone.risk_chain),
    ("sim-storage", cli_alone.sim_storage),
    ("ledger-check", cli_alone.ledger_check),
):
    bench_app.command(name)(command)
