"""The one place a Temporal client is built: same address, namespace and encrypted converter everywhere."""

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from miaofa.crypto.codec import EncryptionCodec, data_converter
from miaofa.crypto.vault import Vault
from miaofa.settings import Settings
from miaofa.telemetry import metrics, tracing


def codec_for(vault: Vault) -> EncryptionCodec:
    return EncryptionCodec(vault.payload_key, vault.payload_key_id)


async def connect(settings: Settings, vault: Vault, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(codec_for(vault)),
        runtime=runtime,
        interceptors=tracing.interceptors(settings),
    )


def metrics_runtime(bind_address: str) -> Runtime:
    """A runtime whose SDK metrics (task latencies, slots, failures) are served for Prometheus."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=bind_address, histogram_bucket_overrides=metrics.BUCKETS)
        )
    )
