"""Payout reconciliation as an activity of ReconcileWorkflow: each rail with a record of its
transfers is compared with the withdrawals (miaofa/payouts/reconcile.py)."""

import logging

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.db import transaction
from miaofa import steps as s
from miaofa.payments import reconcile as payment_reconcile
from miaofa.payouts import reconcile
from miaofa.payouts.rails import PayoutRail

log = logging.getLogger("miaofa.payouts")


class PayoutReconcileActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], rails: dict[str, PayoutRail]) -> None:
        self.sessionmaker = sessionmaker
        self.rails = rails

    @activity.defn(name=s.RECONCILE_PAYOUTS)
    async def reconcile_payouts(self, step: s.ReconcileStep) -> dict[str, int]:
        """Findings by kind; idempotent (a finding is kept once and counted)."""
        counts: dict[str, int] = {}
        for name, rail in self.rails.items():
            if not getattr(rail, "has_statement", False):
                continue  # no record to read here yet (the real rails' bills: issue 22)
            try:
                transfers = await rail.statement()  # type: ignore[attr-defined]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:  # retried by the activity's policy
                raise RuntimeError(f"the {name} rail's record could not be read ({type(exc).__name__})") from None
            async with transaction(self.sessionmaker) as session:
                findings = await reconcile.compare(session, name, transfers, step.start, step.end)
                await payment_reconcile.save(session, findings, step.at)
            for finding in findings:
                counts[finding.kind] = counts.get(finding.kind, 0) + 1
                log.warning("payout reconcile: %s %s on %s", finding.kind, finding.payment_id, name)
        return counts
