"""A run of one scenario, whatever it measures.

Note the machine and the command → start a stack of its own (`--start`) or use the one the settings
name → warm up with one order → the scenario → read the shop's timestamps from PostgreSQL → stop
the started stack (always) → print a table with PASS/FAIL per target → write JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from miaofa.bench.base import BenchError, err, out
from miaofa.bench.machine import command_line, component_cpu, cpu_ticks, git_state, loadavg, machine, versions
from miaofa.bench.shop_client import Shop, ShopDB
from miaofa.bench.stack import (
    IsolatedSettings,
    StartedStack,
    external_settings,
    pg_url,
    risk_fields,
    settings_record,
)
from miaofa.settings import Settings


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
        return {"<=": self.value <= self.limit, ">=": self.value >= self.limit, "==": self.value == self.limit}[self.op]


class Bench:
    """What a scenario works with: the shop, its database, progress, and the result being built."""

    def __init__(self, scenario: str, settings: Settings, started: StartedStack | None, params: dict[str, Any]) -> None:
        self.scenario = scenario
        self.settings = settings
        self.started = started
        self.params = params
        self.metrics: dict[str, Any] = {}
        self.checks: list[Check] = []
        self.rows: list[tuple[str, str, str, str]] = []  # measure, value, target, result
        self.notes: list[str] = []
        self.facts: dict[str, Any] = {}
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        )
        self.shop: Shop
        self.db: ShopDB
        self.pool: asyncpg.Pool | None = None

    # the result

    def show(self, measure: str, value: str) -> None:
        self.rows.append((measure, value, "", ""))

    def check(
        self,
        measure: str,
        value: float | None,
        op: str,
        limit: float,
        unit: str,
        shown: str | None = None,
        aim: str = "",
    ) -> None:
        check = Check(measure, value, op, limit, unit)
        self.checks.append(check)
        target = f"{op} {limit:g} {unit}".replace("<=", "≤").replace(">=", "≥").replace("==", "=") + aim
        text = shown if shown is not None else ("no value" if value is None else f"{value:g} {unit}")
        self.rows.append((measure, text, target, "[green]PASS[/]" if check.passed else "[red]FAIL[/]"))

    def _check_cpu_per_order(self) -> None:
        """Issue 21's target, where a started stack delivered orders: CPU per order, every process summed."""
        stack = (self.facts.get("cpu") or {}).get("stack_seconds")
        delivered = self.metrics.get("delivered")
        if stack and isinstance(delivered, int) and delivered > 0:
            per_order = round(1000 * sum(stack.values()) / delivered, 1)
            self.metrics["cpu_ms_per_delivered_order"] = per_order
            self.check("CPU per delivered order, every process of the stack", per_order, "<=", 50, "ms")

    def note(self, text: str) -> None:
        self.notes.append(text)

    # the shop

    async def warm_up(self) -> None:
        """One order bought, paid and delivered before measuring: connections, imports, the worker's caches."""
        sku = await self.shop.create_product(1, "warmup")
        sent = await self.shop.create_order(sku, 0)
        if sent.status != 201:
            raise BenchError(f"warm-up order refused: {sent.status} {sent.error}")
        assert sent.order_id is not None  # a 201 carries it
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

    def _cpu_account(
        self, ticks: tuple[int, int] | None, stack_before: dict[str, float], client_before: float, wall_before: float
    ) -> dict[str, Any]:
        """Where the machine's CPU went while measuring: the stack's parts, this client, other work."""
        account: dict[str, Any] = {
            "wall_seconds": round(time.monotonic() - wall_before, 2),
            "bench_client_seconds": round(time.process_time() - client_before, 2),
        }
        after = cpu_ticks()
        if ticks and after and after[1] > ticks[1]:
            hz = os.sysconf("SC_CLK_TCK")
            account["machine_busy_share"] = round((after[0] - ticks[0]) / (after[1] - ticks[1]), 3)
            account["machine_busy_seconds"] = round((after[0] - ticks[0]) / hz, 2)
        stack_after = component_cpu(self.started.pid() if self.started else None)
        if stack_after:
            account["stack_seconds"] = {
                name: round(stack_after[name] - stack_before.get(name, 0.0), 2) for name in sorted(stack_after)
            }
            if "machine_busy_seconds" in account:
                # What else ran meanwhile (other people's work on a shared machine), roughly.
                account["other_work_seconds"] = round(
                    account["machine_busy_seconds"]
                    - account["bench_client_seconds"]
                    - sum(account["stack_seconds"].values()),
                    2,
                )
        return account

    async def _open(self) -> None:
        self.shop = Shop(self.settings)
        try:
            health = await self.shop.http.get(f"{self.shop.api}/healthz", timeout=10)
        except httpx.HTTPError as exc:
            raise BenchError(
                f"the shop at {self.shop.api} does not answer ({type(exc).__name__}); "
                "start it with `miaofa up`, or pass --start"
            ) from None
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

    async def run(self, body: Callable[[Bench], Awaitable[None]], warmup: bool, shop: bool = True) -> None:
        try:
            if shop:
                await self._open()
                self.facts["postgres"] = await self.db.facts()
                self.facts["simulator_control"] = await self.shop.get_control()
            with self.progress:
                if warmup and shop:
                    await self.warm_up()
                self.facts["load_at_start"] = loadavg()
                ticks, cpu = cpu_ticks(), component_cpu(self.started.pid() if self.started else None)
                client_cpu, wall = time.process_time(), time.monotonic()
                self.facts["measure_started_at"] = datetime.now(UTC).isoformat()
                await body(self)
                self._keep_logs_on_trouble()
                self.facts["measure_finished_at"] = datetime.now(UTC).isoformat()
                self.facts["load_at_end"] = loadavg()
                self.facts["cpu"] = self._cpu_account(ticks, cpu, client_cpu, wall)
                self._check_cpu_per_order()
        finally:
            await self._close()


def default_json_path(scenario: str, out_dir: Path) -> Path:
    return out_dir / f"bench-{scenario}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def run_scenario(
    scenario: str, options: Options, params: dict[str, Any], body: Callable[[Bench], Awaitable[None]], shop: bool = True
) -> int:
    """Run one scenario end to end; returns the exit status (0 when it ran, whatever PASS/FAIL says).

    `shop=False` for a scenario that brings what it measures itself (a PostgreSQL of its own, the
    simulator in-process, `miaofa up` started and timed): no stack to reach, no warm-up order.
    """
    record: dict[str, Any] = {
        "scenario": scenario,
        "command": command_line(),
        "argv": sys.argv,
        "started_at": datetime.now(UTC).isoformat(),
        "git": git_state(),
        "machine": machine(),
        "load_before": loadavg(),
        "versions": versions(),
        "params": params,
    }
    json_path = options.json_path or default_json_path(scenario, options.out_dir)
    stack = StartedStack(options.overrides, options.keep_data, options.at) if options.start else None
    bench: Bench | None = None
    code = 0
    previous_term = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # Run in the background, a shell leaves SIGINT ignored, and `miaofa up` would inherit that.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    settings: Settings
    try:
        if not shop:
            settings = IsolatedSettings()
            record["stack"] = {"started": False, "shop": False}
        elif stack is not None:
            settings = stack.start()
            record["stack"] = {
                "started": True,
                "code": stack.code,
                "overrides": stack.values,
                "up_seconds": round(stack.up_seconds, 1),
                "log": str(stack.log),
            }
        else:
            if options.overrides or options.at:
                raise BenchError("--set and --at apply to a stack the bench starts: add --start")
            settings = external_settings()
            record["stack"] = {"started": False}
            _warn_external(settings)
        if shop:
            record["settings"] = settings_record(settings)
        bench = Bench(scenario, settings, stack, params)
        asyncio.run(bench.run(body, options.warmup, shop))
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
    record["finished_at"] = datetime.now(UTC).isoformat()
    record["load_after"] = loadavg()
    if bench is not None:
        record.update(bench.facts)
        record["metrics"] = bench.metrics
        record["targets"] = [
            {"name": c.name, "value": c.value, "op": c.op, "limit": c.limit, "unit": c.unit, "pass": c.passed}
            for c in bench.checks
        ]
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
    err.print(
        f"Against the running shop at {settings.api_url} (simulator {settings.sim_url}); "
        "pass --start for a stack of its own."
    )
    per_address = {name: getattr(settings, name) for name in risk_fields() if "_ip" in name and getattr(settings, name)}
    if per_address and not getattr(settings, "risk_exempt_networks", ""):
        err.print(
            "[yellow]Warning:[/] POST /orders has risk limits per client address "
            f"({', '.join(f'{k}={v}' for k, v in per_address.items())}, as configured here) and every "
            "benchmark buyer comes from this machine (each with an email of its own), so the running "
            "shop may refuse orders (429s in the answers). Start it with "
            "MIAOFA_RISK_EXEMPT_NETWORKS=127.0.0.0/8, or pass --start (limits off)."
        )


def _print_table(record: dict[str, Any], bench: Bench) -> None:
    m = record["machine"]
    git = record["git"]
    out.print(f"\n[bold]miaofa bench {bench.scenario}[/]  {record['command']}")
    code = record["stack"].get("code") or {}
    where = (
        f"started stack, code from {code.get('source')} ({code.get('commit')}{', dirty' if code.get('dirty') else ''})"
        if record["stack"]["started"]
        else bench.settings.api_url
        if record["stack"].get("shop", True)
        else "no shop: its own services"
    )
    out.print(
        f"{m['cores']} cores, {m['memory_total_gib']} GiB · load {record['load_before']} → "
        f"{record['load_after']} · bench at commit {git['commit']}{' (dirty)' if git['dirty'] else ''}"
        f" · {where}"
    )
    cpu = record.get("cpu") or {}
    if "machine_busy_share" in cpu:
        parts = ", ".join(f"{name} {sec:g}" for name, sec in (cpu.get("stack_seconds") or {}).items() if sec)
        out.print(
            f"CPU while measuring ({cpu['wall_seconds']} s): machine {cpu['machine_busy_share']:.0%} busy"
            + (f"; stack {parts} s" if parts else "")
            + f"; bench client {cpu['bench_client_seconds']} s"
            + (f"; other work ≈ {cpu['other_work_seconds']} s" if "other_work_seconds" in cpu else "")
        )
    table = Table(show_header=True, header_style="bold")
    for column in ("measure", "value", "target", "result"):
        table.add_column(column, overflow="fold")
    for row in bench.rows:
        table.add_row(*row)
    out.print(table)
    for text in bench.notes:
        out.print(f"  · {text}")
