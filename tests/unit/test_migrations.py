"""The Alembic migrations build exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from miaofa.db.schema import Base


async def test_migrations_match_the_models(sessionmaker) -> None:
    async with sessionmaker() as session:
        connection = await session.connection()
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata)
        )
    assert diff == []
