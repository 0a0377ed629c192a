"""The embedded PostgreSQL (`miaofa up`, and the tests' own) is durable: every commit is flushed."""

import os

import asyncpg
import pytest


@pytest.mark.skipif(bool(os.environ.get("MIAOFA_DATABASE_URL")), reason="a given server is not the embedded one")
async def test_embedded_postgres_commits_synchronously(database_url: str) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW fsync") == "on"
    finally:
        await conn.close()
