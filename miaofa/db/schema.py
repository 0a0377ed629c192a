"""Every table, for the migrations and their test: the shop's and the ledger's."""

from miaofa.db import ledger_tables  # noqa: F401  (registers the ledger's tables on Base.metadata)
from miaofa.db.models import Base

__all__ = ["Base"]
