"""`miaofa ledger check` over the books of N orders, on a PostgreSQL of its own.

Seeds, set-based in SQL (a posting at a time would take minutes): 100 merchants, N delivered orders
each with its sale (gateway clearing Dr, the merchant's pending or available Cr, fees Cr), a hold for
half of them, and a refund (the sale reversed) for one in ten; every balance and `balance_after`
exactly what the entries say; a stored statement per merchant closing on its balances. Then times
the whole check (miaofa.ledger.check.run) a few times, and asserts it found nothing: a check that
is fast because it is wrong would be worthless."""

import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg

from miaofa.bench.runner import Bench
from miaofa.bench.stats import percentile

MERCHANTS = 100
RUNS = 3

SEED = """
INSERT INTO merchants (id, slug, name, settlement, fee_bps, hold_seconds, status)
SELECT 'mb' || m, 'bench-' || m, 'bench ' || m, 'platform', 250, 3600, 'active' FROM generate_series(1, {merchants}) m;
INSERT INTO products (merchant_id, sku, name, price_cents, currency, delivery_sla_seconds, description, active)
SELECT 'mb' || m, 'p', 'p', 1000, 'CNY', 60, '', true FROM generate_series(1, {merchants}) m;
INSERT INTO orders (id, merchant_id, product_id, sku, quantity, email, buyer_hash, amount_cents, list_cents, currency,
                    gateway, status, expires_at, paid_at, delivered_at)
SELECT 'ob' || i, 'mb' || (i % {merchants} + 1), p.id, 'p', 1, 'b@example.com', 'b', 1000, 1000, 'CNY', 'simulator',
       CASE WHEN i % 10 = 0 THEN 'refunded' ELSE 'delivered' END, now(), now(), now()
FROM generate_series(1, {orders}) i JOIN products p ON p.merchant_id = 'mb' || (i % {merchants} + 1);
INSERT INTO ledger_accounts (owner, kind, currency, normal, balance, version)
SELECT 'mb' || m, k, 'CNY', 'credit', 0, 0
FROM generate_series(1, {merchants}) m, unnest(ARRAY['pending', 'available']) k
UNION ALL SELECT 'platform', 'gateway_clearing:simulator', 'CNY', 'debit', 0, 0
UNION ALL SELECT 'platform', 'fees', 'CNY', 'credit', 0, 0;
-- a sale per order; its share held (pending) for even orders, available at once for odd ones
INSERT INTO ledger_transactions (idem_key, kind, merchant_id, order_id, memo, at)
SELECT 'sale:ob' || i, 'sale', 'mb' || (i % {merchants} + 1), 'ob' || i, '', now() FROM generate_series(1, {orders}) i;
INSERT INTO ledger_transactions (idem_key, kind, merchant_id, order_id, memo, at)
SELECT 'refund:ob' || i, 'refund', 'mb' || (i % {merchants} + 1), 'ob' || i, '', now()
FROM generate_series(10, {orders}, 10) i;
INSERT INTO ledger_entries (transaction_id, account_id, amount, currency, balance_after, account_version)
SELECT t.id, a.id, x.amount * CASE WHEN t.kind = 'refund' THEN -1 ELSE 1 END, 'CNY', 0, 0
FROM ledger_transactions t
CROSS JOIN LATERAL (VALUES ('platform', 'gateway_clearing:simulator', 1000), ('platform', 'fees', -25),
     (t.merchant_id, CASE WHEN substr(t.order_id, 3)::int % 2 = 0 THEN 'pending' ELSE 'available' END, -975))
     AS x(owner, kind, amount)
JOIN ledger_accounts a ON a.owner = x.owner AND a.kind = x.kind AND a.currency = 'CNY';
WITH running AS (
  SELECT e.id, sum(CASE WHEN a.normal = 'debit' THEN e.amount ELSE -e.amount END)
               OVER (PARTITION BY e.account_id ORDER BY e.id) AS after,
         row_number() OVER (PARTITION BY e.account_id ORDER BY e.id) AS version
  FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
)
UPDATE ledger_entries e SET balance_after = r.after, account_version = r.version FROM running r WHERE r.id = e.id;
"""
# The seed writes entries in place once, before the append-only rule holds; then balances follow.
FINISH = """
UPDATE ledger_accounts a SET balance = s.balance, version = s.version FROM (
  SELECT account_id, (array_agg(balance_after ORDER BY id DESC))[1] AS balance, count(*) AS version
  FROM ledger_entries GROUP BY account_id) s WHERE s.account_id = a.id;
INSERT INTO ledger_holds (merchant_id, order_id, currency, amount, remaining, reason, release_at)
SELECT o.merchant_id, o.id, 'CNY', 975, 975, 'bench', now() + interval '1 hour'
FROM orders o WHERE substr(o.id, 3)::int % 2 = 0 AND o.status = 'delivered';
-- a stored statement per merchant closing on its balances, so the statement check reads every entry
INSERT INTO ledger_statements (merchant_id, day, body, prev_hash, hash)
SELECT a.owner, (now() AT TIME ZONE 'UTC')::date,
       jsonb_build_object('merchant_id', a.owner, 'currencies', jsonb_build_object('CNY', jsonb_build_object(
         'opening', '{}'::jsonb, 'lines', '[]'::jsonb,
         'closing', jsonb_object_agg(a.kind, a.balance) || '{"reserved": 0, "debt": 0, "payable": 0}'::jsonb))),
       repeat('0', 64), repeat('0', 64)
FROM ledger_accounts a WHERE a.owner <> 'platform' GROUP BY a.owner;
"""


async def _seed(url: str, orders: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
        await conn.execute(SEED.format(merchants=MERCHANTS, orders=orders))
        await conn.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only")
        await conn.execute(FINISH)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def measure(b: Bench, url: str, orders: int) -> None:
    from miaofa.db.engine import make_engine, make_sessionmaker
    from miaofa.ledger import check

    task = b.progress.add_task(f"seeding the books of {orders:,} orders", total=None)
    started = time.perf_counter()
    await _seed(url, orders)
    b.progress.remove_task(task)
    b.show("seeded in", f"{time.perf_counter() - started:.1f} s")
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    took = []
    try:
        task = b.progress.add_task("ledger check", total=RUNS)
        for _ in range(RUNS):
            started = time.perf_counter()
            async with sessionmaker() as session:
                found = await check.run(session)
            took.append(time.perf_counter() - started)
            b.progress.advance(task)
            if found:
                raise AssertionError(f"the seeded books do not add up: {found[:3]}")
    finally:
        await engine.dispose()
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
        entries = await pool.fetchval("SELECT count(*) FROM ledger_entries")
    b.metrics.update({"orders": orders, "entries": entries, "check_seconds": took})
    b.show("entries", f"{entries:,}")
    b.check("ledger check, slowest of 3", max(took), "<=", 10, "s", shown=f"{max(took):.2f} s")
    b.show("ledger check, median", f"{percentile(sorted(took), 0.5):.2f} s")


async def run(b: Bench, orders: int) -> None:
    from miaofa.db import migrate
    from miaofa.devstack.postgres import LocalPostgres
    from miaofa.devstack.procs import free_port

    with tempfile.TemporaryDirectory(prefix="miaofa-ledger-bench-") as tmp:
        server = LocalPostgres(Path(tmp) / "data", free_port(), Path(tmp) / "postgres.log")
        server.start()
        try:
            server.ensure_database("bench")
            url = server.url("bench")
            await asyncio.to_thread(migrate.upgrade, url)
            await measure(b, url, orders)
        finally:
            server.stop()
    b.note(f"{MERCHANTS} merchants; a sale per order, a refund for one in ten, a hold for half; the check run {RUNS}×")
