"""One PostgreSQL transaction per step, with bad data ending the step instead of retrying it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from miaofa import orders
from miaofa import steps as s
from miaofa.db.engine import refused_data


@asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A database outage is retried by Temporal; a constraint or encoding error never heals, so it is
    final (non-retryable), and its message — which holds the SQL parameters — is not passed on. So is
    a status move the order's status machine forbids (miaofa.orders.move): it never heals either."""
    try:
        async with sessionmaker.begin() as session:
            yield session
    except orders.IllegalTransition as exc:  # a step would move an order where the status machine forbids
        raise ApplicationError(str(exc), type=s.DATA_ERROR, non_retryable=True) from None
    except DBAPIError as exc:
        kind = refused_data(exc)  # SQLSTATE class 22 or 23; anything else (a restart, a lost link) heals
        if kind is None:
            raise
        raise ApplicationError(
            f"the database refused the {kind} ({type(exc.orig).__name__})", type=s.DATA_ERROR, non_retryable=True
        ) from None
