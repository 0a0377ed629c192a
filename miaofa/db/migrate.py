"""Apply Alembic migrations from code (`miaofa db upgrade`, `miaofa up`, tests)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Runs in a worker thread when called from async code: env.py starts its own loop."""
    command.upgrade(alembic_config(database_url), revision)
