"""Payments: the one rule a proof must pass (proof), their rows (records), a gateway's notify (notify),
money no open order takes (strays), and a gateway's statement against our orders (reconcile)."""
