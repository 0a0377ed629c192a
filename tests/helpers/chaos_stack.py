"""A private `miaofa up` for the chaos tests, with buyers, faults and the end-of-run invariants.

The stack runs as a user runs it (`miaofa up` in a subprocess, its own data dir and free ports),
with short clocks so a lost callback is polled within seconds. A run is many buyers that each
open an order and pay it at the simulator; faults are injected at the processes `miaofa up`
supervises. The invariants are read from PostgreSQL and the simulator's statement, never from the
shop's own answers alone.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import asyncpg
import httpx
import psutil
from aiosmtpd.controller import Controller

from miaofa.crypto.vault import Vault
from miaofa.devstack.procs import free_port
from tests.helpers.messaging import part

# Short clocks: a lost callback is polled 2 s after the order opens, every 1 s doubling to 30 s,
# and an unpaid order keeps its stock for the whole test.
CHAOS_CLOCKS = {
    "MIAOFA_CALLBACK_GRACE_SECONDS": "2",
    "MIAOFA_POLL_INTERVAL_SECONDS": "1",
    "MIAOFA_PAYMENT_WINDOW_SECONDS": "600",
}
PRICE_CENTS = 990
SLA_SECONDS = 120


def log(message: str) -> None:
    """Progress on stderr with a wall-clock stamp (pytest -s shows it; the docs quote these lines)."""
    print(
        f"[chaos {time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}] {message}",
        file=sys.stderr,
        flush=True,
    )


# ---- SMTP: a real server the test can stop and start again on the same port --------------------


@dataclass
class Mail:
    to: str
    subject: str
    body: str
    at: float  # time.monotonic() when it arrived


@dataclass
class Mailbox:
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        message = message_from_bytes(envelope.content)
        for to in envelope.rcpt_tos:
            self.mails.append(Mail(to, str(message["Subject"]), part(message), time.monotonic()))
        return "250 OK"

    def by_recipient(self) -> dict[str, list[Mail]]:
        out: dict[str, list[Mail]] = {}
        for mail in self.mails:
            out.setdefault(mail.to, []).append(mail)
        return out


class SmtpServer:
    """aiosmtpd on a fixed loopback port, in its own thread; stop() closes the port (connection refused)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = Mailbox()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
                self._controller.start()
                return
            except Exception:  # the old socket may linger a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


# ---- the stack --------------------------------------------------------------------------------


@dataclass
class Order:
    index: int
    order_id: str
    payment_id: str
    email: str
    quantity: int
    create_seconds: float  # POST /orders until its 201/200, retries included
    create_attempts: int
    paid: bool = False  # the simulator said paid (or already_paid)
    paid_mono: float | None = None


@dataclass
class RunStats:
    statuses: Counter = field(default_factory=Counter)  # HTTP status of every POST /orders attempt
    errors: Counter = field(default_factory=Counter)  # client-side exception types
    pay_statuses: Counter = field(default_factory=Counter)


def _up_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    sim = free_port()
    env.update(
        MIAOFA_DATA_DIR=str(data_dir),
        MIAOFA_API_PORT=str(free_port()),
        MIAOFA_SIM_PORT=str(sim),
        MIAOFA_SIM_URL=f"http://127.0.0.1:{sim}",
        MIAOFA_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        MIAOFA_TEMPORAL_UI_PORT=str(free_port()),
        MIAOFA_PG_PORT=str(free_port()),
        MIAOFA_WORKER_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
        MIAOFA_RISK_EXEMPT_NETWORKS="127.0.0.0/8",  # many buyers from this one machine (README)
        **CHAOS_CLOCKS,
    )
    env.update(extra)  # a test's own settings win (the exempt networks too)
    return env


class ChaosStack:
    def __init__(self, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.env = _up_env(self.data, extra_env or {})
        self.api = f"http://127.0.0.1:{self.env['MIAOFA_API_PORT']}"
        self.sim = self.env["MIAOFA_SIM_URL"]
        self.proc: subprocess.Popen | None = None
        self.secrets: dict[str, str] = {}
        self.vault: Vault | None = None
        self.stats = RunStats()
        self.smtp: SmtpServer | None = None  # the chaos fixture's mail server
        self.started_at = datetime.now(UTC)

    # -- lifecycle --

    def start(self, timeout: float = 150) -> float:
        began = time.monotonic()
        self.output = open(self.root / "up.out", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "miaofa.cli", "up"],
            env=self.env,
            cwd=self.root,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        while time.monotonic() - began < timeout:
            assert self.proc.poll() is None, f"miaofa up exited with {self.proc.returncode}: {self.up_output()}"
            try:
                if httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(f"miaofa up was not healthy in time: {self.up_output()}")
        self.secrets = json.loads((self.data / "dev-secrets.json").read_text())
        self.vault = Vault(self.secrets["vault_key"])
        return time.monotonic() - began

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
                self.proc.kill()
                self.proc.wait(10)
        self.output.close()

    def up_output(self) -> str:
        return (self.root / "up.out").read_text(errors="replace")

    def log_text(self, name: str) -> str:
        path = self.data / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the processes `miaofa up` supervises --

    def child(self, name: str) -> psutil.Process | None:
        assert self.proc is not None
        for proc in psutil.Process(self.proc.pid).children():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmd = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if name == "temporal" and "start-dev" in cmd:
                return proc
            if name == "postgres" and cmd and Path(cmd[0]).name == "postgres":
                return proc
            if cmd[-2:] == ["miaofa.cli", name]:
                return proc
        return None

    def kill(self, name: str) -> int:
        victim = self.child(name)
        assert victim is not None, f"no {name} to kill"
        os.kill(victim.pid, signal.SIGKILL)
        log(f"kill -9 {name} (pid {victim.pid})")
        return victim.pid

    async def wait_child(self, name: str, not_pid: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.child(name)
            if proc is not None and proc.pid != not_pid:
                return proc.pid
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} was not restarted within {timeout} s: {self.up_output()}")

    @contextmanager
    def postgres_stopped(self) -> Iterator[list[int]]:
        """SIGSTOP the postmaster (so it forks nothing new), then every backend and helper; SIGCONT them
        all on the way out. Connections stay open and unanswered, as with a hung or partitioned server,
        and nothing is lost: no crash recovery, no restart by `miaofa up`."""
        postmaster = self.child("postgres")
        assert postmaster is not None
        postmaster.send_signal(signal.SIGSTOP)
        stopped = [postmaster]
        for proc in postmaster.children(recursive=True):
            try:
                proc.send_signal(signal.SIGSTOP)
                stopped.append(proc)
            except psutil.NoSuchProcess:
                pass
        log(f"SIGSTOP postgres: postmaster {postmaster.pid} and {len(stopped) - 1} backends and helpers")
        try:
            yield [p.pid for p in stopped]
        finally:
            for proc in reversed(stopped):
                try:
                    proc.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass
            log("SIGCONT postgres")

    def worker_env(self) -> dict[str, str]:
        """The environment `miaofa up` gave its worker (every setting spelled out), read from the process."""
        worker = self.child("worker")
        assert worker is not None
        return dict(worker.environ())

    # -- HTTP --

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets['admin_token']}"}

    def control(self, **knobs) -> dict:
        answer = httpx.post(
            f"{self.sim}/control",
            json=knobs,
            headers={"Authorization": f"Bearer {self.secrets['sim_control_token']}"},
            timeout=10,
        )
        answer.raise_for_status()
        log(f"simulator control {knobs}")
        return answer.json()

    def create_product(self, keys: int) -> str:
        sku = f"chaos-{uuid.uuid4().hex[:8]}"
        made = httpx.post(
            f"{self.api}/admin/products",
            headers=self._admin(),
            timeout=30,
            json={
                "sku": sku,
                "name": "Chaos card",
                "price_cents": PRICE_CENTS,
                "currency": "CNY",
                "delivery_sla_seconds": SLA_SECONDS,
            },
        )
        assert made.status_code == 201, made.text
        body = "\n".join(f"CHAOS-{sku}-{i:05d}-{uuid.uuid4().hex[:6]}" for i in range(keys)) + "\n"
        imported = httpx.post(
            f"{self.api}/admin/products/{sku}/keys",
            content=body.encode(),
            timeout=60,
            headers={**self._admin(), "Content-Type": "text/plain"},
        )
        assert imported.status_code == 200 and imported.json()["imported"] == keys, imported.text
        return sku

    async def open_order(
        self, http: httpx.AsyncClient, sku: str, index: int, quantity: int, deadline_seconds: float = 120
    ) -> Order:
        """POST /orders; a 503 (order_timeout, temporal_unavailable) or a lost connection is retried with
        the same Idempotency-Key, as the README tells clients to."""
        email = f"buyer{index}-{sku}@example.com"
        key = f"chaos-{sku}-{index:06d}"
        began = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                answer = await http.post(
                    f"{self.api}/orders",
                    headers={"Idempotency-Key": key},
                    json={"sku": sku, "quantity": quantity, "email": email, "gateway": "simulator"},
                )
            except httpx.HTTPError as exc:
                self.stats.errors[f"create:{type(exc).__name__}"] += 1
            else:
                body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
                label = f"{answer.status_code} {body.get('error', '')}".strip()
                if answer.status_code in (200, 201) and not body.get("payment"):
                    label += " without payment"  # a replay of an order whose payment is not made yet
                self.stats.statuses[label] += 1
                body = body if answer.status_code in (200, 201) else {}
                if body.get("payment"):  # a replay may come before the payment is made: ask again
                    return Order(
                        index,
                        body["order_id"],
                        body["payment"]["payment_id"],
                        email,
                        quantity,
                        time.monotonic() - began,
                        attempts,
                    )
                if answer.status_code not in (200, 201) and answer.status_code < 500:
                    raise AssertionError(f"order {index}: {answer.status_code} {answer.text}")
            assert time.monotonic() - began < deadline_seconds, f"order {index} not opened in {deadline_seconds} s"
            await asyncio.sleep(1)

    async def pay(self, http: httpx.AsyncClient, order: Order, deadline_seconds: float = 60) -> None:
        began = time.monotonic()
        while True:
            try:
                answer = await http.post(f"{self.sim}/pay/{order.payment_id}")
            except httpx.HTTPError as exc:
                self.stats.errors[f"pay:{type(exc).__name__}"] += 1
            else:
                self.stats.pay_statuses[answer.status_code] += 1
                if answer.status_code == 200 or (
                    answer.status_code == 409 and answer.json().get("error") == "already_paid"
                ):
                    order.paid, order.paid_mono = True, time.monotonic()
                    return
                raise AssertionError(f"pay {order.order_id}: {answer.status_code} {answer.text}")
            assert time.monotonic() - began < deadline_seconds, f"could not pay {order.order_id}"
            await asyncio.sleep(0.5)

    async def buyers(
        self,
        sku: str,
        count: int,
        *,
        rate: float,
        concurrency: int = 16,
        pay: bool = True,
        unpaid_every: int = 25,
        double_every: int = 7,
        first_index: int = 0,
    ) -> list[Order]:
        """`count` buyers arriving at `rate` per second: each opens an order and pays it at once.

        Every `unpaid_every`-th buyer never pays (its order must stay awaiting_payment, stock reserved);
        every `double_every`-th buys two keys.
        """
        gate = asyncio.Semaphore(concurrency)
        began = time.monotonic()

        async def buyer(http: httpx.AsyncClient, i: int) -> Order:
            await asyncio.sleep(max(0.0, began + (i - first_index) / rate - time.monotonic()))
            async with gate:
                quantity = 2 if i % double_every == double_every - 1 else 1
                order = await self.open_order(http, sku, i, quantity)
                if pay and i % unpaid_every != unpaid_every - 1:
                    await self.pay(http, order)
                return order

        limits = httpx.Limits(max_connections=concurrency * 2)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5), limits=limits) as http:
            return list(await asyncio.gather(*(buyer(http, i) for i in range(first_index, first_index + count))))

    async def pay_all(self, orders: list[Order], concurrency: int = 16) -> None:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=30) as http:

            async def one(order: Order) -> None:
                async with gate:
                    await self.pay(http, order)

            await asyncio.gather(*(one(o) for o in orders))

    # -- PostgreSQL --

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1",
            port=int(self.env["MIAOFA_PG_PORT"]),
            user="postgres",
            password=self.secrets["postgres_password"],
            database="miaofa",
        )

    async def wait_settled(self, orders: list[Order], timeout: float = 180) -> float:
        """Until every paid order is delivered or refunded (read from PostgreSQL). Returns the seconds waited."""
        paid = [o.order_id for o in orders if o.paid]
        began = time.monotonic()
        conn = await self.db()
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT status, count(*) AS n FROM orders WHERE id = ANY($1::text[]) GROUP BY status", paid
                )
                by_status = {r["status"]: r["n"] for r in rows}
                done = by_status.get("delivered", 0) + by_status.get("refunded", 0)
                if done == len(paid):
                    log(
                        f"settled: {len(paid)} paid orders delivered or refunded after "
                        f"{time.monotonic() - began:.1f} s: {by_status}"
                    )
                    return time.monotonic() - began
                if time.monotonic() - began > timeout:
                    log(f"NOT settled after {timeout} s: {by_status}")
                    return time.monotonic() - began
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    # -- the invariants --

    async def statement(self) -> list[dict]:
        start = (self.started_at - timedelta(minutes=5)).isoformat()
        end = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.get(
                f"{self.sim}/api/statements",
                params={"start": start, "end": end},
                headers={"Authorization": f"Bearer {self.secrets['sim_secret']}"},
            )
        answer.raise_for_status()
        return answer.json()

    async def check_invariants(self, sku: str, orders: list[Order]) -> dict:
        """Every order final or correctly waiting, no key twice, no paid order left undelivered or unrefunded.

        Returns what it read (for the report); raises AssertionError naming every order that breaks a rule.
        """
        assert self.vault is not None
        conn = await self.db()
        try:
            db_orders = {
                r["id"]: r
                for r in await conn.fetch(
                    "SELECT o.id, o.status, o.quantity, o.paid_at, o.delivered_at, o.email, p.payment_id, "
                    "p.status AS payment_status FROM orders o LEFT JOIN payments p ON p.order_id = o.id "
                    "WHERE o.sku = $1",
                    sku,
                )
            }
            keys = await conn.fetch(
                "SELECT k.id, k.order_id, k.status, k.ciphertext FROM card_keys k "
                "JOIN products p ON p.id = k.product_id WHERE p.sku = $1",
                sku,
            )
            coupons = {
                r["issued_for_order_id"]
                for r in await conn.fetch(
                    "SELECT issued_for_order_id FROM coupons WHERE issued_for_order_id = ANY($1::text[])",
                    list(db_orders),
                )
            }
            delivered_events = Counter(
                r["order_id"]
                for r in await conn.fetch(
                    "SELECT order_id FROM order_events WHERE stage = 'delivered' AND order_id = ANY($1::text[])",
                    list(db_orders),
                )
            )
            # Exactly one sale per delivered order, whatever was killed between payment and posting.
            sales = Counter(
                r["order_id"]
                for r in await conn.fetch(
                    "SELECT order_id FROM ledger_transactions WHERE kind = 'sale' AND order_id = ANY($1::text[])",
                    list(db_orders),
                )
            )
            ledger_violations = [
                r["check"]
                for r in await conn.fetch(
                    "SELECT 'unbalanced' AS check FROM ledger_entries "
                    "GROUP BY transaction_id, currency HAVING sum(amount) <> 0"
                )
            ]
        finally:
            await conn.close()
        statement = [p for p in await self.statement() if p["order_id"] in db_orders]

        problems: list[str] = []
        ours = {o.order_id: o for o in orders}
        if set(ours) != set(db_orders):
            problems.append(
                f"orders in PostgreSQL {len(db_orders)} vs opened {len(ours)}: "
                f"missing {sorted(set(ours) - set(db_orders))[:5]}, "
                f"extra {sorted(set(db_orders) - set(ours))[:5]}"
            )
        keys_by_order: dict[str, Counter] = {}
        for key in keys:
            if key["order_id"] is not None:
                keys_by_order.setdefault(key["order_id"], Counter())[key["status"]] += 1
            if key["status"] in ("sold", "reserved") and key["order_id"] is None:
                problems.append(f"key {key['id']} is {key['status']} without an order")
        paid_at_gateway = {p["order_id"] for p in statement if p["status"] == "paid"}
        refunded_at_gateway = {p["order_id"] for p in statement if p["status"] == "refunded"}
        paid_by_us = {o.order_id for o in orders if o.paid}
        if paid_by_us - paid_at_gateway - refunded_at_gateway:
            problems.append(
                f"paid at the simulator but not in its statement: {sorted(paid_by_us - paid_at_gateway)[:5]}"
            )
        if len(statement) != len({p["order_id"] for p in statement}):
            problems.append("an order has two payments in the statement")
        for order_id, row in db_orders.items():
            held = keys_by_order.get(order_id, Counter())
            status = row["status"]
            paid = order_id in paid_at_gateway or order_id in refunded_at_gateway
            if status == "delivered":
                if held != Counter(sold=row["quantity"]):
                    problems.append(f"{order_id} delivered with keys {dict(held)} (quantity {row['quantity']})")
                if not paid:
                    problems.append(f"{order_id} delivered but not paid at the gateway")
                if delivered_events[order_id] != 1:
                    problems.append(f"{order_id} has {delivered_events[order_id]} 'delivered' events")
                if sales[order_id] != 1:
                    problems.append(f"{order_id} delivered with {sales[order_id]} sales in the ledger")
                late = row["delivered_at"] - row["paid_at"] > timedelta(seconds=SLA_SECONDS)
                if late and order_id not in coupons:
                    problems.append(f"{order_id} delivered late without a coupon")
            elif status == "refunded":
                if order_id not in refunded_at_gateway:
                    problems.append(f"{order_id} refunded here but not at the gateway")
                if held.get("sold") or held.get("reserved"):
                    problems.append(f"{order_id} refunded but holds keys {dict(held)}")
            elif status == "awaiting_payment":
                if paid or row["paid_at"] is not None or (order_id in ours and ours[order_id].paid):
                    problems.append(f"{order_id} paid but still awaiting_payment")
                if held != Counter(reserved=row["quantity"]):
                    problems.append(f"{order_id} awaiting payment with keys {dict(held)} (quantity {row['quantity']})")
            else:
                problems.append(f"{order_id} ended {status} (paid at gateway: {paid})")
            if row["paid_at"] is not None and status not in ("delivered", "refunded"):
                problems.append(f"{order_id} has paid_at but is {status}")
            if order_id in paid_at_gateway and status != "delivered":
                problems.append(f"{order_id} paid at the gateway but {status} here")
        problems.extend(f"ledger: {v}" for v in ledger_violations)
        sold_codes = [self.vault.decrypt(k["ciphertext"]) for k in keys if k["status"] == "sold"]
        if len(sold_codes) != len(set(sold_codes)):
            problems.append("a key code was sold twice")
        counts = Counter(r["status"] for r in db_orders.values())
        report = {
            "orders": len(db_orders),
            "statuses": dict(counts),
            "paid_at_gateway": len(paid_at_gateway),
            "refunded_at_gateway": len(refunded_at_gateway),
            "keys": dict(Counter(k["status"] for k in keys)),
            "coupons": len(coupons),
            "latency": latency_summary(
                [
                    (r["delivered_at"] - r["paid_at"]).total_seconds()
                    for r in db_orders.values()
                    if r["status"] == "delivered"
                ]
            ),
        }
        log(f"invariants: {report}")
        assert not problems, f"{len(problems)} invariant violations:\n" + "\n".join(problems[:40])
        return report

    async def check_mail(self, smtp: "SmtpServer", sku: str, orders: list[Order], timeout: float = 150) -> dict:
        """Every paid order's buyer got a delivery email (at least one), each copy with exactly the keys
        sold to that order, and nobody else got mail. Returns the copies and when the last one came."""
        assert self.vault is not None
        paid = {o.email: o for o in orders if o.paid}
        began = time.monotonic()
        while set(smtp.mailbox.by_recipient()) < set(paid) and time.monotonic() - began < timeout:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a retry's late second copy, if any
        conn = await self.db()
        try:
            rows = await conn.fetch(
                "SELECT k.order_id, k.ciphertext FROM card_keys k JOIN orders o "
                "ON o.id = k.order_id WHERE o.sku = $1 AND k.status = 'sold'",
                sku,
            )
        finally:
            await conn.close()
        sold: dict[str, set[str]] = {}
        for row in rows:
            sold.setdefault(row["order_id"], set()).add(self.vault.decrypt(row["ciphertext"]))
        mails = smtp.mailbox.by_recipient()
        problems = [f"no mail for {o.order_id}" for email, o in paid.items() if email not in mails]
        problems += [f"mail to {email}, who paid for nothing" for email in mails if email not in paid]
        for email, got in mails.items():
            order = paid.get(email)
            for mail in got if order else []:
                codes = {line for line in mail.body.splitlines() if line.startswith("CHAOS-")}
                if order.order_id not in mail.subject or codes != sold.get(order.order_id):
                    problems.append(f"mail for {order.order_id} holds {len(codes)} keys, not its own")
        copies = Counter(len(got) for got in mails.values())
        report = {
            "buyers_mailed": len(mails),
            "mails": sum(len(got) for got in mails.values()),
            "copies": dict(sorted(copies.items())),
            "last_mail_at": max((m.at for m in smtp.mailbox.mails), default=0.0),
        }
        log(f"mail: {report['buyers_mailed']} buyers, {report['mails']} mails, buyers by copies {report['copies']}")
        assert not problems, f"{len(problems)} mail problems:\n" + "\n".join(problems[:40])
        return report


def latency_summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": round(ordered[-1], 3)}


async def at_times(actions: list[tuple[float, Callable[[], Awaitable[None] | None]]]) -> None:
    """Run each action at its offset in seconds from now (sync or async)."""
    began = time.monotonic()
    for offset, action in actions:
        await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
        result = action()
        if asyncio.iscoroutine(result):
            await result
