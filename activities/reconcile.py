"""Reconciliation's side effects: fetch each gateway's statement, compare, and repair."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities.db import transaction
from activities.payments import _gateway_failed
from miaofa import contract as c
from miaofa import steps as s
from miaofa.direct.book import GatewayBook
from miaofa.gateways.base import Gateway, GatewayError
from miaofa.payments import clearing, reconcile
from miaofa.telemetry.metrics import WorkerMetrics, merchant_label
from miaofa.temporal.signals import signal_payment, start_stray_review

log = logging.getLogger("miaofa.activities.reconcile")


class ReconcileActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateways: dict[str, Gateway],
        temporal: Client,
        metrics: WorkerMetrics | None = None,
        book: GatewayBook | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.metrics = metrics or WorkerMetrics()
        self.gateways = gateways
        self.temporal = temporal
        self.book = book  # the direct merchants' own accounts, each reconciled with its own statement

    @activity.defn(name=s.RECONCILE)
    async def reconcile_payments(self, step: s.ReconcileStep) -> c.ReconcileReport:
        """Idempotent: a retry finds the same mismatches; nudges and reviews are safe to repeat."""
        report = c.ReconcileReport(checked=0)
        mismatches = activity.metric_meter().create_counter(
            "miaofa_reconcile_mismatches", "Mismatches between gateway statements and orders"
        )
        accounts: list[tuple[str | None, str, Gateway]] = [(None, name, gw) for name, gw in self.gateways.items()]
        if self.book is not None:
            accounts += await self.book.accounts_with_statements()
        for account, name, gateway in accounts:
            label = name if account is None else merchant_label(name)
            if not getattr(gateway, "has_statement", False):
                continue  # no bill to compare: the orders' own polls and late watch cover it
            try:
                entries = await gateway.statement(step.start, step.end)
            except GatewayError as exc:
                raise _gateway_failed(exc) from exc
            async with transaction(self.sessionmaker) as session:
                findings = await reconcile.compare(session, name, entries, step.start, step.end, account)
                if account is None:  # the platform's clearing account against its own statement
                    findings += await clearing.differences(session, name, entries)
            done = []
            nudged, refunds = report.orders_nudged, report.refunds_started
            for finding in findings:
                if finding.action == reconcile.NUDGE:
                    if await signal_payment(self.temporal, finding.order_id, source="reconcile"):
                        report.orders_nudged += 1
                        done.append(finding)
                        continue
                    finding = reconcile.Finding(
                        "paid_order_closed",
                        reconcile.REFUND,
                        finding.gateway,
                        finding.payment_id,
                        finding.order_id,
                        finding.amount_cents,
                        finding.currency,
                    )
                if finding.action == reconcile.REFUND:
                    await start_stray_review(self.temporal, activity.info().task_queue, finding.stray())
                    report.refunds_started += 1
                done.append(finding)
            async with transaction(self.sessionmaker) as session:
                await reconcile.save(session, done, step.at)
            for finding in done:
                report.findings[finding.kind] = report.findings.get(finding.kind, 0) + 1
                mismatches.add(1, {"gateway": label, "kind": finding.kind, "action": finding.action})
            report.checked += len(entries)
            self.metrics.reconciled(label, report.orders_nudged - nudged, report.refunds_started - refunds)
            where = f"{name} of merchant {account}" if account else name
            log.info("reconciled %s: %d payments, %d mismatches", where, len(entries), len(done))
        return report
