"""The worker's own metrics, on the Temporal runtime's meter: they are served on the same /metrics
as the SDK's (MIAOFA_WORKER_METRICS_ADDRESS), and cost nothing where the runtime has no metrics.

Stage histograms are observed where the stage commits, after the commit, by the wall clock: a step
retried after a commit it never heard back from may observe twice, which a histogram shrugs off.
"""

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import Runtime

from miaofa.gateways.base import GatewayRefused, Unsupported
from miaofa.steps import SOURCE_STAGES
from miaofa.telemetry.backlog import DeliveryTimes

STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
GATEWAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Histogram boundaries by name, for the runtime's Prometheus exporter (its default is milliseconds).
BUCKETS: Mapping[str, tuple[float, ...]] = {
    "miaofa_order_reserve_seconds": STAGE_BUCKETS,
    "miaofa_paid_to_delivered_seconds": STAGE_BUCKETS,
    "miaofa_notify_to_delivered_seconds": STAGE_BUCKETS,
    "miaofa_gateway_call_seconds": GATEWAY_BUCKETS,
}


def meter_of(client: Client) -> MetricMeter:
    """The meter of the runtime the client (and so the worker) runs on."""
    return (client.service_client.config.runtime or Runtime.default()).metric_meter


def seconds_since(at: datetime | None, now: datetime | None = None) -> float | None:
    """Elapsed wall-clock seconds; None when unknown or negative (a clock ahead of ours)."""
    if at is None:
        return None
    elapsed = ((now or datetime.now(UTC)) - at).total_seconds()
    return elapsed if elapsed >= 0 else None


class WorkerMetrics:
    def __init__(self, meter: MetricMeter | None = None) -> None:
        meter = meter or MetricMeter.noop
        histogram = meter.create_histogram_float
        self._reserve = histogram("miaofa_order_reserve_seconds", "Order created (workflow start) → keys reserved")
        self._paid_delivered = histogram(
            "miaofa_paid_to_delivered_seconds", "Gateway's paid_at → keys delivered (the headline)"
        )
        self._notify_delivered = histogram(
            "miaofa_notify_to_delivered_seconds", "Verified notify received → keys delivered"
        )
        self._gateway_call = histogram("miaofa_gateway_call_seconds", "Gateway calls by gateway and operation")
        self._gateway_errors = meter.create_counter(
            "miaofa_gateway_errors_total", "Gateway calls that failed (kind: error | refused)"
        )
        self._outcomes = meter.create_counter("miaofa_order_outcomes_total", "Orders reaching a final status")
        self._paid = meter.create_counter(
            "miaofa_orders_paid_total", "Orders made paid, by the timeline stage that found the payment"
        )
        self._failovers = meter.create_counter(
            "miaofa_gateway_failovers_total", "Payment queries sent to the backup channel (the primary failed)"
        )
        self._coupons = meter.create_counter("miaofa_coupons_issued_total", "Late-delivery coupons issued")
        self._refunds = meter.create_counter("miaofa_refunds_total", "Refunds done (kind: order | stray)")
        self._reconcile_runs = meter.create_counter("miaofa_reconcile_runs_total", "Reconcile runs per gateway")
        self._reconcile_repairs = meter.create_counter(
            "miaofa_reconcile_repairs_total", "Reconcile repairs started (action: nudge_order | refund)"
        )
        self._reconcile_ok = meter.create_gauge_float(
            "miaofa_reconcile_last_success_timestamp_seconds", "Unix time of the gateway's last complete reconcile run"
        )

    def reserved(self, created_at: datetime) -> None:
        _observe(self._reserve, seconds_since(created_at), {})

    def delivered(self, times: DeliveryTimes) -> None:
        now = datetime.now(UTC)
        labels = {"gateway": times.gateway}
        _observe(self._paid_delivered, seconds_since(times.paid_at, now), labels)
        _observe(self._notify_delivered, seconds_since(times.notified_at, now), labels)
        self.outcome("delivered")

    def outcome(self, status: str) -> None:
        self._outcomes.add(1, {"outcome": status})

    def paid(self, gateway: str, source: str) -> None:
        self._paid.add(1, {"gateway": gateway, "found_by": SOURCE_STAGES.get(source, source)})

    def failover(self, gateway: str) -> None:
        self._failovers.add(1, {"gateway": gateway})

    def coupon_issued(self) -> None:
        self._coupons.add(1)

    def refunded(self, kind: str) -> None:
        self._refunds.add(1, {"kind": kind})

    def reconciled(self, gateway: str, nudged: int, refunds: int) -> None:
        self._reconcile_runs.add(1, {"gateway": gateway})
        self._reconcile_repairs.add(nudged, {"gateway": gateway, "action": "nudge_order"})
        self._reconcile_repairs.add(refunds, {"gateway": gateway, "action": "refund"})
        self._reconcile_ok.set(time.time(), {"gateway": gateway})

    def gateway_call(self, gateway: str, operation: str, seconds: float, error: BaseException | None) -> None:
        labels = {"gateway": gateway, "operation": operation}
        self._gateway_call.record(seconds, labels)
        if isinstance(error, (GatewayRefused, Unsupported)):
            self._gateway_errors.add(1, {**labels, "kind": "refused"})  # the gateway answered: not an outage
        elif error is not None:
            self._gateway_errors.add(1, {**labels, "kind": "error"})


def _observe(histogram: Any, seconds: float | None, labels: dict[str, str]) -> None:
    if seconds is not None:
        histogram.record(seconds, labels)


TIMED = frozenset({"create_payment", "query", "close", "refund", "statement"})  # what the worker calls


def merchant_label(gateway: str) -> str:
    """The metrics' gateway label of the direct merchants' own accounts, all together: their outages
    and their cardinality stay apart from the platform's account."""
    return f"{gateway}:merchant"


class TimedGateway:
    """A gateway whose calls are timed and their failures counted; everything else passes through."""

    def __init__(self, gateway: Any, metrics: WorkerMetrics, label: str | None = None) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._label = label or gateway.name  # "<gateway>:merchant" for direct merchants' own accounts

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._gateway, name)
        if name not in TIMED:
            return value
        return self._timed(name, value)

    def _timed(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return await call(*args, **kwargs)
            except Exception as exc:  # a GatewayError, or a transport error the adapter let through
                error = exc
                raise
            finally:
                self._metrics.gateway_call(self._label, operation, time.perf_counter() - started, error)

        return timed
