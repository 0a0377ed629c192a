"""Payouts: destinations, withdrawals (reserved with their row), the rails, and settling them."""
