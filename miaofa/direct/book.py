"""Which gateway account an order's payment lives in, and its adapter.

A platform merchant's orders go through the platform's adapters (miaofa/gateways/registry.py); a
direct merchant's through adapters built from its own credentials, kept for a short while and
rebuilt when the credentials change. Resolved from the order row, so nothing of it travels in a
workflow's payloads: a workflow knows only the gateway's name.
"""

import importlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa.crypto.vault import Vault
from miaofa.db.models import Merchant, Order
from miaofa.db.models import MerchantGatewayCredential as Credential
from miaofa.direct import credentials
from miaofa.gateways.base import Gateway
from miaofa.gateways.simulator import SimulatorGateway
from miaofa.settings import Settings

CACHE_SECONDS = 10.0  # how long a process may use credentials another process has changed
PLATFORM = None  # the account of a platform merchant's payments


@dataclass
class _Cached:
    adapter: Gateway
    updated_at: datetime
    checked: float


def build(settings: Settings, gateway: str, creds: credentials.Credentials, client: httpx.AsyncClient) -> Gateway:
    if isinstance(creds, credentials.SimulatorAccount):
        return SimulatorGateway(settings.sim_url, creds.merchant_id, creds.secret, client=client)
    module = importlib.import_module(f"miaofa.gateways.{gateway}")
    adapter: Gateway = module.build(creds, client)
    return adapter


@asynccontextmanager
async def trial(settings: Settings, gateway: str, creds: credentials.Credentials) -> AsyncIterator[Gateway]:
    """An adapter for one harmless call, with a client of its own closed afterwards."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield build(settings, gateway, creds, client)


async def account_of(session: AsyncSession, order_id: str) -> str | None:
    """The direct merchant whose account takes this order's payment, or None for the platform's."""
    if len(order_id) > 40:
        return PLATFORM
    return await session.scalar(
        select(Merchant.id)
        .join(Order, Order.merchant_id == Merchant.id)
        .where(Order.id == order_id, Merchant.settlement == "direct")
    )


class GatewayBook:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        vault: Vault,
        platform: dict[str, Gateway],
        wrap: Callable[[Gateway], Gateway] = lambda gateway: gateway,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.platform = platform
        self._wrap = wrap
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._client: httpx.AsyncClient | None = None  # shared by the merchants' adapters

    async def account(self, order_id: str) -> str | None:
        async with self.sessionmaker() as session:
            return await account_of(session, order_id)

    async def for_order(self, gateway: str, order_id: str) -> Gateway | None:
        return await self.for_account(gateway, await self.account(order_id))

    async def for_account(self, gateway: str, account: str | None) -> Gateway | None:
        """The adapter of `account` (None: the platform) at `gateway`, or None when it has none."""
        if account is PLATFORM:
            return self.platform.get(gateway)
        key = (account, gateway)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached.checked < CACHE_SECONDS:
            return cached.adapter
        async with self.sessionmaker() as session:
            found = await credentials.load(session, self.vault, account, gateway)
        if found is None:  # not remembered: credentials saved a moment ago must work at once
            self._cache.pop(key, None)
            return None
        creds, updated_at = found
        if cached is not None and cached.updated_at == updated_at:
            cached.checked = now
            return cached.adapter
        adapter = self._wrap(build(self.settings, gateway, creds, self._http()))
        self._cache[key] = _Cached(adapter, updated_at, now)
        return adapter

    async def offered(self, account: str | None) -> list[str]:
        """The gateways an account takes payments by: the platform's, or those a direct merchant brought."""
        if account is PLATFORM:
            return list(self.platform)
        async with self.sessionmaker() as session:
            names = await session.scalars(
                select(Credential.gateway).where(Credential.merchant_id == account).order_by(Credential.gateway)
            )
            return list(names)

    def forget(self, account: str, gateway: str) -> None:
        """This process changed the credentials: the next call reads them again."""
        self._cache.pop((account, gateway), None)

    async def accounts_with_statements(self) -> list[tuple[str, str, Gateway]]:
        """(merchant, gateway, adapter) of every direct merchant's account that offers a statement."""
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Credential.merchant_id, Credential.gateway)
                    .join(Merchant, Merchant.id == Credential.merchant_id)
                    .where(Merchant.settlement == "direct")
                    .order_by(Credential.merchant_id)
                )
            ).all()
        found = []
        for merchant_id, gateway in rows:
            adapter = await self.for_account(gateway, merchant_id)
            if adapter is not None and getattr(adapter, "has_statement", False):
                found.append((merchant_id, gateway, adapter))
        return found

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
