"""Small in-memory limiters, per API process: a sliding window of hits, one pass per interval, a number
of concurrent holders; and the buyer-endpoint guards built of them.

They brake bursts; what must hold across API processes is counted in PostgreSQL instead
(miaofa/risk/admission.py). A client address is counted by its bucket (`client_bucket`), and by the
networks above it (`network_buckets`); an email only ever appears as its buyer hash.
"""

import ipaddress
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from miaofa.errors import TooManyRequests

if TYPE_CHECKING:
    from miaofa.settings import Settings

WINDOW_SECONDS = 60.0


def client_bucket(ip: str, prefix: int = 64) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 address's /64 (or a coarser `prefix`)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return str(address)


def network_buckets(ip: str) -> tuple[str, str]:
    """The networks above one client, which the coarser caps count: an IPv6 address's /56 (a home's
    usual delegation: 256 /64s) and /48 (a site's, or a 6to4 `2002:<v4>::/48`). An IPv4 address is
    its own network here (its caps are the address's)."""
    return client_bucket(ip, 56), client_bucket(ip, 48)


class SlidingWindow:
    """At most `limit` hits per key in any `window` seconds (a log of hit times per key).

    Memory is bounded: past `max_keys` keys, the least recently hit are dropped (they can only
    have been under their limit for longer)."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS, max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may hit again; 0 when it may now."""
        if self.limit <= 0:
            return 0.0
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return 0.0 if len(hits) < self.limit else hits[0] + self.window - now

    def hit(self, key: str, now: float) -> None:
        if self.limit <= 0:
            return
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        hits.append(now)

    def unhit(self, key: str) -> None:
        """Take back the latest hit of `key` (an attempt the shop did not serve: answered busy)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()


class MinInterval:
    """One pass per key every `seconds` (e.g. "I have paid" per order)."""

    def __init__(self, seconds: float, max_keys: int = 100_000) -> None:
        self.seconds, self.max_keys = seconds, max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0 and counts the pass when `key` may pass now; otherwise the seconds left to wait."""
        if self.seconds <= 0:
            return 0.0
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return self.seconds - (now - last)
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return 0.0


class Slots:
    """At most `limit` concurrent holders per key (e.g. live event streams per client address)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        held = self._held.get(key, 0)
        if self.limit > 0 and held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


class Guards:
    """This API process's buyer-endpoint guards, built once from the settings."""

    def __init__(self, settings: "Settings") -> None:
        self.streams = Slots(settings.sse_max_streams_per_ip)
        self.check_payment = MinInterval(settings.check_payment_interval_seconds)


class LookupRate:
    """`POST /orders/lookup`: per client address in a sliding minute, per email in a sliding hour.

    Counted alike whether the email has orders or not, so the limit reveals nothing."""

    def __init__(self, settings: "Settings") -> None:
        self._per_ip = SlidingWindow(settings.lookup_rate_per_ip_per_minute, 60.0)
        self._per_email = SlidingWindow(settings.lookup_rate_per_email_per_hour, 3600.0)

    def check(self, client: str | None, buyer_hash: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if client is not None and (wait := self._per_ip.wait(client, now)):
            raise TooManyRequests(
                f"too many lookups from your address; try again in {int(wait + 0.999)} s", retry_after=wait
            )
        if wait := self._per_email.wait(buyer_hash, now):
            raise TooManyRequests(
                f"too many lookups for this email; try again in {int(wait + 0.999)} s", retry_after=wait
            )
        if client is not None:
            self._per_ip.hit(client, now)
        self._per_email.hit(buyer_hash, now)
