"""Seconds from `miaofa up` to a green /healthz: on a fresh data dir, then restarted on that data.

Each start is a stack of its own (temp dir, free ports, the bench's settings and `--set`), stopped
with SIGINT and started again on the same data; `--at REV` times another revision's start-up.
"""

from typing import Any

from miaofa.bench.runner import Bench
from miaofa.bench.stack import StartedStack

HEALTH_POLL = 0.05  # seconds between two /healthz: the resolution of the measure


async def run(b: Bench, restarts: int, overrides: dict[str, str], keep_data: bool, at: str | None) -> None:
    stack = StartedStack(overrides, keep_data, at)
    stack.health_poll = HEALTH_POLL
    task = b.progress.add_task("starts", total=1 + restarts)
    starts: list[dict[str, Any]] = []
    # Started and stopped from the main thread, blocking the loop (nothing else runs meanwhile): the
    # stack's children get SIGTERM when the thread that spawned them ends (PR_SET_PDEATHSIG).
    try:
        for number in range(1 + restarts):
            if number == 0:
                stack.start()
            else:
                stack.halt()
                stack.restart()
            label = "fresh data dir" if number == 0 else f"restart {number}"
            starts.append({"start": label, "seconds": round(stack.up_seconds, 2)})
            b.show(f"`miaofa up` → /healthz 200, {label}", f"{stack.up_seconds:.1f} s")
            b.progress.advance(task)
    except BaseException:
        stack.failed = True  # keep its logs
        raise
    finally:
        stack.stop()
    b.metrics.update({"starts": starts, "code": stack.code, "overrides": stack.values})
