"""Prometheus metrics of the API's HTTP side, on the registry it serves (miaofa/telemetry/registry.py)."""

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from miaofa.telemetry.registry import registry

REQUESTS = Counter("miaofa_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry)
LATENCY = Histogram(
    "miaofa_http_request_seconds",
    "HTTP request latency",
    ["route", "method"],
    registry=registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ORDER_ANSWER = Histogram(
    "miaofa_order_answer_seconds",
    "POST /orders from the handler's start to its answer",
    ["status"],
    registry=registry,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ORDERS = Counter("miaofa_orders_opened_total", "Order openings by outcome", ["outcome"], registry=registry)
REFUSED = Counter(
    "miaofa_http_refused_total", "Requests refused before their body was read (or while)", ["reason"], registry=registry
)
SHOP_ORDERS = Counter(
    "miaofa_shop_orders_opened_total",
    "Orders opened per shop: the first 50 shops seen by this process by id, the rest as 'other'",
    ["merchant"],
    registry=registry,
)
STOCK = Gauge(
    "miaofa_stock_available", "Keys available per SKU (the stock hint's last count)", ["sku"], registry=registry
)
RESERVED = Gauge(
    "miaofa_stock_reserved",
    "Keys held by unpaid orders (awaiting payment or in review) per SKU (the stock hint's last count)",
    ["sku"],
    registry=registry,
)


class TopShops:
    """A label per shop for the first `limit` shops seen, then 'other': a platform of thousands of
    shops must not grow the registry for ever."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def label(self, merchant_id: str) -> str:
        if merchant_id in self._seen:
            return merchant_id
        if len(self._seen) < self.limit:
            self._seen.add(merchant_id)
            return merchant_id
        return "other"


TOP_SHOPS = TopShops()


def shop_order_opened(merchant_id: str) -> None:
    SHOP_ORDERS.labels(TOP_SHOPS.label(merchant_id)).inc()


class Measure:
    """Latency and count per route template, method and status (pure ASGI: it never touches the body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            # The router writes the matched route into this same scope.
            path = getattr(scope.get("route"), "path", "unmatched")
            # A label per made-up method would grow the registry for ever.
            method = scope["method"] if scope["method"] in METHODS else "other"
            LATENCY.labels(path, method).observe(time.perf_counter() - started)
            REQUESTS.labels(path, method, str(status)).inc()


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: FastAPI) -> None:
    """Outermost middleware when installed last: refusals before the routes are counted too."""
    app.add_middleware(Measure)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
