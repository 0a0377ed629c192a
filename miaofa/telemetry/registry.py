"""The Prometheus registry the API process serves at /metrics, with the counters of the core code it
runs (the notify flow, miaofa/payments/notify.py); api/http_metrics.py adds the HTTP ones."""

from prometheus_client import CollectorRegistry, Counter, Histogram

registry = CollectorRegistry()
NOTIFIES = Counter("miaofa_notifies_total", "Gateway notifies by outcome", ["gateway", "outcome"], registry=registry)
CALLBACK_LAG = Histogram(
    "miaofa_callback_lag_seconds",
    "Gateway's paid_at → its verified notify received (accepted)",
    ["gateway"],
    registry=registry,
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 900, 3600),
)
REJECTED_UNLOGGED = Counter(
    "miaofa_notifies_rejected_unlogged_total",
    "Rejected notifies past the per-gateway rate bound: counted, not stored",
    ["gateway"],
    registry=registry,
)
