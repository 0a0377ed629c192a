"""Catalog and inventory for the merchant (admin token)."""

from typing import Annotated, Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, Field, StrictInt
from pydantic_core import PydanticCustomError

from api import uploads
from api.deps import AdminDep, SessionDep, StateDep
from api.schemas import Plain
from api.state import State
from miaofa import audit, catalog, inventory
from miaofa.errors import InvalidInput
from miaofa.netaddr import webhook_host_problem
from miaofa.text import URL_PATTERN, url_problem

router = APIRouter(prefix="/admin", tags=["admin"])


def _webhook_url(value: str) -> str:
    if problem := url_problem(value):
        raise PydanticCustomError("webhook_url", problem)
    return value


WebhookUrl = Annotated[
    str, Field(min_length=1, max_length=500, json_schema_extra={"pattern": URL_PATTERN}), AfterValidator(_webhook_url)
]


def _require_secret(state: State, url: str | None) -> None:
    if url and not state.settings.webhook_secret:
        raise InvalidInput("webhook_url: set MIAOFA_WEBHOOK_SECRET first; every webhook is signed")
    # No DNS here: an address in any spelling, this machine and metadata names are refused now; a
    # name is resolved and checked again at every send.
    host = (urlparse(url).hostname or "") if url else ""
    if url and (problem := webhook_host_problem(host, state.settings.webhook_allow_networks)):
        raise InvalidInput(f"webhook_url: {problem}")


class ProductFields(BaseModel):
    """A product as a merchant describes it (the merchant API takes this)."""

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Shown to buyers (pages, emails) and sent to gateways as the subject: no control or bidi characters.
    name: Annotated[str, Plain] = Field(min_length=1, max_length=200)
    price_cents: StrictInt = Field(gt=0, le=10**12)
    currency: str = Field(pattern=r"^[A-Za-z]{3,8}$")
    delivery_sla_seconds: StrictInt = Field(default=60, gt=0, le=86400 * 30)


class ProductCreate(ProductFields):
    webhook_url: WebhookUrl | None = Field(
        default=None, description="this product's own merchant webhook (else MIAOFA_WEBHOOK_URL); http(s) only"
    )


class ProductPublic(BaseModel):
    sku: str
    name: str
    price_cents: int
    currency: str
    delivery_sla_seconds: int
    webhook_url: str | None = None


class WebhookSet(BaseModel):
    webhook_url: WebhookUrl | None = Field(description="the product's webhook; null: MIAOFA_WEBHOOK_URL again")


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
    _require_secret(state, body.webhook_url)
    product = await catalog.create_product(session, **body.model_dump())
    audit.record(session, actor, "product.create", product.sku)
    await session.commit()
    await state.hot.refresh()
    return ProductPublic.model_validate(product, from_attributes=True)


# The schema states what the parser takes (miaofa/inventory.py). A multipart upload (one file part,
# `curl -F file=@keys.txt`) is read too, but not declared: OpenAPI cannot say "a file part whose
# content is UTF-8 text", and a fuzzer reading `format: binary` rightly sends images.
_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {
                "schema": {"type": "string", "pattern": inventory.keys_text_pattern()},
                "example": "KEY-0001\nKEY-0002\n",
            },
            "text/csv": {
                "schema": {
                    "type": "string",
                    "pattern": inventory.keys_csv_pattern(),
                    "description": "one column here; a `code` (key, card_key, secret, 卡密) column among others too",
                },
                "example": "code\nKEY-0001\nKEY-0002\n",
            },
        },
    }
}
_IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no admin token (checked before the body is read)"},
    404: {"description": "no such product"},
    413: {"description": "the upload is larger than 64 MiB"},
    415: {"description": "not text/plain, text/csv or multipart/form-data"},
    422: {"description": "no keys, malformed CSV or multipart, a key too long or holding a control character"},
}


@router.post("/products/{sku}/keys", openapi_extra=_IMPORT_BODY, responses=_IMPORT_ERRORS)
async def import_keys(
    sku: str, request: Request, actor: AdminDep, session: SessionDep, state: StateDep
) -> ImportAnswer:
    """Import keys: text/plain one a line, text/csv with a header, or a multipart/form-data upload of
    one file part (`curl -F file=@keys.txt`, a .csv file read as CSV). All or nothing; any other
    content type is refused with 415. A key holds no control character and at most 512 characters."""
    uploads.check_media_type(request.headers.get("content-type"))  # 415 before a byte is read
    product = await catalog.get_product(session, sku)
    data, media = await uploads.read_upload(request)
    keys = inventory.parse_keys(data, media)
    result = await inventory.import_keys(session, state.vault, product.id, keys)
    audit.record(session, actor, "keys.import", sku, imported=result.imported, duplicates=result.duplicates)
    await session.commit()
    await state.hot.refresh()
    return ImportAnswer(imported=result.imported, duplicates=result.duplicates)


@router.put("/products/{sku}/webhook")
async def set_webhook(
    sku: str, body: WebhookSet, actor: AdminDep, session: SessionDep, state: StateDep
) -> ProductPublic:
    """Set (or, with null, clear) the product's own webhook URL; events already queued keep the URL
    they were queued for."""
    _require_secret(state, body.webhook_url)
    product = await catalog.get_product(session, sku)
    product.webhook_url = body.webhook_url
    audit.record(session, actor, "product.webhook", sku, set=body.webhook_url is not None)
    await session.flush()
    return ProductPublic.model_validate(product, from_attributes=True)


@router.get("/products/{sku}/stock")
async def read_stock(sku: str, _: AdminDep, session: SessionDep) -> StockAnswer:
    """Keys available, reserved for unpaid orders, sold and refunded."""
    product = await catalog.get_product(session, sku)
    counts = await inventory.stock(session, product.id)
    return StockAnswer(available=counts.available, reserved=counts.reserved, sold=counts.sold, refunded=counts.refunded)
