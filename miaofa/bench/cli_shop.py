"""`miaofa bench …` against a shop: the settings' `miaofa up`, or a stack of their own with --start.

Each runs through `_go`, with a warm-up order unless told not to. Registered in miaofa/bench/cli.py.
"""

from pathlib import Path
from typing import Annotated

import typer

from miaofa.bench.cli_common import At, JsonPath, KeepData, OutDir, Set, Start, Timeout, Warmup, _go


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


def burst(
    orders: Annotated[int, typer.Option(min=1)] = 300,
    buyers: Annotated[int, typer.Option(min=1, help="Concurrent buyers, each creating then paying.")] = 16,
    timeout: Timeout = 600,
    shop_fee_bps: Annotated[
        int | None, typer.Option(min=0, max=10000, help="The default shop's fee during the run (then restored).")
    ] = None,
    shop_hold_seconds: Annotated[
        int | None, typer.Option(min=0, help="The default shop's hold during the run (then restored).")
    ] = None,
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

    terms = (shop_fee_bps, shop_hold_seconds)
    params: dict[str, int | None] = {"orders": orders, "buyers": buyers}
    if terms != (None, None):
        params |= {"shop_fee_bps": shop_fee_bps, "shop_hold_seconds": shop_hold_seconds}
    _go(
        "burst",
        params,
        lambda b: scenario.run(b, orders, buyers, timeout, terms),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )


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


def payouts(
    withdrawals: Annotated[int, typer.Option(min=1, help="Withdrawals, one after another.")] = 50,
    amount: Annotated[int, typer.Option(min=1, help="Minor units each (under PAYOUT_AUTO_APPROVE_CENTS).")] = 500,
    poll_ms: Annotated[float, typer.Option(min=1, help="How often the withdrawal is polled.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds one withdrawal may take.")] = 60,
    start: Start = False,
    set_: Set = None,
    keep_data: KeepData = False,
    json_path: JsonPath = None,
    out_dir: OutDir = Path("."),
    warmup: Warmup = True,
    at: At = None,
) -> None:
    """Withdrawals on the simulator's rail, one at a time: request → paid [p50 ≤ 1 s, p99 ≤ 3 s]."""
    from miaofa.bench import payouts as scenario

    _go(
        "payouts",
        {"withdrawals": withdrawals, "amount": amount, "poll_ms": poll_ms},
        lambda b: scenario.run(b, withdrawals, amount, poll_ms, timeout),
        start=start,
        set_=set_,
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )
