"""Keep a child process running: when it dies, start it again after a backoff, and say so in one line."""

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_DELAY = 0.5  # seconds before the first restart
MAX_DELAY = 30.0  # the delay doubles up to this
STABLE_AFTER = 60.0  # a child that stayed up this long starts again from FIRST_DELAY


@dataclass
class Supervised:
    name: str
    start: Callable[[], subprocess.Popen]  # launches the child, without waiting for it to be ready
    proc: subprocess.Popen
    started_at: float
    delay: float = FIRST_DELAY
    restart_at: float | None = None  # set while the child is dead and waits for its restart
    restarts: int = field(default=0)

    def check(self, now: float) -> str | None:
        """Notice a death (and schedule the restart) or restart when due; returns the line to report."""
        if self.restart_at is None:
            code = self.proc.poll()
            if code is None:
                return None
            if now - self.started_at >= STABLE_AFTER:
                self.delay = FIRST_DELAY
            wait, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
            self.restart_at = now + wait
            return f"{self.name} exited with code {code}; restarting in {wait:g} s"
        if now < self.restart_at:
            return None
        self.restart_at = None
        self.started_at = now
        self.restarts += 1
        try:
            self.proc = self.start()
        except Exception as exc:  # e.g. the binary vanished: count it as another death
            wait, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
            self.restart_at = now + wait
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"{self.name} did not start ({reason}); retrying in {wait:g} s"
        return None
