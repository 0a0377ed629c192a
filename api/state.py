"""What the API holds for its lifetime, built once in the lifespan."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.csrf import Csrf
from api.front_gate import FrontGate
from api.merchant_directory import MerchantDirectory
from api.order_feed import OrderFeed
from api.stock_hint import StockHint
from miaofa.crypto.codec import EncryptionCodec
from miaofa.crypto.vault import Vault
from miaofa.direct.book import GatewayBook
from miaofa.gateways.base import Gateway
from miaofa.rate_bound import RateBound
from miaofa.risk.chain import Chain
from miaofa.risk.limiters import Guards, LookupRate
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
    # This process's own counters: each API process keeps its own share of the limits.
    chain: Chain  # the risk rule chain of POST /orders (its rates, the rules file)
    guards: Guards  # live order streams per address, "I have paid" per order
    feed: OrderFeed  # the live order streams' one change feed, and their caps per order and in all
    lookup_rate: LookupRate  # POST /orders/lookup
    rejected_notifies: RateBound  # how many rejected notifies are stored, per gateway
    csrf: Csrf  # the HTML forms' CSRF tokens and origin check
    shops: MerchantDirectory  # the merchants by slug, remembered for a moment
    book: GatewayBook  # the direct merchants' own gateway accounts (miaofa/direct/book.py)
    gate: FrontGate  # order starts in flight and the shared rates (api/front_gate.py)
