"""Ops telemetry: the worker's metrics, the API's Prometheus registry, the backlogs that must stay empty
(backlog, watch), logs and tracing."""
