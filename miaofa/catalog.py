"""Products: create, look up, list."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.models import DEFAULT_MERCHANT, Product
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
    merchant_id: str = DEFAULT_MERCHANT,
) -> Product:
    # Every door (admin API, merchant API, CLI) comes through here: a name buyers read and gateways
    # show takes no control or bidi character (U+202E would show "gnp.exe" as "exe.png").
    if control_character(name):
        raise InvalidInput("name: must not contain control characters")
    product = Product(
        merchant_id=merchant_id,
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


async def get_product(session: AsyncSession, sku: str, merchant_id: str = DEFAULT_MERCHANT) -> Product:
    """The merchant's product: another merchant's SKU is not found, alike."""
    product = await session.scalar(select(Product).where(Product.merchant_id == merchant_id, Product.sku == sku))
    if product is None:
        raise NotFound(f"no product with sku {sku!r}", error="unknown_product")
    return product


async def product_by_id(session: AsyncSession, product_id: int) -> Product:
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFound(f"no product with id {product_id}", error="unknown_product")
    return product


async def merchant_of(session: AsyncSession, product_id: int) -> str:
    merchant_id = await session.scalar(select(Product.merchant_id).where(Product.id == product_id))
    if merchant_id is None:
        raise NotFound(f"no product with id {product_id}", error="unknown_product")
    return merchant_id


async def list_products(session: AsyncSession, merchant_id: str | None = DEFAULT_MERCHANT) -> list[Product]:
    """One merchant's products, or (None) every merchant's."""
    query = select(Product).order_by(Product.id)
    if merchant_id is not None:
        query = query.where(Product.merchant_id == merchant_id)
    return list(await session.scalars(query))
