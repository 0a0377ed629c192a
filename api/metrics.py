"""Prometheus metrics of the API."""

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

registry = CollectorRegistry()
REQUESTS = Counter("miaofa_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry)
LATENCY = Histogram("miaofa_http_request_seconds", "HTTP request latency", ["route", "method"], registry=registry,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ORDERS = Counter("miaofa_orders_opened_total", "Order openings by outcome", ["outcome"], registry=registry)
NOTIFIES = Counter("miaofa_notifies_total", "Gateway notifies by outcome", ["gateway", "outcome"],
                   registry=registry)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(path, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(path, request.method, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
