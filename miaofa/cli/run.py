"""`miaofa up` (the whole shop), each piece alone (`api`, `worker`, `sim`) and `miaofa db`."""

import socket

import typer

from miaofa.cli.common import _fail, _load_settings, _logging, _require, _settings, console

db_app = typer.Typer(help="Database chores.", no_args_is_help=True)


def up() -> None:
    """Start PostgreSQL, Temporal (with UI), the worker, the API and the simulator; Ctrl-C stops all."""
    settings = _load_settings()  # before anything starts
    from miaofa.devstack.up import run_up

    raise typer.Exit(run_up(settings))


def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    _require(settings, "database_url", "vault_key", "admin_token", "support_token")
    _logging(settings)
    # proxy_headers=False: uvicorn would take X-Forwarded-For from any local peer as the client; the
    # API reads it itself, from MIAOFA_TRUSTED_PROXIES only (api/client_ip.py).
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    if not settings.api_reuse_port:
        uvicorn.Server(config).run()
        return
    # N processes on one port (UP_APIS): the kernel spreads new connections over the listening ones, and a
    # process that died simply stops getting them. Bound here, listened on only once the app has started.
    uvicorn.Server(config).run(sockets=[reuse_port_socket(settings.api_host, settings.api_port)])


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def worker() -> None:
    """Run the Temporal worker."""
    from worker import run_on_uvloop, run_worker

    settings = _settings()
    _require(settings, "database_url", "vault_key")
    _logging(settings)
    try:
        run_on_uvloop(run_worker(settings))
    except KeyboardInterrupt:
        pass


def sim() -> None:
    """Run the payment gateway simulator (port 8010 by default)."""
    import uvicorn

    from miaofa.simulator.app import create_app

    settings = _settings()
    _require(settings, "sim_secret")
    _logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Never trust_client_clock here: paid_at is the simulator's own clock outside the tests.
    app = create_app(
        settings.sim_merchant_id,
        settings.sim_secret,
        settings.sim_public_url or settings.sim_url,
        state_file=settings.data_dir / "simulator.json",
        control_token=settings.sim_control_token,
    )
    uvicorn.run(app, host=settings.sim_host, port=settings.sim_port, log_level="warning", access_log=False)


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
