"""An in-process rate bound per key (a token bucket): what keeps rejected notifies from filling the
notify log. Each API process bounds its own share."""

import time
from collections.abc import Callable
from typing import Any


class RateBound:
    """At most `per_second` events per key per second on average, with bursts of that many (a token
    bucket per key). In-process: each API process bounds its own share."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = max(per_second, 0.0)
        self.burst = max(self.rate, 1.0) if self.rate > 0 else 0.0
        self.clock = clock
        self._buckets: dict[Any, tuple[float, float]] = {}

    def allow(self, key: Any) -> bool:
        if self.rate <= 0:
            return False
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed
