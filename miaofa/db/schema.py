"""Every table, for the migrations and their test: the shop's, the ledger's and the payouts'."""

from miaofa.db import ledger_tables, payout_tables  # noqa: F401  (registers their tables on Base.metadata)
from miaofa.db.models import Base

__all__ = ["Base"]
