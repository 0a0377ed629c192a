"""What the API holds for its lifetime, built once in the lifespan."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.hot import HotCatalog
from miaofa.codec import EncryptionCodec
from miaofa.gateways.base import Gateway
from miaofa.settings import Settings
from miaofa.vault import Vault


@dataclass
class State:
    settings: Settings
    vault: Vault
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    temporal: Client
    codec: EncryptionCodec
    gateways: dict[str, Gateway]
    hot: HotCatalog
    task_queue: str
