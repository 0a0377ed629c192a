"""Keys imported anywhere refresh every API process's stock hint at once (LISTEN miaofa_stock).

The hint refreshes itself every second; new keys would otherwise meet a second of "sold out" on the
API processes that did not import them. The notification comes from a trigger on card_keys (migration
0013), so the CLI's imports count too. One connection per process, held from the pool; a lost one is
opened again after a second.
"""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from api.stock_hint import StockHint

CHANNEL = "miaofa_stock"
log = logging.getLogger("miaofa.api.hot")


class StockEvents:
    def __init__(self, engine: AsyncEngine, hint: StockHint) -> None:
        self.engine, self.hint = engine, hint
        self._task: asyncio.Task | None = None
        self.listening = asyncio.Event()  # the tests wait for it

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stock-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database blinked: the once-a-second refresh still runs
                log.warning("stock notifications lost (%s); listening again", type(exc).__name__)
            self.listening.clear()
            await asyncio.sleep(1)

    async def _listen(self) -> None:
        changed = asyncio.Event()

        def notified(*_: object) -> None:
            changed.set()

        async with self.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.add_listener(CHANNEL, notified)
            self.listening.set()
            try:
                while not raw.is_closed():
                    try:
                        await asyncio.wait_for(changed.wait(), 5)
                    except TimeoutError:
                        continue
                    changed.clear()  # notifications during the refresh bring one more
                    if self.hint.refreshing:
                        await self.hint.refresh()
            finally:
                if not raw.is_closed():
                    await raw.remove_listener(CHANNEL, notified)
