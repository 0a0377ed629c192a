"""Hot catalog: products and available stock kept in the API process.

It lets POST /orders find the product and answer sold-out without a database round trip. Orders
in flight claim stock here first, so in a flash sale only as many buyers as there are keys go on
to reserve; the rest hear "sold out" at once. It is a hint refreshed every second; the reservation
in PostgreSQL stays the truth.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa import catalog, inventory

REFRESH_SECONDS = 1.0
log = logging.getLogger("miaofa.api.hot")


@dataclass(frozen=True)
class ProductInfo:
    id: int
    sku: str
    name: str
    price_cents: int
    currency: str
    delivery_sla_seconds: int


class HotCatalog:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._products: dict[str, ProductInfo] = {}
        self._available: dict[int, int] = {}
        self._in_flight: dict[int, int] = {}
        self._loaded_at = 0.0
        self._task: asyncio.Task | None = None

    async def refresh(self) -> None:
        async with self._sessionmaker() as session:
            products = await catalog.list_products(session)
            available = await inventory.available_by_product(session)
        self._products = {p.sku: ProductInfo(p.id, p.sku, p.name, p.price_cents, p.currency,
                                             p.delivery_sla_seconds) for p in products}
        self._available = available
        self._loaded_at = time.monotonic()

    async def product(self, sku: str) -> ProductInfo | None:
        if sku not in self._products:
            await self.refresh()  # a product created since the last refresh
        return self._products.get(sku)

    def claim(self, product_id: int, quantity: int) -> bool:
        """Admit an order if the hint leaves stock for it; False means answer sold-out now."""
        fresh = time.monotonic() - self._loaded_at < 3 * REFRESH_SECONDS
        left = self._available.get(product_id, 0) - self._in_flight.get(product_id, 0)
        if fresh and left < quantity:
            return False
        self._in_flight[product_id] = self._in_flight.get(product_id, 0) + quantity
        return True

    def settle(self, product_id: int, quantity: int, reserved: bool) -> None:
        """The claimed order got its reservation (or did not)."""
        self._in_flight[product_id] = max(0, self._in_flight.get(product_id, 0) - quantity)
        if reserved:
            self._available[product_id] = max(0, self._available.get(product_id, 0) - quantity)

    def sold_out(self, product_id: int) -> None:
        self._available[product_id] = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:  # the database may blink; the hint just ages
                log.warning("hot catalog refresh failed", exc_info=True)
