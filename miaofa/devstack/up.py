"""`miaofa up`: the whole shop on one machine, in the foreground, stopped cleanly on Ctrl-C.

Once the shop is up, `up` supervises it: any child that dies — worker, API, simulator, and also
the Temporal dev server or PostgreSQL — is started again with a backoff (0.5 s doubling to 30 s,
back to 0.5 s after a minute up), with one line printed and written to the child's log. Orders in
flight finish: Temporal retries their work on the restarted worker. A child that dies while the
shop is still starting stops `up` instead, with the reason.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
from rich.console import Console

from miaofa.db import migrate
from miaofa.devstack import procs
from miaofa.devstack.demo import seed_demo
from miaofa.devstack.postgres import LocalPostgres
from miaofa.devstack.secrets import child_env, make_private_dir, postgres_password, with_dev_defaults
from miaofa.devstack.supervisor import Supervised
from miaofa.devstack.temporal import dev_server_args, start_dev_server
from miaofa.devstack.uiproxy import hidden_ports
from miaofa.settings import Settings

console = Console()


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _wait_healthy(url: str, children: dict[str, subprocess.Popen], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in children.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} exited with code {proc.returncode}; see data/logs/{name}.log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} was not healthy within {timeout:.0f} s")


def _check_ports_free(settings: Settings, own_database: bool, catch_mail: bool = False) -> None:
    ports = {
        "API": settings.api_port,
        "simulator": settings.sim_port,
        "Temporal": int(settings.temporal_address.rsplit(":", 1)[1]),
        "Temporal UI": settings.temporal_ui_port,
    }
    if own_database:
        ports["PostgreSQL"] = settings.pg_port
    if catch_mail:
        ports["mail catcher"] = settings.mail_catcher_port
    for name, port in ports.items():
        if procs.port_open("127.0.0.1", port):
            raise RuntimeError(f"port {port} ({name}) is already in use; is another `miaofa up` running?")


def worker_metrics_addresses(settings: Settings) -> list[str]:
    """One metrics address per worker process: the setting's, then the ports after it ("" for all: off)."""
    address = settings.worker_metrics_address
    if not address:
        return [""] * settings.up_workers
    host, _, port = address.rpartition(":")
    return [f"{host}:{int(port) + number}" for number in range(settings.up_workers)]


def make_private(data: Path) -> None:
    """The data dir is the owner's alone: 0700 dirs, 0600 files (also those an older version left wider).

    It holds the dev secrets, the Temporal database (every order's history), the simulator's books
    and logs; PostgreSQL keeps its own dir 0700.
    """
    make_private_dir(data)
    make_private_dir(data / "logs")
    for path in [*data.iterdir(), *(data / "logs").iterdir()]:
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


def ui_proxy_args(settings: Settings, embedded_ui: int) -> list[str]:
    """The UI's read-only proxy on TEMPORAL_UI_PORT, in front of the embedded UI."""
    args = [sys.executable, "-m", "miaofa.devstack.uiproxy", "--port", str(settings.temporal_ui_port)]
    args += ["--upstream", f"http://127.0.0.1:{embedded_ui}"]
    return args + (["--writes"] if settings.temporal_ui_writes else [])


def run_up(settings: Settings) -> int:
    started = time.monotonic()
    # A shell starts background jobs with SIGINT ignored; `kill -INT` must still stop the shop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    own_database = not os.environ.get("MIAOFA_DATABASE_URL")
    settings = with_dev_defaults(settings, create=True)  # generates the dev secrets on first start
    catch_mail = not settings.smtp_url  # no SMTP relay: mail is caught locally under data/mail/
    if catch_mail:
        settings = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{settings.mail_catcher_port}"})
    data = settings.data_dir.resolve()
    logs = data / "logs"
    make_private(data)
    children: dict[str, subprocess.Popen] = {}
    workers = ["worker", *(f"worker-{number}" for number in range(2, settings.up_workers + 1))]
    apis = ["api", *(f"api-{number}" for number in range(2, settings.up_apis + 1))]
    metrics = worker_metrics_addresses(settings)
    watched: list[Supervised] = []
    postgres: LocalPostgres | None = None
    code = 0
    try:
        _check_ports_free(settings, own_database, catch_mail)
        if own_database:
            console.print("Starting PostgreSQL…")
            postgres = LocalPostgres(
                data / "postgres", settings.pg_port, logs / "postgres.log", password=postgres_password(settings)
            )
            postgres.start()
            postgres.ensure_database()
        console.print("Applying migrations…")
        migrate.upgrade(settings.database_url)
        if asyncio.run(seed_demo(settings.database_url, settings.vault_key)):
            console.print("Created the demo product [bold]demo-gift-card[/] with 100 demo keys.")
        console.print("Starting Temporal…")
        temporal_port = int(settings.temporal_address.rsplit(":", 1)[1])
        # The embedded UI and the HTTP API where no browser connects; browsers get the UI through the
        # read-only proxy on TEMPORAL_UI_PORT (miaofa/devstack/uiproxy.py).
        embedded_ui, http_api = hidden_ports(2)
        codec = f"{settings.api_url}/codec"
        temporal_args = dev_server_args(data / "temporal.db", temporal_port, embedded_ui, codec, http_api)
        children["temporal"] = start_dev_server(
            data / "temporal.db",
            temporal_port,
            embedded_ui,
            logs / "temporal.log",
            codec_endpoint=codec,
            http_port=http_api,
        )
        starters = {"temporal": lambda: procs.spawn(temporal_args, log=logs / "temporal.log")}
        no_secrets = {name: value for name, value in os.environ.items() if not name.startswith("MIAOFA_")}
        starters["ui"] = _starter(ui_proxy_args(settings, embedded_ui), logs / "ui.log", no_secrets)
        children["ui"] = starters["ui"]()
        procs.wait_port("127.0.0.1", settings.temporal_ui_port, 30, children["ui"], "the Temporal UI proxy")
        if postgres is not None:
            starters["postgres"] = postgres.spawn
        env = child_env(settings)
        if catch_mail:
            mail_args = [
                sys.executable,
                "-m",
                "miaofa.devstack.mailcatch",
                "--port",
                str(settings.mail_catcher_port),
                "--dir",
                str(data / "mail"),
            ]
            starters["mail"] = _starter(mail_args, logs / "mail.log", env)
            children["mail"] = starters["mail"]()
        for name in ("sim", *workers, *apis):
            command = "worker" if name in workers else "api" if name in apis else name
            # Each worker serves its own metrics, on the next port after the previous worker's.
            own_env = {**env, "MIAOFA_WORKER_METRICS_ADDRESS": metrics[workers.index(name)]} if name in workers else env
            if name in apis and len(apis) > 1:  # all on API_PORT (miaofa/cli/run.py)
                own_env = {**env, "MIAOFA_API_REUSE_PORT": "true"}
            starters[name] = _starter([sys.executable, "-m", "miaofa.cli", command], logs / f"{name}.log", own_env)
            children[name] = starters[name]()
        _wait_healthy(f"{settings.api_url}/healthz", children)
        _print_ready(settings, time.monotonic() - started, catch_mail)
        now = time.monotonic()
        running = dict(children)
        if postgres is not None:
            assert postgres.proc is not None  # started above
            running["postgres"] = postgres.proc
        watched = [Supervised(name, start, running[name], started_at=now) for name, start in starters.items()]
        while True:
            for child in watched:
                line = child.check(time.monotonic())
                if line:
                    _report(line, logs / f"{child.name}.log")
            time.sleep(0.2)
    except KeyboardInterrupt:
        console.print("\nStopping…")
    except Exception as exc:  # one line, then a clean stop
        console.print(f"[red]Error:[/] {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan anything
        children.update({child.name: child.proc for child in watched if child.name != "postgres"})
        for name in (*apis, *workers, "sim", "mail", "ui", "temporal"):
            if name in children:
                procs.stop(children[name])
        if postgres is not None:
            postgres.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        console.print("Stopped.")
    return code


def _starter(args: list[str], log: Path, env: dict[str, str]) -> Callable[[], subprocess.Popen]:
    return lambda: procs.spawn(args, log=log, env=env)


def _report(line: str, log: Path) -> None:
    """One line on the console, and the same line in the child's log, where its crash is."""
    console.print(line, markup=False, highlight=False)
    try:
        with open(log, "a") as out:
            out.write(f"--- miaofa up: {line}\n")
    except OSError:
        pass


def _mail_destination(settings: Settings, caught: bool) -> str:
    if caught:
        return f"caught locally, one .eml file each in {(Path(settings.data_dir) / 'mail').resolve()}"
    parsed = urlparse(settings.smtp_url)
    return f"sent through {parsed.scheme}://{parsed.hostname}:{parsed.port or ''} (SMTP_URL)"  # no password shown


def _print_ready(settings: Settings, seconds: float, catch_mail: bool = False) -> None:
    api = settings.api_url
    console.print(f"\n[bold green]Miaofa is up[/] in {seconds:.1f} s.\n")
    processes = f" ({settings.up_apis} API processes on one port)" if settings.up_apis > 1 else ""
    console.print(f"  Shop              {api}/{processes}")
    console.print(f"  API docs          {api}/docs")
    writes = "writes on: MIAOFA_TEMPORAL_UI_WRITES" if settings.temporal_ui_writes else "read-only"
    console.print(f"  Temporal UI       http://127.0.0.1:{settings.temporal_ui_port} ({writes})")
    console.print(f"  Codec sign-in     {api}/codec/login (for decoded payloads in the UI: a staff token)")
    console.print(f"  Simulator         {settings.sim_url}")
    console.print(f"  Mail              {_mail_destination(settings, catch_mail)}")
    console.print(f"  Metrics (API)     {api}/metrics")
    addresses = worker_metrics_addresses(settings)
    shown = (
        "  ".join(f"http://{address}/metrics" for address in addresses)
        if addresses[0]
        else "off (MIAOFA_WORKER_METRICS_ADDRESS is empty)"
    )
    console.print(f"  Metrics (worker{'s' if len(addresses) > 1 else ''}) {' ' if len(addresses) == 1 else ''}{shown}")
    console.print(f"  Admin token       {settings.admin_token}")
    console.print(f"  Support token     {settings.support_token}")
    console.print(f"\n  Data and logs in {Path(settings.data_dir).resolve()}. Press Ctrl-C to stop.\n")
