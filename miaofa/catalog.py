"""Products: create, look up, list."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.models import Product
from miaofa.errors import Conflict, InvalidInput, NotFound
from miaofa.text import control_character


async def create_product(
    session: AsyncSession,
    *,
    sku: str,
    name: str,
    price_cents: int,
    currency: str,
    delivery_sla_seconds: int = 60,
    webhook_url: str | None = None,
) -> Product:
    # Every door (admin API, merchant API, CLI) comes through here: a name buyers read and gateways
    # show takes no control or bidi character (U+202E would show "gnp.exe" as "exe.png").
    if control_character(name):
        raise InvalidInput("name: must not contain control characters")
    product = Product(
        sku=sku,
        name=name,
        price_cents=price_cents,
        currency=currency.upper(),
        delivery_sla_seconds=delivery_sla_seconds,
        webhook_url=webhook_url,
    )
    session.add(product)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a product with sku {sku!r} already exists", error="product_exists") from exc
    return product


async def get_product(session: AsyncSession, sku: str) -> Product:
    product = await session.scalar(select(Product).where(Product.sku == sku))
    if product is None:
        raise NotFound(f"no product with sku {sku!r}", error="unknown_product")
    return product


async def product_by_id(session: AsyncSession, product_id: int) -> Product:
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFound(f"no product with id {product_id}", error="unknown_product")
    return product


async def list_products(session: AsyncSession) -> list[Product]:
    return list(await session.scalars(select(Product).order_by(Product.id)))
