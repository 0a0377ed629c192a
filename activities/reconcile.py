"""Reconciliation's side effects: fetch each gateway's statement, compare, and repair."""

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities.db import transaction
from activities.payments import _gateway_failed
from miaofa import contract as c
from miaofa import steps as s
from miaofa.direct.book import GatewayBook
from miaofa.gateways.base import Gateway, GatewayError, PaymentState, StatementNotReady
from miaofa.gateways.bills import day_pieces
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
        failures: list[GatewayError] = []
        compared = 0
        accounts: list[tuple[str | None, str, Gateway]] = [(None, name, gw) for name, gw in self.gateways.items()]
        if self.book is not None:
            accounts += await self.book.accounts_with_statements()
        for account, name, gateway in accounts:
            if step.gateway is not None and name != step.gateway:
                continue
            if not getattr(gateway, "has_statement", False):
                continue  # no bill to compare: the orders' own polls and late watch cover it
            where = f"{name} of merchant {account}" if account else name
            # A gateway with day bills is compared day by day: a day whose bill is not out yet is left
            # for a later run (the lookback covers it again), and the days that are out still count.
            zone = getattr(gateway, "bill_zone", None)
            pieces = (
                [(step.start, step.end)]
                if zone is None
                else [(a, b) for _, a, b in day_pieces(step.start, step.end, zone)]
            )
            for start, end in pieces:
                try:
                    entries = await gateway.statement(start, end)
                except StatementNotReady as exc:
                    report.not_ready.append(f"{where} {exc.day}")
                    log.info("reconcile %s: the bill of %s is not ready, try later", where, exc.day)
                    continue
                except GatewayError as exc:
                    # One account's outage (a direct merchant's revoked key, a gateway down) must not hold
                    # up every other account's reconciliation: it is reported, and the next run tries again.
                    failures.append(exc)
                    report.unavailable.append(f"{where}: {type(exc).__name__}")
                    log.warning("reconcile %s: its bill could not be fetched (%s)", where, type(exc).__name__)
                    break
                compared += 1
                await self._settle(report, account, name, entries, start, end, step.at)
        if failures and not compared:  # nothing could be fetched at all: an outage, retried by Temporal
            raise _gateway_failed(failures[0]) from failures[0]
        return report

    async def _settle(
        self,
        report: c.ReconcileReport,
        account: str | None,
        name: str,
        entries: list[PaymentState],
        start: datetime,
        end: datetime,
        at: datetime,
    ) -> None:
        """Compare one account's statement of [start, end) with our orders, and repair what can be."""
        label = name if account is None else merchant_label(name)
        mismatches = activity.metric_meter().create_counter(
            "miaofa_reconcile_mismatches", "Mismatches between gateway statements and orders"
        )
        async with transaction(self.sessionmaker) as session:
            findings = await reconcile.compare(session, name, entries, start, end, account)
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
            await reconcile.save(session, done, at)
        for finding in done:
            report.findings[finding.kind] = report.findings.get(finding.kind, 0) + 1
            mismatches.add(1, {"gateway": label, "kind": finding.kind, "action": finding.action})
        report.checked += len(entries)
        self.metrics.reconciled(label, report.orders_nudged - nudged, report.refunds_started - refunds)
        where = f"{name} of merchant {account}" if account else name
        log.info("reconciled %s: %d payments, %d mismatches", where, len(entries), len(done))
