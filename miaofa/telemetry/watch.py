"""Gauges of what must stay empty, measured by a periodic query in each worker process (every worker
reports the same numbers, so the alerts take the max): orders paid but not delivered, reconcile
mismatches still reported by recent runs, withdrawals waiting for finance's review, and the ledger
check's violations (a slower cadence: the check scans every entry)."""

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.common import MetricMeter

from miaofa.ledger import check
from miaofa.telemetry import backlog
from miaofa.telemetry.metrics import seconds_since

log = logging.getLogger("miaofa.telemetry.watch")
INTERVAL_SECONDS = 15.0
LEDGER_CHECK_SECONDS = 300.0


class Watch:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        meter: MetricMeter | None,
        reconcile_interval_seconds: int,
        interval_seconds: float = INTERVAL_SECONDS,
        ledger_check_seconds: float = LEDGER_CHECK_SECONDS,
    ) -> None:
        self.active = meter is not None  # a worker without a metrics endpoint has nobody to tell
        meter = meter or MetricMeter.noop
        self.sessionmaker = sessionmaker
        self.interval_seconds = interval_seconds
        # A finding not seen by the last two runs (and a margin) has been repaired.
        self.recent = timedelta(seconds=2 * reconcile_interval_seconds + 60)
        self._paid = meter.create_gauge("miaofa_paid_undelivered_orders", "Orders paid whose keys have not gone out")
        self._paid_age = meter.create_gauge_float(
            "miaofa_paid_undelivered_oldest_seconds", "Age of the oldest paid, undelivered order (since its paid_at)"
        )
        self._findings = meter.create_gauge(
            "miaofa_reconcile_unrepaired", "Reconcile mismatches still reported by recent runs"
        )
        self._findings_age = meter.create_gauge_float(
            "miaofa_reconcile_unrepaired_oldest_seconds", "Age of the oldest mismatch still reported (since first seen)"
        )
        self._review = meter.create_gauge(
            "miaofa_withdrawals_waiting_review", "Withdrawals waiting for platform finance's review"
        )
        self._review_age = meter.create_gauge_float(
            "miaofa_withdrawals_waiting_review_oldest_seconds",
            "Age of the oldest withdrawal waiting for review (since it was asked for)",
        )
        self._unsettled = meter.create_gauge(
            "miaofa_withdrawals_unsettled", "Withdrawals sent to a rail whose outcome is not final yet"
        )
        self._unsettled_age = meter.create_gauge_float(
            "miaofa_withdrawals_unsettled_oldest_seconds",
            "Age of the oldest withdrawal whose outcome is not final yet (since it was asked for)",
        )
        self._ledger = meter.create_gauge("miaofa_ledger_violations", "Ledger invariants broken at the last check")
        self.ledger_check_seconds = ledger_check_seconds
        self._ledger_checked = 0.0
        self.waiting_review = backlog.Backlog(0, None)  # the last measure's, for whoever asks

    async def measure(self) -> tuple[backlog.Backlog, backlog.Backlog]:
        now = datetime.now(UTC)
        async with self.sessionmaker() as session:
            paid = await backlog.paid_not_delivered(session)
            findings = await backlog.unrepaired_findings(session, now - self.recent)
            review = await backlog.withdrawals_in_review(session)
            unsettled = await backlog.withdrawals_unsettled(session)
        self.report_review(review, now)
        self._unsettled.set(unsettled.count)
        self._unsettled_age.set(seconds_since(unsettled.oldest, now) or 0.0)
        self._paid.set(paid.count)
        self._paid_age.set(seconds_since(paid.oldest, now) or 0.0)
        self._findings.set(findings.count)
        self._findings_age.set(seconds_since(findings.oldest, now) or 0.0)
        if time.monotonic() - self._ledger_checked >= self.ledger_check_seconds:
            await self.check_ledger()
        return paid, findings

    def report_review(self, review: backlog.Backlog, now: datetime) -> None:
        self.waiting_review = review
        self._review.set(review.count)
        self._review_age.set(seconds_since(review.oldest, now) or 0.0)

    async def check_ledger(self) -> list[check.Violation]:
        async with self.sessionmaker() as session:
            found = await check.run(session)
        self._ledger_checked = time.monotonic()
        self._ledger.set(len(found))
        for violation in found[:10]:  # words about accounts and orders: no key, token or email
            log.error("ledger check: %s: %s", violation.check, violation.detail)
        return found

    async def run(self, stop: asyncio.Event) -> None:
        while self.active and not stop.is_set():
            try:
                await self.measure()
            except Exception:  # the database may blink: the gauges keep their last values
                log.warning("ops watch query failed", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), self.interval_seconds)
            except TimeoutError:
                pass
