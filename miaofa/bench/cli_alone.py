"""`miaofa bench …` scenarios that bring what they measure themselves: no shop to reach, no warm-up.

Each runs through `_alone`. Registered in miaofa/bench/cli.py.
"""

from pathlib import Path
from typing import Annotated

import typer

from miaofa.bench.cli_common import At, JsonPath, KeepData, OutDir, Set, _alone, _overrides


def up_time(
    restarts: Annotated[int, typer.Option(min=0, help="Restarts on the same data after the first start.")] = 2,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    at: At = None,
) -> None:
    """Seconds from `miaofa up` to a green /healthz: a fresh data dir, then restarts (a stack of its own)."""
    from miaofa.bench import up_time as scenario

    overrides = _overrides(set_)
    _alone(
        "up-time",
        {"restarts": restarts, "set": set_ or [], "at": at},
        lambda b: scenario.run(b, restarts, overrides, keep_data, at),
        json_path=json_path,
        out_dir=out_dir,
    )


def risk_chain(
    attempts: Annotated[int, typer.Option(min=1, help="Attempts per rule set, one at a time.")] = 500,
    buyers: Annotated[int, typer.Option(min=1, help="Buyers seeded.")] = 200,
    history: Annotated[int, typer.Option(min=0, help="Delivered orders seeded per buyer.")] = 10,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
) -> None:
    """The risk rules' cost per order (screen + judge) on a PostgreSQL of its own: 7, 8 and 10 rules."""
    from miaofa.bench import risk_chain as scenario

    _alone(
        "risk-chain",
        {"attempts": attempts, "buyers": buyers, "history": history},
        lambda b: scenario.run(b, attempts, buyers, history),
        json_path=json_path,
        out_dir=out_dir,
    )


def sim_storage(
    payments: Annotated[int, typer.Option(min=1, help="Payments created and paid.")] = 3000,
    slice_size: Annotated[int, typer.Option("--slice", min=1, help="Payments per line shown.")] = 500,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
) -> None:
    """The simulator's cost per change as its books grow (in-process, books on disk): flat, or growing."""
    from miaofa.bench import sim_storage as scenario

    _alone(
        "sim-storage",
        {"payments": payments, "slice": slice_size},
        lambda b: scenario.run(b, payments, slice_size),
        json_path=json_path,
        out_dir=out_dir,
    )


def ledger_check(
    orders: Annotated[int, typer.Option(min=10, help="Orders whose books are seeded.")] = 100_000,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
) -> None:
    """`miaofa ledger check` over the books of N orders, seeded on a PostgreSQL of its own."""
    from miaofa.bench import ledger_check as scenario

    _alone(
        "ledger-check",
        {"orders": orders},
        lambda b: scenario.run(b, orders),
        json_path=json_path,
        out_dir=out_dir,
    )
