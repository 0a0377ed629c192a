"""The ledger's scheduled work, as activities given their dependencies."""

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.db import transaction
from miaofa import steps as s
from miaofa.ledger import order_money


class LedgerActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    @activity.defn(name=s.RELEASE_HOLDS)
    async def release_holds(self, batch: int) -> int:
        """One batch of due holds, in one database transaction; the number released."""
        async with transaction(self.sessionmaker) as session:
            return await order_money.release_due(session, datetime.now(UTC), batch)
