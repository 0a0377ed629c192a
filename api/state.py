"""What the API holds for its lifetime, built once in the lifespan."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.stock_hint import StockHint
from miaofa.crypto.codec import EncryptionCodec
from miaofa.crypto.vault import Vault
from miaofa.gateways.base import Gateway
from miaofa.settings import Settings


@dataclass
class State:
    settings: Settings
    vault: Vault
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    temporal: Client
    codec: EncryptionCodec
    gateways: dict[str, Gateway]
    hot: StockHint  # the stock hint (api/stock_hint.py)
    task_queue: str
