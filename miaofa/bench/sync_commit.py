"""Cost of durability: the shop with PostgreSQL's synchronous_commit off, then on, in one run.

Each round switches the shop's PostgreSQL with `ALTER SYSTEM SET synchronous_commit` and
`pg_reload_conf()` (every open connection picks it up), alternating off/on so drift on a shared
machine hits both alike, and measures: raw commits/s (one connection, one-row INSERT transactions,
in a scratch database); notify → key visible, orders paid one after another; a burst through the
whole shop (delivered orders/s). The setting is reset to the shop's default (on) at the end,
whatever happens. It needs a role that may ALTER SYSTEM (a started stack's has).
"""

import asyncio
import statistics
import time

import asyncpg

from miaofa.bench import burst, latency
from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench
from miaofa.bench.stack import pg_url
from miaofa.bench.stats import summary_ms

SCRATCH_DB = "miaofa_bench_commits"
MODES = ("off", "on")


async def set_synchronous_commit(b: Bench, value: str | None) -> None:
    """`value` for every connection of the shop's server; None resets it to the default (on)."""
    try:
        conn = await asyncpg.connect(pg_url(b.settings))
        try:
            if value is None:
                await conn.execute("ALTER SYSTEM RESET synchronous_commit")
            else:
                await conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
    except asyncpg.InsufficientPrivilegeError:
        raise BenchError("the shop's database role may not ALTER SYSTEM: pass --start for a stack of its own") from None
    await asyncio.sleep(0.5)  # backends apply the reload at their next command
    fresh = await asyncpg.connect(pg_url(b.settings))
    try:
        shown = await fresh.fetchval("SHOW synchronous_commit")
    finally:
        await fresh.close()
    if shown != (value or "on"):
        raise BenchError(f"synchronous_commit is {shown}, wanted {value or 'on'}")


async def commits_per_second(b: Bench, seconds: float) -> float:
    """One-row INSERTs, each its own transaction (autocommit), on one connection for `seconds`."""
    conn = await asyncpg.connect(pg_url(b.settings, SCRATCH_DB))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS commits (id bigserial PRIMARY KEY, at timestamptz)")
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await conn.execute("INSERT INTO commits (at) VALUES (now())")
            done += 1
        return done / (time.perf_counter() - started)
    finally:
        await conn.execute("TRUNCATE commits")
        await conn.close()


async def _scratch(b: Bench, create: bool) -> None:
    admin = await asyncpg.connect(pg_url(b.settings, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        if create:
            await admin.execute(f'CREATE DATABASE "{SCRATCH_DB}"')
    finally:
        await admin.close()


async def run(b: Bench, rounds: int, orders: int, burst_orders: int, raw_seconds: float, timeout: float) -> None:
    results: dict[str, dict[str, list[float]]] = {mode: {"commits": [], "visible": [], "burst": []} for mode in MODES}
    sku = await b.shop.create_product(rounds * len(MODES) * orders, "sync-commit")
    index = 0
    try:
        await _scratch(b, create=True)
        for number in range(rounds):
            for mode in MODES:
                await set_synchronous_commit(b, mode)
                into = results[mode]
                into["commits"].append(await commits_per_second(b, raw_seconds))
                task = b.progress.add_task(f"round {number + 1}, synchronous_commit={mode}", total=orders)
                for _ in range(orders):
                    _, seconds = await latency.one_order(b, sku, index, 5, timeout)
                    into["visible"].append(seconds)
                    index += 1
                    b.progress.advance(task)
                measured = await burst.measure(b, burst_orders, burst_orders, timeout, label=f"sync-{mode}")
                into["burst"].append(measured["delivered_per_second"] or 0.0)
    finally:
        await set_synchronous_commit(b, None)
        await _scratch(b, create=False)
    for mode in MODES:
        got = results[mode]
        visible = summary_ms(got["visible"])
        commits, rate = statistics.median(got["commits"]), statistics.median(got["burst"])
        b.metrics[mode] = {
            "commits_per_second": [round(x) for x in got["commits"]],
            "notify_to_key_visible_ms": visible,
            "burst_delivered_per_second": got["burst"],
        }
        b.show(f"synchronous_commit={mode}: raw commits/s (median of rounds)", f"{commits:,.0f}")
        b.show(
            f"synchronous_commit={mode}: notify → key visible",
            f"p50 {visible['p50']:.0f} ms · p99 {visible['p99']:.0f} ms (n={visible['n']})" if visible else "—",
        )
        b.show(f"synchronous_commit={mode}: burst of {burst_orders}, delivered orders/s (median)", f"{rate:.1f}")
    b.metrics.update({"rounds": rounds, "orders": orders, "burst_orders": burst_orders})
    b.note("the burst opens and pays all its orders at once (one buyer per order); the setting is back to on")
