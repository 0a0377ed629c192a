"""Cost of durability: the saga's delivered orders/s over raw reservations/s on the same PostgreSQL.

Raw reservations: the saga's own statement (`miaofa.inventory.RESERVE_SQL`, FOR UPDATE SKIP
LOCKED), each in its own transaction, from C connections at once, on a copy of the card_keys table
(the shop's own DDL) in a scratch database on the shop's server — or a scratch table in the shop's
database when the role may not create databases. Measured before and after a burst through the
whole shop, in the same run; the ratio uses their mean. The issue put it at about 0.002.
"""

import asyncio
import os
import re
import time
import uuid
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import Constraint, Index, MetaData, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from miaofa.bench import burst
from miaofa.bench.runner import Bench
from miaofa.bench.stack import pg_url
from miaofa.bench.stats import summary_ms
from miaofa.db.models import CardKey
from miaofa.inventory import RESERVE_SQL

SCRATCH_DB = "miaofa_bench_scratch"
PRODUCT_ID = 1


def reserve_statement() -> tuple[str, list[str]]:
    """RESERVE_SQL with its :names turned into asyncpg's $n, and the names in order."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, RESERVE_SQL.text), names


def card_keys_ddl(table: str) -> list[str]:
    """The shop's card_keys table and indexes under another name, without the products foreign key."""
    assert isinstance(CardKey.__table__, Table)  # a mapped class's; typed as any FromClause
    copy = CardKey.__table__.to_metadata(MetaData(), name=table)
    for constraint in list(copy.foreign_key_constraints):
        copy.constraints.discard(constraint)
    for column in copy.columns:
        column.foreign_keys.clear()
    named: list[Index | Constraint] = [*copy.indexes, *copy.constraints]
    for item in named:  # names are per schema: no clash with the shop's
        if item.name:
            item.name = f"{table}_{item.name}"
    dialect = postgresql.dialect()
    ddl = [str(CreateTable(copy).compile(dialect=dialect))]
    ddl += [str(CreateIndex(index).compile(dialect=dialect)) for index in copy.indexes]
    return ddl


class Scratch:
    """A scratch database (or table) holding keys to reserve; dropped at the end."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.table = "card_keys"
        self.url = pg_url(b.settings, SCRATCH_DB)
        self.own_database = True

    async def __aenter__(self) -> "Scratch":
        admin_url = pg_url(self.b.settings, "postgres")
        try:
            admin = await asyncpg.connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{SCRATCH_DB}"')
            finally:
                await admin.close()
        except (asyncpg.PostgresError, OSError) as exc:
            self.b.note(f"no scratch database ({type(exc).__name__}); a scratch table in the shop's database instead")
            self.own_database = False
            self.url = pg_url(self.b.settings)
            self.table = f"bench_card_keys_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.url)
        try:
            for statement in card_keys_ddl(self.table):
                await conn.execute(statement)
        finally:
            await conn.close()
        return self

    async def fill(self, keys: int) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f"TRUNCATE {self.table}")
            await conn.copy_records_to_table(
                self.table,
                columns=["product_id", "ciphertext", "key_hash", "status"],
                records=((PRODUCT_ID, os.urandom(72), os.urandom(32), "available") for _ in range(keys)),
            )
            await conn.execute(f"ANALYZE {self.table}")
        finally:
            await conn.close()

    async def __aexit__(self, *exc) -> None:
        if self.own_database:
            admin = await asyncpg.connect(pg_url(self.b.settings, "postgres"))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
            finally:
                await admin.close()
        else:
            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            finally:
                await conn.close()


async def raw_reservations(b: Bench, scratch: Scratch, seconds: float, concurrency: int, keys: int, label: str) -> dict:
    """Reservations/s of RESERVE_SQL, one transaction each, `concurrency` connections at once."""
    await scratch.fill(keys)
    sql, names = reserve_statement()
    sql = sql.replace("card_keys", scratch.table)
    done = 0
    empty = False
    latencies: list[float] = []
    task = b.progress.add_task(f"raw reservations ({label})", total=None)
    pool = await asyncpg.create_pool(scratch.url, min_size=concurrency, max_size=concurrency)
    try:
        deadline = time.perf_counter() + seconds

        async def client(worker: int) -> None:
            nonlocal done, empty
            async with pool.acquire() as conn:
                statement = await conn.prepare(sql)
                n = 0
                while time.perf_counter() < deadline and not empty:
                    n += 1
                    values = {
                        "product_id": PRODUCT_ID,
                        "order_id": f"raw-{worker}-{n}",
                        "quantity": 1,
                        "at": datetime.now(UTC),
                    }
                    began = time.perf_counter()
                    rows = await statement.fetch(*(values[name] for name in names))
                    latencies.append(time.perf_counter() - began)
                    if not rows:
                        empty = True  # out of keys: the measure stops here
                        return
                    done += 1
                    if done % 200 == 0:
                        b.progress.update(task, completed=done)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    b.progress.update(task, completed=done, total=done)
    if empty:
        b.note(f"raw reservations ({label}) ran out of its {keys} keys before {seconds:g} s")
    return {
        "reservations": done,
        "seconds": round(elapsed, 2),
        "per_second": round(done / elapsed, 1),
        "concurrency": concurrency,
        "latency_ms": summary_ms(latencies),
    }


async def run(
    b: Bench, orders: int, buyers: int, raw_seconds: float, concurrency: int, raw_keys: int, timeout: float
) -> None:
    async with Scratch(b) as scratch:
        before = await raw_reservations(b, scratch, raw_seconds, concurrency, raw_keys, "before")
        shop = await burst.measure(b, orders, buyers, timeout, label="durability")
        after = await raw_reservations(b, scratch, raw_seconds, concurrency, raw_keys, "after")
    raw = (before["per_second"] + after["per_second"]) / 2
    rate = shop["delivered_per_second"]
    ratio = round(rate / raw, 5) if rate and raw else None
    b.metrics.update(
        {
            "raw_before": before,
            "raw_after": after,
            "raw_per_second_mean": round(raw, 1),
            "burst": shop,
            "ratio": ratio,
            "scratch": "database" if scratch.own_database else "table",
        }
    )
    b.show(
        "raw reservations/s (RESERVE_SQL, one transaction each)",
        f"{before['per_second']:,.0f} before · {after['per_second']:,.0f} after the burst ({concurrency} connections)",
    )
    b.show(
        f"saga: burst of {orders} orders, {buyers} buyers",
        f"{rate} delivered orders/s ({shop['delivered']} of {orders} delivered)",
    )
    b.show("ratio: saga orders/s ÷ raw reservations/s", f"{ratio}" if ratio is not None else "—")
    b.note("the issue's starting point: about 0.002 (6.7–11.5 orders/s over 3,100–7,400 reservations/s)")
