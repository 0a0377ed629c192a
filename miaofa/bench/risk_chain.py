"""Cost of the risk rule chain per order, against a real PostgreSQL (no Temporal, no HTTP).

Starts a throwaway embedded PostgreSQL (synchronous commit, as the shop runs it), migrates it, seeds
B buyers with H delivered orders each (with the device each was bought from), then times
`Chain.screen` + `Chain.judge` (what `POST /orders` spends in the rules) for one attempt at a time,
with 7 rules (memory only), 8 (+ the open-order caps, which write the admission row) and 10 (+ the
two anomaly rules, one history query). Each attempt is a known buyer from a new address, with a
new device and an amount above the new-device threshold, so every rule runs and none denies.
"""

import asyncio
import ipaddress
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from miaofa import catalog
from miaofa import contract as c
from miaofa.bench.runner import Bench
from miaofa.bench.stack import IsolatedSettings
from miaofa.bench.stats import percentile
from miaofa.crypto.vault import Vault
from miaofa.db.models import Order, OrderEvent
from miaofa.risk.chain import Chain
from miaofa.risk.rules import Rules, RulesFile, parse

VAULT_KEY = "bWlhb2ZhLWJlbmNoLXZhdWx0LWtleS0zMi1ieXRlcyE="  # a throwaway database's key
PRICE = 60_000
WARMUP = 20  # attempts per scenario not counted: the pool and the caches warm up
BLOCKLIST = "\n".join(
    [
        "[blocklist]",
        "emails = [" + ", ".join(f'"blocked{i}@example.com"' for i in range(500)) + ', "@spam.example"]',
        "networks = [" + ", ".join(f'"203.0.{i}.0/24"' for i in range(100)) + "]",
        "devices = [" + ", ".join(f'"bad-{i}"' for i in range(500)) + "]",
        "[rates]\nper_ip = 1000\nper_email = 1000\nper_device = 1000",
        "[caps]\nopen_orders_per_email = 1000\nopen_orders_per_ip = 1000\nopen_units_per_ip = 1000",
        "open_orders_per_buyer_product = 1000\nunits_per_buyer_per_product = 1000\nquantity_per_order = 10",
        "[anomaly]\nnew_device_amount_cents = 50000\nhistory_multiple = 10\nhistory_min_orders = 3",
    ]
)
SCENARIOS = {  # rules switched off per scenario
    "memory (7 rules)": 'open_caps = "off"\nnew_device = "off"\namount_history = "off"',
    "+ open-order caps (8 rules)": 'new_device = "off"\namount_history = "off"',
    "+ anomalies (10 rules)": "",
    "10 rules, caps off (9 run)": 'open_caps = "off"',  # the anomaly query alone: a read-only transaction
}


async def seed(sessionmaker, vault: Vault, chain: Chain, buyers: int, history: int) -> tuple[int, list[str]]:
    emails = [f"bench-{uuid.uuid4().hex[:10]}@example.com" for _ in range(buyers)]
    async with sessionmaker.begin() as session:
        product = await catalog.create_product(
            session, sku="bench-" + uuid.uuid4().hex[:8], name="bench", price_cents=PRICE, currency="CNY"
        )
        at = datetime.now(UTC)
        for email in emails:
            device = chain.attempt(email=email, buyer_hash="", ip=None, device=f"home-{email}", quantity=1).device_hash
            for _ in range(history):
                order_id = uuid.uuid4().hex[:20]
                session.add(
                    Order(
                        id=order_id,
                        product_id=product.id,
                        sku=product.sku,
                        quantity=1,
                        email=email,
                        buyer_hash=vault.buyer_hash(email),
                        amount_cents=PRICE,
                        currency="CNY",
                        gateway="simulator",
                        status=c.DELIVERED,
                        expires_at=at,
                        created_at=at,
                    )
                )
                session.add(
                    OrderEvent(
                        order_id=order_id,
                        stage=c.RISK_STAGE,
                        at=at,
                        detail={"verdict": "allow", "reason": "passed", "device": device},
                    )
                )
        return product.id, emails


async def measure(b: Bench, database_url: str, attempts: int, buyers: int, history: int) -> None:
    from miaofa.db.engine import make_engine, make_sessionmaker

    settings = IsolatedSettings(vault_key=VAULT_KEY, database_url=database_url)
    vault = Vault(VAULT_KEY)
    engine = make_engine(database_url)
    sessionmaker = make_sessionmaker(engine)
    try:
        setup = Chain(settings, RulesFile("", parse(BLOCKLIST, Rules.from_settings(settings))))
        product_id, emails = await seed(sessionmaker, vault, setup, buyers, history)
        addresses = iter(ipaddress.ip_network("10.0.0.0/8").hosts())
        for name, off in SCENARIOS.items():
            chain = Chain(
                settings, RulesFile("", parse(BLOCKLIST + "\n[verdicts]\n" + off, Rules.from_settings(settings)))
            )
            task = b.progress.add_task(name, total=attempts + WARMUP)
            samples, verdicts = [], set()
            for i in range(attempts + WARMUP):
                email = emails[i % len(emails)]
                started = time.perf_counter()
                attempt = chain.attempt(
                    email=email,
                    buyer_hash=vault.buyer_hash(email),
                    ip=str(next(addresses)),
                    device=f"new-{uuid.uuid4().hex[:8]}",
                    quantity=1,
                )
                screened = chain.screen(attempt)
                attempt.order_id, attempt.product_id = uuid.uuid4().hex[:20], product_id
                attempt.currency, attempt.amount_cents = "CNY", PRICE
                decision = await chain.judge(sessionmaker, attempt, screened)
                elapsed = time.perf_counter() - started
                if i >= WARMUP:
                    samples.append(elapsed * 1000)
                    verdicts.add(f"{decision.verdict}:{len(decision.ran)}")
                b.progress.advance(task)
            ordered = sorted(samples)
            median, p99, ran = percentile(ordered, 0.5), percentile(ordered, 0.99), sorted(verdicts)
            b.metrics.setdefault("scenarios", {})[name] = {
                "median_ms": round(median, 3),
                "p99_ms": round(p99, 3),
                "verdicts_rules_run": ran,
            }
            b.show(name, f"median {median:.3f} ms · p99 {p99:.3f} ms (verdict:rules run {', '.join(ran)})")
    finally:
        await engine.dispose()


async def run(b: Bench, attempts: int, buyers: int, history: int) -> None:
    from miaofa.db import migrate
    from miaofa.devstack.postgres import LocalPostgres
    from miaofa.devstack.procs import free_port

    b.metrics.update({"attempts": attempts, "buyers": buyers, "history": history})
    with tempfile.TemporaryDirectory(prefix="miaofa-risk-bench-") as tmp:
        server = LocalPostgres(Path(tmp) / "data", free_port(), Path(tmp) / "postgres.log")
        server.start()  # from the main thread: the server dies with the thread that spawned it (PDEATHSIG)
        try:
            server.ensure_database("bench")
            url = server.url("bench")
            await asyncio.to_thread(migrate.upgrade, url)
            await measure(b, url, attempts, buyers, history)
        finally:
            server.stop()
    b.note(
        f"{buyers} buyers × {history} delivered orders seeded; {attempts} attempts per row, one at a time, "
        f"after {WARMUP} not counted"
    )
