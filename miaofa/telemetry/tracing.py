"""OpenTelemetry tracing, off by default (MIAOFA_TRACING=none: no provider, no interceptor, no
middleware, so no cost). With `console` or `otlp`, one order is one trace: the API's span for the
request is the parent of the workflow start (Temporal's TracingInterceptor carries the context in
headers), and the workflow's and activities' spans hang below it.

Span attributes are ids, routes and statuses only: never a key, token, email or query string.
"""

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from miaofa.settings import Settings

_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider, imported only when tracing is on
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def use_provider(provider: Any) -> None:
    """Trace into this provider (tests: an in-memory exporter); None turns tracing off again."""
    global _provider
    _provider = provider


def setup(settings: Settings, service: str) -> None:
    """Make this process's provider from the settings, once (the first caller names the service)."""
    global _provider
    if _provider is not None or settings.tracing == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter(endpoint=settings.otlp_endpoint or None)
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # for libraries that trace through the global API
    _provider = provider


def enabled() -> bool:
    return _provider is not None


def tracer() -> Any:
    return _provider.get_tracer("miaofa")


def interceptors(settings: Settings, service: str = "miaofa") -> list[Any]:
    """The Temporal client's interceptors: the tracing one when tracing is on (workers built on the
    client take it too)."""
    setup(settings, service)
    if not enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer())]


class HttpSpans:
    """A server span per HTTP request, named by method and route template (never the path's ids
    or its query string, which may hold a token)."""

    def __init__(self, app: ASGIApp, tracer: Any) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.time_ns()
        with self.tracer.start_as_current_span(
            "HTTP", kind=SpanKind.SERVER, start_time=started, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                await self.app(scope, receive, watched)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")  # set by the router on this scope
                method = scope["method"] if scope["method"] in METHODS else "other"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
