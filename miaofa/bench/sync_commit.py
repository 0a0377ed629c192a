"""Cost of durability: the shop with PostgreSQL's synchronous_commit off, then on, in one run.

    .venv/bin/python -m benchmarks.durability --rounds 2 --orders 20 --burst 40

Runs against a live `miaofa up` in this folder. Each round switches the shop's PostgreSQL with
`ALTER SYSTEM SET synchronous_commit` + `pg_reload_conf()` (every open connection picks it up),
alternating off/on so drift on a shared machine hits both alike, and measures:
- raw commits/s: one connection, one-row INSERT transactions, in a scratch database;
- notify → key visible, orders paid one after another (p50/p99);
- a burst: N orders opened at once, all paid at once, orders/s from first order to last key.
The setting is reset to the shop's default (on) at the end, whatever happens.
"""

import argparse
import asyncio
import statistics
import time

import asyncpg
import httpx

from benchmarks.common import API, admin_headers
from benchmarks.flash_sale import buy, pay_and_wait
from benchmarks.saga_latency import make_product, order_and_pay
from miaofa.devstack.secrets import with_dev_defaults
from miaofa.settings import get_settings

SCRATCH_DB = "miaofa_bench_scratch"


def _pg_url(database: str | None = None) -> str:
    url = with_dev_defaults(get_settings()).database_url.replace("postgresql+asyncpg://", "postgresql://")
    return url if database is None else url.rsplit("/", 1)[0] + "/" + database


async def set_synchronous_commit(value: str | None) -> None:
    conn = await asyncpg.connect(_pg_url())
    try:
        if value is None:
            await conn.execute("ALTER SYSTEM RESET synchronous_commit")
        else:
            await conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{value}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    await asyncio.sleep(0.5)  # backends apply the reload at their next command
    fresh = await asyncpg.connect(_pg_url())
    try:
        shown = await fresh.fetchval("SHOW synchronous_commit")
    finally:
        await fresh.close()
    if shown != (value or "on"):
        raise RuntimeError(f"synchronous_commit is {shown}, wanted {value or 'on'}")


async def commits_per_second(seconds: float = 3.0) -> float:
    admin = await asyncpg.connect(_pg_url("postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", SCRATCH_DB):
            await admin.execute(f'CREATE DATABASE "{SCRATCH_DB}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_pg_url(SCRATCH_DB))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS commits (id bigserial PRIMARY KEY, at timestamptz)")
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await conn.execute("INSERT INTO commits (at) VALUES (now())")  # autocommit: one transaction
            done += 1
        return done / (time.perf_counter() - started)
    finally:
        await conn.execute("TRUNCATE commits")
        await conn.close()


async def burst(sku: str, orders: int) -> float:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=orders)) as http:
        started = time.perf_counter()
        answers = await asyncio.gather(*(buy(http, sku, i) for i in range(orders)))
        opened = [answer.json() for answer, _ in answers if answer.status_code == 201]
        if len(opened) != orders:
            raise RuntimeError(f"only {len(opened)} of {orders} orders opened")
        await asyncio.gather(*(pay_and_wait(http, order) for order in opened))
        return orders / (time.perf_counter() - started)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def main(rounds: int, orders: int, burst_orders: int) -> None:
    results: dict[str, dict[str, list[float]]] = {mode: {"commits": [], "lat": [], "burst": []}
                                                  for mode in ("off", "on")}
    with httpx.Client(timeout=60) as http:
        sku = make_product(http, rounds * 2 * (orders + burst_orders + 2))
        order_and_pay(http, sku)  # warm up: first order, first imports
        try:
            for round_no in range(rounds):
                for mode in ("off", "on"):
                    await set_synchronous_commit(mode)
                    commits = await commits_per_second()
                    latencies = [order_and_pay(http, sku) for _ in range(orders)]
                    rate = await burst(sku, burst_orders)
                    into = results[mode]
                    into["commits"].append(commits)
                    into["lat"] += latencies
                    into["burst"].append(rate)
                    print(f"round {round_no + 1} synchronous_commit={mode}: {commits:,.0f} commits/s; "
                          f"notify → key p50 {statistics.median(latencies) * 1000:.0f} ms "
                          f"p99 {p99(latencies) * 1000:.0f} ms; burst of {burst_orders}: {rate:.1f} orders/s")
        finally:
            await set_synchronous_commit(None)
    print("summary (all rounds):")
    for mode in ("off", "on"):
        got = results[mode]
        print(f"  synchronous_commit={mode}: {statistics.median(got['commits']):,.0f} commits/s (median of rounds); "
              f"notify → key p50 {statistics.median(got['lat']) * 1000:.0f} ms p99 {p99(got['lat']) * 1000:.0f} ms "
              f"(n={len(got['lat'])}); burst {statistics.median(got['burst']):.1f} orders/s")
    stock = httpx.get(f"{API}/admin/products/{sku}/stock", headers=admin_headers()).json()
    print(f"benchmark product {sku}: {stock}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--orders", type=int, default=20, help="orders paid one after another, per round")
    parser.add_argument("--burst", type=int, default=40, help="orders opened and paid at once, per round")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.orders, args.burst))
