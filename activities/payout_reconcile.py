"""Payout reconciliation as an activity of ReconcileWorkflow: each rail with a record of its
transfers is compared with the withdrawals (miaofa/payouts/reconcile.py).

A rail whose record is a day bill (`bill_zone`: Alipay's account bill, WeChat's fund-flow bill) is
read day by day; the days read are compared as one stretch up to the first day not out yet, and that
day and the ones after it are reported "not ready, try later", never a finding."""

import logging
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.db import transaction
from miaofa import contract as c
from miaofa import steps as s
from miaofa.gateways.base import GatewayError, StatementNotReady
from miaofa.gateways.bills import day_pieces
from miaofa.payments import reconcile as payment_reconcile
from miaofa.payouts import reconcile
from miaofa.payouts.rails import PayoutRail, RailTransfer

log = logging.getLogger("miaofa.payouts")
UNREADABLE = (httpx.HTTPError, GatewayError, ValueError, KeyError, TypeError)


class PayoutReconcileActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], rails: dict[str, PayoutRail]) -> None:
        self.sessionmaker = sessionmaker
        self.rails = rails

    @activity.defn(name=s.RECONCILE_PAYOUTS)
    async def reconcile_payouts(self, step: s.ReconcileStep) -> dict[str, int]:
        """Findings by kind (the workflows started before RECONCILE_PAYOUT_BILLS); idempotent."""
        return (await self.reconcile_payout_bills(step)).findings

    @activity.defn(name=s.RECONCILE_PAYOUT_BILLS)
    async def reconcile_payout_bills(self, step: s.ReconcileStep) -> c.PayoutReconcileReport:
        """Findings by kind and the rails' days not out yet; idempotent (a finding is kept once and counted)."""
        report = c.PayoutReconcileReport()
        for name, rail in self.rails.items():
            if not getattr(rail, "has_statement", False):
                continue
            transfers, end = await self._read(report, name, rail, step.start, step.end)
            if end <= step.start:
                continue  # no day of the window is out yet
            async with transaction(self.sessionmaker) as session:
                findings = await reconcile.compare(session, name, transfers, step.start, end)
                await payment_reconcile.save(session, findings, step.at)
            for finding in findings:
                report.findings[finding.kind] = report.findings.get(finding.kind, 0) + 1
                log.warning("payout reconcile: %s %s on %s", finding.kind, finding.payment_id, name)
        return report

    async def _read(
        self, report: c.PayoutReconcileReport, name: str, rail: PayoutRail, start: datetime, end: datetime
    ) -> tuple[list[RailTransfer], datetime]:
        """The rail's transfers of [start, end) and where the stretch read ends (a day not out yet cuts it)."""
        zone = getattr(rail, "bill_zone", None)
        pieces = [(start, end)] if zone is None else [(a, b) for _, a, b in day_pieces(start, end, zone)]
        async with transaction(self.sessionmaker) as session:
            ours = await reconcile.numbers(session, name, start, end)
        transfers: list[RailTransfer] = []
        read_to = start
        for piece_start, piece_end in pieces:
            if read_to < piece_start:  # an earlier day was not out: so is this one, or it waits for it
                report.not_ready.append(f"payout:{name} {piece_start.astimezone(zone).date()}")
                continue
            try:
                transfers += await rail.statement(piece_start, piece_end, ours)  # type: ignore[attr-defined]
            except StatementNotReady as exc:
                report.not_ready.append(f"payout:{name} {exc.day}")
                log.info("payout reconcile %s: the bill of %s is not ready, try later", name, exc.day)
                continue
            except UNREADABLE as exc:  # retried by the activity's policy
                raise RuntimeError(f"the {name} rail's record could not be read ({type(exc).__name__})") from None
            read_to = piece_end
        return transfers, read_to
