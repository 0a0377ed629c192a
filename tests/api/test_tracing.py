"""Issue 12: one order is one trace — the API's span for POST /orders is the parent of the workflow
start, and the workflow's and activities' spans are in the same trace — with no key, token or email
in any span's attributes."""

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from miaofa.settings import Settings
from miaofa.telemetry import tracing
from tests.conftest import SIM_SECRET, TEST_VAULT_KEY, stack_settings
from tests.helpers.stack import ADMIN_TOKEN, SUPPORT_TOKEN, running_stack


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)


def _by_name(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


async def test_one_order_is_one_trace_from_the_api_to_the_activities(
    exporter: InMemorySpanExporter, dev_env: WorkflowEnvironment, sessionmaker, sim_url, database_url, smtp
) -> None:
    interceptors = tracing.interceptors(Settings(tracing="console"))
    assert [type(i).__name__ for i in interceptors] == ["TracingInterceptor"]
    client = Client(**{**dev_env.client.config(), "interceptors": interceptors})
    email = f"tracer-{uuid.uuid4().hex[:8]}@example.com"
    async with running_stack(
        WorkflowEnvironment.from_client(client),
        sessionmaker,
        sim_url,
        tracing="console",
        **stack_settings(database_url, smtp[0], callback_grace_seconds=1, poll_interval_seconds=1),
    ) as stack:
        key = f"KEY-TRACE-{uuid.uuid4().hex}"
        sku = await stack.product([key])
        order = await stack.ordered(sku, email=email)
        await stack.pay(order)
        view = await stack.wait_status(order, "delivered")
        assert view["keys"] == [key]
    spans = exporter.get_finished_spans()

    request = _by_name(spans, "POST /orders")
    assert request.parent is None
    assert dict(request.attributes) == {
        "http.request.method": "POST",
        "http.route": "/orders",
        "http.response.status_code": 201,
    }
    trace_id = request.context.trace_id
    workflow_id = f"order-{order['order_id']}"
    start = _by_name(spans, "StartUpdateWithStartWorkflow:OrderWorkflow")
    assert start.parent is not None and start.parent.span_id == request.context.span_id
    assert start.attributes["temporalWorkflowID"] == workflow_id
    in_trace = {span.name for span in spans if span.context.trace_id == trace_id}
    assert {
        "RunWorkflow:OrderWorkflow",
        "StartActivity:open_order",
        "RunActivity:open_order",
        "StartActivity:create_payment",
        "RunActivity:create_payment",
        "StartActivity:accept_and_deliver",
        "RunActivity:accept_and_deliver",
    } <= in_trace
    for name in ("RunWorkflow:OrderWorkflow", "RunActivity:accept_and_deliver"):
        assert _by_name(spans, name).attributes["temporalWorkflowID"] == workflow_id

    # Ids, routes and statuses only.
    secrets = (email, key, order["access_token"], ADMIN_TOKEN, SUPPORT_TOKEN, SIM_SECRET, TEST_VAULT_KEY)
    for span in spans:
        for value in [span.name, *map(str, (span.attributes or {}).values()), span.status.description or ""]:
            assert not any(secret in value for secret in secrets), (span.name, value)


def test_off_by_default_no_interceptor_and_no_provider() -> None:
    assert Settings().tracing == "none"
    assert tracing.interceptors(Settings()) == []
    assert not tracing.enabled()


def test_otlp_exports_over_http_to_the_configured_endpoint() -> None:
    """In a child process: setup() installs the process-wide provider once."""
    import subprocess
    import sys

    code = (
        "from miaofa.settings import Settings; from miaofa.telemetry import tracing; "
        "s = Settings(tracing='otlp', otlp_endpoint='http://127.0.0.1:9/v1/traces'); "
        "[i] = tracing.interceptors(s, 'miaofa-test'); "
        "[p] = tracing._provider._active_span_processor._span_processors; "
        "print(type(i).__name__, type(p.span_exporter).__name__, p.span_exporter._endpoint, "
        "tracing._provider.resource.attributes['service.name'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "TracingInterceptor",
        "OTLPSpanExporter",
        "http://127.0.0.1:9/v1/traces",
        "miaofa-test",
    ]
