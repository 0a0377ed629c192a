"""Catalog and inventory for the merchant (admin token)."""

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from api.deps import AdminDep, SessionDep, StateDep
from miaofa import catalog, inventory
from miaofa.db.models import AuditLog
from miaofa.errors import InvalidInput

router = APIRouter(prefix="/admin", tags=["admin"])
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class ProductCreate(BaseModel):
    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    name: str = Field(min_length=1, max_length=200)
    price_cents: int = Field(gt=0, le=10**12)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    delivery_sla_seconds: int = Field(default=60, gt=0, le=86400 * 30)


class ProductPublic(BaseModel):
    sku: str
    name: str
    price_cents: int
    currency: str
    delivery_sla_seconds: int


class ImportAnswer(BaseModel):
    imported: int
    duplicates: int


class StockAnswer(BaseModel):
    available: int
    reserved: int
    sold: int
    refunded: int


@router.post("/products", status_code=201)
async def create_product(body: ProductCreate, actor: AdminDep, session: SessionDep, state: StateDep) -> ProductPublic:
    """Create a product."""
    product = await catalog.create_product(session, **body.model_dump())
    session.add(AuditLog(actor=actor, action="product.create", target=product.sku, detail={}))
    await session.commit()
    await state.hot.refresh()
    return ProductPublic.model_validate(product, from_attributes=True)


@router.post("/products/{sku}/keys")
async def import_keys(sku: str, request: Request, actor: AdminDep, session: SessionDep, state: StateDep,
                      content_type: Annotated[str, Header()] = "text/plain") -> ImportAnswer:
    """Import keys: text/plain one a line, or text/csv with a header. All or nothing."""
    product = await catalog.get_product(session, sku)
    data = await request.body()
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidInput("the upload is larger than 64 MiB; split it", error="upload_too_large")
    keys = inventory.parse_keys(data, content_type)
    result = await inventory.import_keys(session, state.vault, product.id, keys)
    session.add(AuditLog(actor=actor, action="keys.import", target=sku,
                         detail={"imported": result.imported, "duplicates": result.duplicates}))
    await session.commit()
    await state.hot.refresh()
    return ImportAnswer(imported=result.imported, duplicates=result.duplicates)


@router.get("/products/{sku}/stock")
async def read_stock(sku: str, _: AdminDep, session: SessionDep) -> StockAnswer:
    """Keys available, reserved for unpaid orders, sold and refunded."""
    product = await catalog.get_product(session, sku)
    counts = await inventory.stock(session, product.id)
    return StockAnswer(available=counts.available, reserved=counts.reserved, sold=counts.sold,
                       refunded=counts.refunded)
