"""The demo product and keys a first `miaofa up` creates, so the shop can sell at once."""

import secrets

from sqlalchemy import func, select

from miaofa import catalog, inventory
from miaofa.crypto.vault import Vault
from miaofa.db.engine import make_engine, make_sessionmaker
from miaofa.db.models import Product

DEMO_SKU = "demo-gift-card"
DEMO_KEYS = 100


def demo_key() -> str:
    return "DEMO-" + "-".join(secrets.token_hex(2).upper() for _ in range(4))


async def seed_demo(database_url: str, vault_key: str) -> bool:
    """Create the demo product with keys when the catalog is empty; True if it did."""
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine).begin() as session:
            if await session.scalar(select(func.count()).select_from(Product)):
                return False
            product = await catalog.create_product(
                session,
                sku=DEMO_SKU,
                name="Demo gift card (¥10)",
                price_cents=1000,
                currency="CNY",
                delivery_sla_seconds=60,
            )
            await inventory.import_keys(session, Vault(vault_key), product.id, [demo_key() for _ in range(DEMO_KEYS)])
            return True
    finally:
        await engine.dispose()
