"""The one place a Temporal client is built: same address, namespace and encrypted converter everywhere."""

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from miaofa.codec import EncryptionCodec, data_converter
from miaofa.contract import (
    PAYMENT_SIGNAL,
    STRAY_PAYMENT_WORKFLOW,
    PaymentNotified,
    StrayPayment,
    order_workflow_id,
    stray_workflow_id,
)
from miaofa.settings import Settings
from miaofa.telemetry import metrics, tracing
from miaofa.vault import Vault


def codec_for(vault: Vault) -> EncryptionCodec:
    return EncryptionCodec(vault.payload_key, vault.payload_key_id)


async def connect(settings: Settings, vault: Vault, runtime: Runtime | None = None) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=data_converter(codec_for(vault)), runtime=runtime,
                                interceptors=tracing.interceptors(settings))


def metrics_runtime(bind_address: str) -> Runtime:
    """A runtime whose SDK metrics (task latencies, slots, failures) are served for Prometheus."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=bind_address, histogram_bucket_overrides=metrics.BUCKETS)))


async def start_stray_review(client: Client, task_queue: str, stray: StrayPayment) -> None:
    """Hand a payment no open order took to its review (and refund); one review per payment at a time."""
    await client.start_workflow(
        STRAY_PAYMENT_WORKFLOW, stray, id=stray_workflow_id(stray.gateway, stray.payment_id), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"stray payment ({stray.reason}), found by {stray.found_by}")


async def nudge_order(client: Client, order_id: str, source: str) -> bool:
    """Ask an open order to look at its gateway now; False when its workflow has closed or never was."""
    try:
        await client.get_workflow_handle(order_workflow_id(order_id)).signal(
            PAYMENT_SIGNAL, PaymentNotified(notify_id=None, source=source))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
