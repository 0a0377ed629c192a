"""The one place a Temporal client is built: same address, namespace and encrypted converter everywhere."""

from temporalio.client import Client

from miaofa.codec import EncryptionCodec, data_converter
from miaofa.settings import Settings
from miaofa.vault import Vault


def codec_for(vault: Vault) -> EncryptionCodec:
    return EncryptionCodec(vault.payload_key, vault.payload_key_id)


async def connect(settings: Settings, vault: Vault) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=data_converter(codec_for(vault)))
