"""The shops the API serves, by slug: a short-lived memory of the merchants table, so an order does
not pay a database round trip to learn its shop. A suspension is seen within TTL_SECONDS."""

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa.db.models import DEFAULT_MERCHANT, Merchant

TTL_SECONDS = 2.0
MAX_REMEMBERED = 10_000  # unknown slugs too: a flood of made-up ones must not grow memory forever


@dataclass(frozen=True)
class Shop:
    merchant_id: str
    slug: str
    name: str
    status: str
    status_reason: str
    risk: dict[str, Any] = field(default_factory=dict)  # its own tightening of the risk rules
    settlement: str = "platform"  # direct: its orders use its own gateway credentials

    @property
    def open(self) -> bool:
        return self.status == "active"


def _shop(row: Merchant) -> Shop:
    return Shop(row.id, row.slug, row.name, row.status, row.status_reason, dict(row.risk_rules or {}), row.settlement)


class MerchantDirectory:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._known: dict[str, tuple[float, Shop | None]] = {}

    async def shop(self, slug: str | None) -> Shop | None:
        """The shop with this slug (None: the default shop), or None when there is none."""
        slug = slug or DEFAULT_MERCHANT
        now = time.monotonic()
        remembered = self._known.get(slug)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        async with self._sessionmaker() as session:
            row = await session.scalar(select(Merchant).where(Merchant.slug == slug)) if len(slug) <= 32 else None
        shop = None if row is None else _shop(row)
        if len(self._known) >= MAX_REMEMBERED:
            self._known.clear()
        self._known[slug] = (now + TTL_SECONDS, shop)
        return shop

    async def shops(self) -> list[Shop]:
        """Every open shop, for the platform's front page."""
        async with self._sessionmaker() as session:
            rows = await session.scalars(
                select(Merchant).where(Merchant.status == "active").order_by(Merchant.created_at)
            )
            return [_shop(m) for m in rows]

    def forget(self, slug: str) -> None:
        """This process changed the shop: the next order reads it again."""
        self._known.pop(slug, None)
