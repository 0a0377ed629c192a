"""Engine and sessionmaker, built from the database URL in settings."""

from typing import Any, cast

from sqlalchemy import CursorResult, Result
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the asyncpg driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """pre_ping=False: no round trip to test a connection before each transaction, for callers that
    retry anyway (the worker's steps: a connection found dead fails one attempt, and SQLAlchemy then
    drops the whole pool's connections). hide_parameters: an error's text (logged, or carried in a
    Temporal failure) never holds the values."""
    return create_async_engine(
        async_url(url), pool_size=pool_size, max_overflow=20, pool_pre_ping=pre_ping, hide_parameters=True
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# SQLSTATE classes of a statement the data made fail: 22 data exception (a NUL byte, a value too long
# or out of range, bad text for a type), 23 integrity constraint. Retrying never heals them. (asyncpg
# maps most of class 22 to a plain DBAPIError, not sqlalchemy's DataError: read the code itself.)
DATA_CLASSES = {"22": "data", "23": "integrity"}


def refused_data(exc: BaseException) -> str | None:
    """ "data" or "integrity" when the database refused the data of a statement, else None."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return DATA_CLASSES.get(str(sqlstate)[:2]) if sqlstate else None


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched. Its result is a CursorResult; Session.execute is typed as the base Result."""
    return cast(CursorResult[Any], result).rowcount
