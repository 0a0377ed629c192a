"""The merchants' money: a double-entry, append-only ledger in PostgreSQL (posting, the order's
money, holds, balances, the check)."""
