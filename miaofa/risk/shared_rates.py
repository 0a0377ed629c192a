"""The per-buyer rates (attempts per address, email and device in a sliding minute) counted in
PostgreSQL, so every API process counts against one limit, not its own.

One statement per order attempt (the function `miaofa_rate_hit`, migration 0013): it locks the
attempt's keys in order, checks every window, and counts the attempt only when all pass, as the
in-process windows do (miaofa/risk/chain.py, which stay as a flood brake before any round trip).
Keys are the rule's name and a keyed hash; the database clock is the one clock of all processes.
"""

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa.errors import TooManyRequests
from miaofa.risk.limiters import WINDOW_SECONDS

PRUNE_EVERY_SECONDS = 600.0
_HIT = text("SELECT miaofa_rate_hit(CAST(:keys AS text[]), CAST(:limits AS int[]), :window)")
_PRUNE = text(
    "DELETE FROM rate_hits WHERE coalesce(hits[array_length(hits, 1)], 0) < extract(epoch FROM clock_timestamp()) - :w"
)


class SharedRates:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], window: float = WINDOW_SECONDS) -> None:
        self.sessionmaker, self.window = sessionmaker, window
        self._pruned_at = time.monotonic()  # not at start: N processes starting together would all prune

    async def hit(self, rates: list[tuple[str, int, str]]) -> None:
        """Count one attempt against each (key, limit, who); raise 429 naming the first full window."""
        rates = sorted((rate for rate in rates if rate[0] and rate[1] > 0), key=lambda rate: rate[0])
        if not rates:
            return
        async with self.sessionmaker.begin() as session:
            keys, limits = [key for key, _, _ in rates], [limit for _, limit, _ in rates]
            wait = await session.scalar(_HIT, {"keys": keys, "limits": limits, "window": self.window})
            if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
                self._pruned_at = time.monotonic()
                await session.execute(_PRUNE, {"w": self.window})
        if wait:
            who = await self._who(rates)
            raise TooManyRequests(f"too many orders from {who}; try again in {int(wait + 0.999)} s", retry_after=wait)

    async def _who(self, rates: list[tuple[str, int, str]]) -> str:
        """Which window is full (a second read, on the refusal path only)."""
        async with self.sessionmaker() as session:
            for key, limit, who in rates:
                live = await session.scalar(
                    text(
                        "SELECT count(*) FROM rate_hits, unnest(hits) AS h "
                        "WHERE key = :key AND h > extract(epoch FROM clock_timestamp()) - :w"
                    ),
                    {"key": key, "w": self.window},
                )
                if (live or 0) >= limit:
                    return who
        return "you"
