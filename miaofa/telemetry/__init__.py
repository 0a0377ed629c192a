"""Ops telemetry: the worker's metrics, the gauges of backlogs that must stay empty, and tracing."""
