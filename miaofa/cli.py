"""The `miaofa` command: the whole shop (`up`), each piece alone, and merchant chores."""

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from miaofa.devstack.secrets import with_dev_defaults
from miaofa.errors import MiaofaError
from miaofa.settings import Settings, get_settings
from miaofa.crypto.vault import VaultKeyError

app = typer.Typer(help="Miaofa (秒发): automatic card-key delivery, every order a Temporal workflow.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database chores.", no_args_is_help=True)
keys_app = typer.Typer(help="Card-key inventory.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True, soft_wrap=True)


BAD_SETTINGS_EXIT = 2  # like a usage error: the command was never started
_TYPE_MESSAGES = {"int_parsing": "must be an integer", "float_parsing": "must be a number",
                  "bool_parsing": "must be true or false", "path_type": "must be a path"}


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem, named as its environment variable: `MIAOFA_API_PORT must be an integer`.

    Never echoes the value: it may be a secret.
    """
    lines = []
    for error in exc.errors():
        name = "MIAOFA_" + "__".join(str(part) for part in error["loc"]).upper()
        message = _TYPE_MESSAGES.get(error["type"]) or error["msg"].removeprefix("Value error, ")
        message = " ".join(message.split())
        # A whole-gateway check names its own setting (MIAOFA_ALIPAY__APP_ID …), not the group.
        lines.append(message if message.startswith("MIAOFA_") else f"{name} {message}")
    return lines


def _load_settings() -> Settings:
    """The settings from the environment, or one line per bad setting on stderr and exit status 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        for line in settings_problems(exc):
            print(line, file=sys.stderr)
        raise typer.Exit(BAD_SETTINGS_EXIT) from None


def _settings() -> Settings:
    return with_dev_defaults(_load_settings())


def _leave(code: int = 0) -> NoReturn:
    """Exit without the interpreter's teardown, for commands that held a Temporal client: its runtime
    threads can abort the teardown (SIGABRT after all was printed, temporalio/sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str) -> None:
    err.print(f"[red]Error:[/] {message}")
    raise typer.Exit(1)


def _require(settings: Settings, *names: str) -> None:
    missing = [f"MIAOFA_{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        _fail(f"{', '.join(missing)} not set (or run `miaofa up` once to create dev values).")


def _logging(settings: Settings) -> None:
    # Error types and ids only: exception messages (SQL parameters, emails) never reach a log.
    from miaofa.telemetry import logs

    logs.configure(settings.log_level, settings.log_format)


@app.command()
def up() -> None:
    """Start PostgreSQL, Temporal (with UI), the worker, the API and the simulator; Ctrl-C stops all."""
    settings = _load_settings()  # before anything starts
    from miaofa.devstack.up import run_up

    raise typer.Exit(run_up(settings))


@app.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    _require(settings, "database_url", "vault_key", "admin_token", "support_token")
    _logging(settings)
    # proxy_headers=False: uvicorn would take X-Forwarded-For from any local peer as the client; the
    # API reads it itself, from MIAOFA_TRUSTED_PROXIES only (api/client_ip.py).
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning",
                access_log=False, proxy_headers=False)


@app.command()
def worker() -> None:
    """Run the Temporal worker."""
    from worker import run_worker

    settings = _settings()
    _require(settings, "database_url", "vault_key")
    _logging(settings)
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        pass


@app.command()
def sim() -> None:
    """Run the payment gateway simulator (port 8010 by default)."""
    import uvicorn

    from miaofa.simulator.app import create_app

    settings = _settings()
    _require(settings, "sim_secret")
    _logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Never trust_client_clock here: paid_at is the simulator's own clock outside the tests.
    app = create_app(settings.sim_merchant_id, settings.sim_secret, settings.sim_public_url or settings.sim_url,
                     state_file=settings.data_dir / "simulator.json", control_token=settings.sim_control_token)
    uvicorn.run(app,
                host=settings.sim_host, port=settings.sim_port, log_level="warning", access_log=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""
    from miaofa.db import migrate

    settings = _settings()
    _require(settings, "database_url")
    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:
        _fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    console.print("Database is up to date.")


@keys_app.command("import")
def keys_import(file: Path = typer.Argument(..., help="Text file, one key a line, or CSV with a header."),
                sku: str = typer.Option(..., "--sku", help="The product the keys are for.")) -> None:
    """Import keys for a product; duplicates anywhere in the store are skipped."""
    settings = _settings()
    _require(settings, "database_url", "vault_key")
    if not file.is_file():
        _fail(f"{file} is not a readable file.")
    content_type = "text/csv" if file.suffix.lower() == ".csv" else "text/plain"
    try:
        result, seconds = asyncio.run(_import(settings, file.read_bytes(), content_type, sku))
    except MiaofaError as exc:
        _fail(exc.detail)
    except VaultKeyError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot reach the database: {exc.strerror or exc}")
    console.print(f"Imported {result.imported} keys, skipped {result.duplicates} duplicates "
                  f"in {seconds:.1f} s.")


async def _import(settings: Settings, data: bytes, content_type: str, sku: str):
    from miaofa import catalog, inventory
    from miaofa.db.engine import make_engine, make_sessionmaker
    from miaofa.crypto.vault import Vault

    vault = Vault(settings.vault_key)
    keys = inventory.parse_keys(data, content_type)
    engine = make_engine(settings.database_url, pool_size=1)
    started = time.perf_counter()
    try:
        async with make_sessionmaker(engine).begin() as session:
            product = await catalog.get_product(session, sku)
            with Progress(TextColumn("Importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task("keys", total=len(set(keys)))
                result = await inventory.import_keys(
                    session, vault, product.id, keys,
                    on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    finally:
        await engine.dispose()
    return result, time.perf_counter() - started


from miaofa.cli_reconcile import reconcile_app, schedules_app  # noqa: E402  (they use the helpers above)

app.add_typer(schedules_app, name="schedules")
app.add_typer(reconcile_app, name="reconcile")

from miaofa.cli_notify import gateways, notify_app  # noqa: E402

app.add_typer(notify_app, name="notify")
app.command("gateways")(gateways)

from miaofa.cli_support import audit_log, orders_app, support_app  # noqa: E402
from miaofa.cli_tokens import tokens_app  # noqa: E402

app.add_typer(support_app, name="support")
app.add_typer(orders_app, name="orders")
app.add_typer(tokens_app, name="tokens")
app.command("audit")(audit_log)

from miaofa.bench.cli import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

if __name__ == "__main__":
    app()
