"""One change feed of order statuses per API process, fanned out to the live order streams.

A stream used to poll PostgreSQL twice a second, so a crowd of streams on one order was a crowd
of queries. Now one task reads the statuses of every watched order once per interval (one indexed
query, however many streams watch) and wakes the streams whose order changed; a new stream on a
watched order starts from what the feed knows, without a query. Streams are capped per order and
in total (per API process, as the per-address cap is).
"""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa import orders
from miaofa.errors import TooManyRequests

log = logging.getLogger("miaofa.api.feed")


class Watch:
    """One stream's view of its order: the last status the feed saw, and a wake-up when it changes."""

    def __init__(self, order_id: str, status: str | None) -> None:
        self.order_id = order_id
        self.status = status
        self._changed = asyncio.Event()

    def tell(self, status: str) -> None:
        self.status = status
        self._changed.set()

    async def changed(self, timeout: float) -> None:
        """Until the status changes, or `timeout` seconds (the stream checks its client meanwhile)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
        self._changed.clear()


class OrderFeed:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        interval: float,
        max_per_order: int,
        max_total: int,
    ) -> None:
        self.sessionmaker, self.interval = sessionmaker, interval
        self.max_per_order, self.max_total = max_per_order, max_total
        self._watches: dict[str, set[Watch]] = {}
        self._status: dict[str, str] = {}  # what the feed last read, for watched orders only
        self._total = 0
        self._task: asyncio.Task | None = None

    def watch(self, order_id: str) -> Watch:
        """A place for one more stream on this order, or 429 when a cap is reached."""
        if self.max_total > 0 and self._total >= self.max_total:
            raise TooManyRequests("too many live order streams right now; try again shortly", retry_after=5)
        watching = self._watches.setdefault(order_id, set())
        if self.max_per_order > 0 and len(watching) >= self.max_per_order:
            if not watching:
                del self._watches[order_id]
            raise TooManyRequests("too many live streams for this order; close one first", retry_after=5)
        watch = Watch(order_id, self._status.get(order_id))
        watching.add(watch)
        self._total += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="order-feed")
        return watch

    def unwatch(self, watch: Watch) -> None:
        watching = self._watches.get(watch.order_id)
        if watching is None or watch not in watching:
            return
        watching.discard(watch)
        self._total -= 1
        if not watching:
            del self._watches[watch.order_id]
            self._status.pop(watch.order_id, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self._watches:
                continue  # nobody watches: no query
            try:
                await self.read_once()
            except Exception as exc:  # the database may blink: the streams wait a round
                log.warning("order feed read failed (%s)", type(exc).__name__)

    async def read_once(self) -> None:
        async with self.sessionmaker() as session:
            found = await orders.statuses(session, list(self._watches))
        for order_id, status in found.items():
            if self._status.get(order_id) == status or order_id not in self._watches:
                continue
            self._status[order_id] = status
            for watch in self._watches[order_id]:
                if watch.status != status:
                    watch.tell(status)
