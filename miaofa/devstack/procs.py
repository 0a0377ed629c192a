"""Child processes that die with their parent and stop in order."""

import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If `miaofa up` is killed outright, the kernel still stops its children.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def as_user(user: str | None) -> dict:
    """Popen arguments that run a child as `user` with that user's group only (not root's groups)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(
    args: list[str], *, log: Path, env: dict[str, str] | None = None, user: str | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Logs are the owner's alone (0600, also an older, wider one), and so is whatever the child
    # creates (umask 077): the Temporal database, the simulator's books.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    identity = as_user(user)
    os.fchmod(fd, 0o600)
    with open(fd, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            **identity,
            start_new_session=True,  # Ctrl-C reaches `up` alone, which then stops children in order
            preexec_fn=_die_with_parent,
            umask=0o077,
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            program = proc.args if isinstance(proc.args, str | bytes | os.PathLike) else proc.args[0]
            raise RuntimeError(f"{what or os.fsdecode(program)} exited with code {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"{what or 'service'} did not open {host}:{port} within {timeout:.0f} s")
