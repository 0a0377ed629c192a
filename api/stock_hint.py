"""The stock hint: products and available stock kept in the API process.

It lets POST /orders find the product and answer sold-out without a database round trip. Orders
in flight claim stock here first, so in a flash sale only as many buyers as there are keys go on
to reserve; the rest hear "sold out" at once. It is a hint refreshed every second; the reservation
in PostgreSQL stays the truth. GET /products is served from it too, so listing the catalog never
counts card keys.

An unknown SKU costs one indexed lookup of that SKU (concurrent askers share it), and is then
remembered as unknown for a second: a stream of made-up SKUs cannot force full refreshes.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import http_metrics
from miaofa import catalog, inventory
from miaofa.db.models import DEFAULT_MERCHANT, Product
from miaofa.errors import NotFound

REFRESH_SECONDS = 1.0
GAUGE_SECONDS = 5.0  # how often the reserved-keys gauge is measured
UNKNOWN_SKU_SECONDS = 1.0  # how long an unknown SKU is answered from memory
MAX_UNKNOWN_SKUS = 10_000
log = logging.getLogger("miaofa.api.hot")


@dataclass(frozen=True)
class ProductInfo:
    id: int
    sku: str
    name: str
    price_cents: int
    currency: str
    delivery_sla_seconds: int
    merchant_id: str = DEFAULT_MERCHANT
    active: bool = True  # False: taken off sale by its merchant; not listed, not ordered

    @property
    def label(self) -> str:
        """The product in metrics: its SKU, prefixed with the merchant outside the default shop."""
        return self.sku if self.merchant_id == DEFAULT_MERCHANT else f"{self.merchant_id}/{self.sku}"


def _info(p: Product) -> ProductInfo:
    return ProductInfo(p.id, p.sku, p.name, p.price_cents, p.currency, p.delivery_sla_seconds, p.merchant_id, p.active)


@dataclass(frozen=True)
class Claim:
    product_id: int
    quantity: int


class StockHint:
    """Stock left for a product = the last database count − claims of orders still opening.

    A refresh also notes which claimed orders it already saw reserved, so an order is never
    subtracted twice (once by the count, once as a claim or at settle): a double subtraction
    would answer "sold out" while keys are left.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._products: dict[tuple[str, str], ProductInfo] = {}  # (merchant id, sku) → product
        self._available: dict[int, int] = {}
        self._claims: dict[str, Claim] = {}  # order id → claim, while the order opens
        self._counted: set[str] = set()  # claimed orders the last count already saw reserved
        self._settled_during_refresh: dict[str, Claim] | None = None
        self._refresh_lock = asyncio.Lock()
        self._loaded_at = 0.0
        self._reserved_at = -GAUGE_SECONDS
        self._task: asyncio.Task | None = None
        # (merchant id, sku) → until when it is answered "unknown" from memory; the lookup in flight, shared
        self._unknown: dict[tuple[str, str], float] = {}
        self._lookups: dict[tuple[str, str], asyncio.Future] = {}

    async def refresh(self) -> None:
        async with self._refresh_lock:
            claimed = list(self._claims)
            self._settled_during_refresh = {}
            try:
                async with self._sessionmaker() as session:
                    # One snapshot for the count and the claims it saw, or an order could fall between.
                    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                    products = await catalog.list_products(session, merchant_id=None)
                    available = await inventory.available_by_product(session)
                    counted = await inventory.orders_holding_keys(session, claimed) if claimed else set()
                    # Orders that claimed or settled while we counted: their reservation may have committed
                    # before the snapshot, so ask the same snapshot, until no order is left unasked (no
                    # await between the last check and the install). Subtracting one the count already saw
                    # would answer "sold out" with a key left.
                    asked = set(claimed)
                    while unasked := (set(self._claims) | set(self._settled_during_refresh)) - asked:
                        asked |= unasked
                        counted |= await inventory.orders_holding_keys(session, list(unasked))
                # Orders that reserved and settled while we counted, unseen by the count.
                for order_id, claim in self._settled_during_refresh.items():
                    if order_id not in counted:
                        available[claim.product_id] = max(0, available.get(claim.product_id, 0) - claim.quantity)
            finally:
                self._settled_during_refresh = None
            self._install(products, available, counted)
        await self._measure_reserved()

    async def _measure_reserved(self) -> None:
        """miaofa_stock_reserved, for the unpaid-reservations alert: outside the snapshot above (whose
        time is the claims' race window), and every GAUGE_SECONDS only."""
        if time.monotonic() - self._reserved_at < GAUGE_SECONDS:
            return
        self._reserved_at = time.monotonic()
        async with self._sessionmaker() as session:
            reserved = await inventory.reserved_by_product(session)
        for info in self._products.values():
            http_metrics.RESERVED.labels(info.label).set(reserved.get(info.id, 0))

    def _install(self, products, available: dict[int, int], counted: set[str]) -> None:
        self._products = {(p.merchant_id, p.sku): _info(p) for p in products}
        self._available = available
        self._counted = counted
        self._loaded_at = time.monotonic()
        for info in self._products.values():
            http_metrics.STOCK.labels(info.label).set(available.get(info.id, 0))

    async def product(self, sku: str, merchant_id: str = DEFAULT_MERCHANT) -> ProductInfo | None:
        name = (merchant_id, sku)
        info = self._products.get(name)
        if info is not None:
            return info
        if self._unknown.get(name, 0.0) > time.monotonic():
            return None
        lookup = self._lookups.get(name)
        if lookup is None:  # a product created since the last refresh (maybe by another API process)?
            lookup = self._lookups[name] = asyncio.ensure_future(self._look_up(name))
            lookup.add_done_callback(lambda _: self._lookups.pop(name, None))
        return await asyncio.shield(lookup)  # one caller giving up does not cancel the others' lookup

    async def _look_up(self, name: tuple[str, str]) -> ProductInfo | None:
        merchant_id, sku = name
        async with self._sessionmaker() as session:
            try:
                p = await catalog.get_product(session, sku, merchant_id)
            except NotFound:
                p = None
            stock = await inventory.stock(session, p.id) if p is not None else None
        if p is None or stock is None:  # (both or neither)
            if len(self._unknown) >= MAX_UNKNOWN_SKUS:
                now = time.monotonic()
                self._unknown = {k: until for k, until in self._unknown.items() if until > now}
                if len(self._unknown) >= MAX_UNKNOWN_SKUS:
                    self._unknown.clear()
            self._unknown[name] = time.monotonic() + UNKNOWN_SKU_SECONDS
            return None
        info = _info(p)
        self._products = {**self._products, name: info}
        self._available.setdefault(p.id, stock.available)
        return info

    def products(self, merchant_id: str = DEFAULT_MERCHANT) -> list[ProductInfo]:
        """The merchant's catalog as last loaded, in creation order."""
        listed = (p for p in self._products.values() if p.merchant_id == merchant_id and p.active)
        return sorted(listed, key=lambda p: p.id)

    def available(self, product_id: int) -> int:
        """Stock left by the hint: the last count minus the orders opening now."""
        return max(0, self._left(product_id))

    def has_stock(self, product_id: int, quantity: int) -> bool:
        """claim()'s test without claiming: False means answer sold-out now."""
        fresh = time.monotonic() - self._loaded_at < 3 * REFRESH_SECONDS
        return not fresh or self._left(product_id) >= quantity

    def claim(self, order_id: str, product_id: int, quantity: int) -> bool:
        """Admit an order if the hint leaves stock for it; False means answer sold-out now."""
        if not self.has_stock(product_id, quantity):
            return False
        self._claims[order_id] = Claim(product_id, quantity)
        return True

    def settle(self, order_id: str, reserved: bool) -> None:
        """The claimed order got its reservation (or did not)."""
        claim = self._claims.pop(order_id, None)
        if claim and reserved:
            if order_id not in self._counted:
                self._available[claim.product_id] = max(0, self._available.get(claim.product_id, 0) - claim.quantity)
            if self._settled_during_refresh is not None:
                self._settled_during_refresh[order_id] = claim
        self._counted.discard(order_id)

    def sold_out(self, product_id: int) -> None:
        self._available[product_id] = 0

    def _left(self, product_id: int) -> int:
        opening = sum(
            c.quantity
            for order_id, c in self._claims.items()
            if c.product_id == product_id and order_id not in self._counted
        )
        return self._available.get(product_id, 0) - opening

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever())

    @property
    def refreshing(self) -> bool:
        """Off while stopped: the stock notifications (api/stock_events.py) then do not refresh either."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        async with self._refresh_lock:  # a refresh a notification began ends before stop returns
            pass

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:  # the database may blink; the hint just ages
                log.warning("stock hint refresh failed", exc_info=True)
