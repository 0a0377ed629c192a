"""One PostgreSQL transaction per step, with bad data ending the step instead of retrying it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from miaofa import steps as s


@asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A database outage is retried by Temporal; a constraint or encoding error never heals, so it is
    final (non-retryable), and its message — which holds the SQL parameters — is not passed on."""
    try:
        async with sessionmaker.begin() as session:
            yield session
    except (IntegrityError, DataError) as exc:
        cause = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
        raise ApplicationError(f"the database refused the data ({cause})", type=s.DATA_ERROR,
                               non_retryable=True) from None
