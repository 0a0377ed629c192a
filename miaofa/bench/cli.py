"""`miaofa bench …`: the scenarios as commands. Imports nothing heavy until a command runs."""

from pathlib import Path
from typing import Annotated, Any

import typer

bench_app = typer.Typer(
    help="Benchmarks of the whole shop: progress, a table with PASS/FAIL per target, and a JSON file. "
    "Against the `miaofa up` the settings name, or a stack of their own with --start.",
    no_args_is_help=True,
)

Start = Annotated[
    bool,
    typer.Option(
        "--start/--no-start",
        help="Start a stack of its own (`miaofa up` in a temp dir, free ports, risk limits "
        "off) and stop it at the end; otherwise use the one the settings name.",
    ),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="NAME=VALUE",
        help="A setting for the started stack, e.g. CALLBACK_GRACE_SECONDS=3 (repeatable; with --start).",
    ),
]
KeepData = Annotated[bool, typer.Option("--keep-data", help="Keep the started stack's data dir and logs.")]
JsonPath = Annotated[
    Path | None,
    typer.Option("--json", help="Where to write the result (default bench-<scenario>-<timestamp>.json in --out-dir)."),
]
OutDir = Annotated[Path, typer.Option("--out-dir", help="Folder for the default JSON file name.")]
Warmup = Annotated[bool, typer.Option("--warmup/--no-warmup", help="One order bought before measuring.")]
At = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="REV",
        help="Run the started stack from this git revision (git archive), not the working "
        "tree: e.g. HEAD, to leave uncommitted edits out of a before/after.",
    ),
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for delivery after the load.")]


def _overrides(set_: list[str] | None) -> dict[str, str]:
    from miaofa.bench.base import BenchError, err
    from miaofa.bench.stack import parse_overrides

    try:
        return parse_overrides(set_ or [])
    except BenchError as exc:
        err.print(f"[red]Error:[/] {exc}")
        raise typer.Exit(2) from None


def _go(
    scenario: str,
    params: dict[str, Any],
    body,
    *,
    start: bool,
    set_: list[str] | None,
    keep_data: bool,
    json_path: Path | None,
    out_dir: Path,
    warmup: bool,
    at: str | None,
) -> None:
    from miaofa.bench.runner import Options, run_scenario

    options = Options(
        start=start,
        overrides=_overrides(set_),
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )
    raise typer.Exit(run_scenario(scenario, options, params, body))


def _alone(scenario: str, params: dict[str, Any], body, *, json_path: Path | None, out_dir: Path) -> None:
    """A scenario that brings what it measures itself: no shop to reach, no warm-up order."""
    from miaofa.bench.runner import Options, run_scenario

    options = Options(json_path=json_path, out_dir=out_dir, warmup=False)
    raise typer.Exit(run_scenario(scenario, options, params, body, shop=False))


@bench_app.command()
def latency(
    orders: Annotated[int, typer.Option(min=1, help="Orders, one after another.")] = 50,
    poll_ms: Annotated[float, typer.Option(min=1, help="How often the order page is polled.")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds one order may take.")] = 60,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """One order at a time: notify → key visible [p50 ≤ 40 ms], create → 201, paid → delivered (DB)."""
    from miaofa.bench import latency as scenario

    _go(
        "latency",
        {"orders": orders, "poll_ms": poll_ms},
        lambda b: scenario.run(b, orders, poll_ms, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command()
def burst(
    orders: Annotated[int, typer.Option(min=1)] = 300,
    buyers: Annotated[int, typer.Option(min=1, help="Concurrent buyers, each creating then paying.")] = 16,
    timeout: Timeout = 600,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """B buyers at once until N orders: delivered orders/s, first create → last delivered [≥ 40/s]."""
    from miaofa.bench import burst as scenario

    _go(
        "burst",
        {"orders": orders, "buyers": buyers},
        lambda b: scenario.run(b, orders, buyers, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command()
def steady(
    rate: Annotated[float, typer.Option(min=0.1, help="Arrivals per second (open loop).")] = 20,
    seconds: Annotated[float, typer.Option(min=1, help="How long orders arrive.")] = 60,
    timeout: Timeout = 600,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """Open-loop arrivals: create → 201 [p99 ≤ 250 ms], paid → delivered [p50 ≤ 50, p99 ≤ 250 ms], backlog."""
    from miaofa.bench import steady as scenario

    _go(
        "steady",
        {"rate": rate, "seconds": seconds},
        lambda b: scenario.run(b, rate, seconds, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command("flash-sale")
def flash_sale(
    buyers: Annotated[int, typer.Option(min=1)] = 2000,
    keys: Annotated[int, typer.Option(min=1)] = 200,
    timeout: Timeout = 600,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """N buyers race for K keys: oversold [0], duplicates [0], delivered [= K], sold-out p99 in the API [≤ 100 ms]."""
    from miaofa.bench import flash_sale as scenario

    _go(
        "flash-sale",
        {"buyers": buyers, "keys": keys},
        lambda b: scenario.run(b, buyers, keys, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command("lost-callbacks")
def lost_callbacks(
    orders: Annotated[int, typer.Option(min=1)] = 20,
    buyers: Annotated[int, typer.Option(min=1, help="Concurrent buyers.")] = 4,
    grace: Annotated[
        float | None, typer.Option(help="CALLBACK_GRACE_SECONDS for the started stack (default: the shop's 15 s).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds past the grace to wait.")] = 180,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """Every notify dropped: share delivered [100 %] and recovery time (≥ the callback grace)."""
    from miaofa.bench import lost_callbacks as scenario

    if grace is not None:
        if not start:
            raise typer.BadParameter("--grace sets the started stack's grace: add --start", param_hint="--grace")
        set_ = [*(set_ or []), f"CALLBACK_GRACE_SECONDS={grace:g}"]
    _go(
        "lost-callbacks",
        {"orders": orders, "buyers": buyers, "grace": grace},
        lambda b: scenario.run(b, orders, buyers, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command("durability-cost")
def durability_cost(
    orders: Annotated[int, typer.Option(min=1, help="Orders in the saga's burst.")] = 300,
    buyers: Annotated[int, typer.Option(min=1)] = 16,
    raw_seconds: Annotated[
        float, typer.Option(min=0.5, help="Seconds of raw reservations, before and after the burst.")
    ] = 5,
    concurrency: Annotated[int, typer.Option(min=1, help="Connections reserving at once.")] = 16,
    raw_keys: Annotated[int, typer.Option(min=1, help="Keys in the scratch table.")] = 100_000,
    timeout: Timeout = 600,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """Saga orders/s ÷ raw reservations/s (RESERVE_SQL) on the same PostgreSQL, in one run."""
    from miaofa.bench import durability_cost as scenario

    _go(
        "durability-cost",
        {
            "orders": orders,
            "buyers": buyers,
            "raw_seconds": raw_seconds,
            "concurrency": concurrency,
            "raw_keys": raw_keys,
        },
        lambda b: scenario.run(b, orders, buyers, raw_seconds, concurrency, raw_keys, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command("import-keys")
def import_keys(
    keys: Annotated[int, typer.Option(min=1, help="Keys per import.")] = 100_000,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = False,
    at: At = None,
) -> None:
    """N keys into a fresh product through `miaofa keys import`, then through the admin API: keys/s of each."""
    from miaofa.bench import import_keys as scenario

    _go(
        "import-keys",
        {"keys": keys},
        lambda b: scenario.run(b, keys),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command("sync-commit")
def sync_commit(
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of off, then on.")] = 2,
    orders: Annotated[int, typer.Option(min=1, help="Orders one after another, per round.")] = 20,
    burst: Annotated[int, typer.Option(min=1, help="Orders opened and paid at once, per round.")] = 40,
    raw_seconds: Annotated[float, typer.Option(min=0.5, help="Seconds of raw commits per round.")] = 3,
    timeout: Timeout = 300,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """PostgreSQL synchronous_commit off vs on, alternating: raw commits/s, notify → key visible, a burst."""
    from miaofa.bench import sync_commit as scenario

    _go(
        "sync-commit",
        {"rounds": rounds, "orders": orders, "burst": burst, "raw_seconds": raw_seconds},
        lambda b: scenario.run(b, rounds, orders, burst, raw_seconds, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


@bench_app.command("up-time")
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


@bench_app.command("risk-chain")
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


@bench_app.command("sim-storage")
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
