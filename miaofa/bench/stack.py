"""The stack a run measures: one of its own (`--start`: `miaofa up` in a temp dir on free ports), or
the one the settings name; and the settings as a run records them."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy.engine import make_url

from miaofa.bench.base import REPO, BenchError, err
from miaofa.bench.machine import git_state
from miaofa.devstack import procs
from miaofa.devstack.secrets import with_dev_defaults
from miaofa.settings import Settings, get_settings

SECRET_PARTS = ("token", "secret", "vault_key", "password")
HEALTH_TIMEOUT = 180.0  # a fresh stack on a busy 2-core machine: initdb, migrations, Temporal
STOP_TIMEOUT = 90.0


class IsolatedSettings(Settings):
    """Settings from the given values only: a started stack must not pick up this shell's MIAOFA_*."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
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
    # Unbounded order starts: bursts and flash-sale buyers do not retry a busy answer. See past capacity
    # with `--set ORDER_STARTS_PER_PROCESS=2` (docs/benchmarks.md).
    defaults["order_starts_per_process"] = "0"
    return defaults


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
        self.env: dict[str, str] = {}
        self.health_poll = 0.2  # seconds between two /healthz while it starts
        self.up_seconds = 0.0

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
            "data_dir": str(self.root / "data"),
            "api_port": str(api),
            "sim_port": str(sim),
            "sim_url": f"http://127.0.0.1:{sim}",
            "temporal_address": f"127.0.0.1:{temporal}",
            "temporal_ui_port": str(ui),
            "pg_port": str(pg),
            "worker_metrics_address": f"127.0.0.1:{metrics}",
            **stack_defaults(),
            **self.overrides,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
        env.update({f"MIAOFA_{name.upper()}": value for name, value in self.values.items()})
        if self.at:
            code = self._export(self.at)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        self.env = env
        err.print(f"Starting a stack of its own (`miaofa up`, data in {self.root}) …")
        return self._spawn()

    def restart(self) -> Settings:
        """`miaofa up` again on the same data dir and ports, once `halt()` stopped it."""
        assert self.root is not None and (self.proc is None or self.proc.poll() is not None)
        err.print("Starting the stack again on its data …")
        return self._spawn()

    def _spawn(self) -> Settings:
        assert self.root is not None
        # Strings, as in the environment: pydantic converts them (its typed __init__ does not tell mypy so).
        settings = IsolatedSettings(**cast(dict[str, Any], self.values))
        started = time.monotonic()
        # From the main thread: its children get SIGTERM if this process dies (PR_SET_PDEATHSIG).
        self.proc = procs.spawn([sys.executable, "-m", "miaofa.cli", "up"], log=self.log, env=self.env, cwd=self.root)
        health = f"{settings.api_url}/healthz"
        while True:
            if self.proc.poll() is not None:
                self.failed = True
                raise BenchError(
                    f"`miaofa up` exited with code {self.proc.returncode}; see {self.log} "
                    f"and {self.root / 'data' / 'logs'}"
                )
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > HEALTH_TIMEOUT:
                self.failed = True
                raise BenchError(f"{health} was not healthy within {HEALTH_TIMEOUT:.0f} s; see {self.log}")
            time.sleep(self.health_poll)
        self.up_seconds = time.monotonic() - started
        err.print(f"Stack up in {self.up_seconds:.1f} s.")
        return with_dev_defaults(settings)

    def _export(self, rev: str) -> Path:
        """The shop's code at `rev` (git archive), ahead of the installed package on PYTHONPATH."""
        assert self.root is not None
        code = self.root / "code"
        code.mkdir()
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            archive = subprocess.run(
                ["git", "archive", "--format=tar", sha], cwd=REPO, check=True, capture_output=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise BenchError(f"cannot export --at {rev!r} from {REPO}: {exc}") from None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(code, filter="data")
        self.code = {"source": f"git archive {rev}", "commit": sha, "dirty": False}
        return code

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        """Stop `miaofa up`, then remove its temp dir (kept on trouble or with --keep-data)."""
        self.halt()
        if self.root is None:
            return
        if self.keep_data or self.failed:
            err.print(f"Stack data and logs kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop `miaofa up` with SIGINT (it stops its children in order); the data stays."""
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
