"""Console: products (list with live stock, create, edit) and their keys (counts, chunked import)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api import uploads
from api.console.i18n import Translator
from api.console.pages import SKU, ConsoleRoute, field, number, page, sku_param
from api.console.session import ConsoleDep, DbDep
from api.deps import StateDep
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa import audit, catalog, inventory
from miaofa.errors import InvalidInput
from miaofa.merchants import dashboard

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
IMPORT_HEADER = "x-csrf-token"  # the import script sends the form's token here
CURRENCY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MAX_PRICE = 10**12
MAX_SLA = 86400 * 30


def _edits(form) -> dict:
    return {
        "name": field(form, "name", 200, required=True),
        "description": field(form, "description", 2000),
        "price_cents": number(form, "price_cents", 1, MAX_PRICE),
        "delivery_sla_seconds": number(form, "delivery_sla_seconds", 1, MAX_SLA),
    }


async def _listing(request: Request, holder, db, *, status: int = 200, **context) -> Response:
    rows = await dashboard.stock_rows(db, holder.merchant_id)
    return page(request, "console/products.html", status=status, products=rows, form={}, **context)


@router.get("/products")
async def products_page(request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    created = request.query_params.get("created", "")
    return await _listing(request, holder, db, created=created if sku_ok(created) else "")


def sku_ok(sku: str) -> bool:
    return SKU.match(sku) is not None


@router.post("/products")
async def create_product(request: Request, holder: ConsoleDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-product")
    sku = field(form, "sku", 64, required=True)
    if not sku_ok(sku):
        raise InvalidInput("sku: letters, digits, '.', '_' or '-', starting with a letter or digit")
    currency = field(form, "currency", 8, required=True).upper()
    if not (3 <= len(currency) <= 8 and set(currency) <= CURRENCY_CHARS):
        raise InvalidInput("currency: 3 to 8 letters, like CNY")
    edits = _edits(form)
    description = edits.pop("description")
    product = await catalog.create_product(db, merchant_id=holder.merchant_id, sku=sku, currency=currency, **edits)
    product.description = description
    audit.record(db, holder.actor, "product.create", sku, merchant_id=holder.merchant_id)
    await db.commit()
    await state.hot.refresh()
    return secure(RedirectResponse(f"/console/products?created={sku}", status_code=303), private=True)


@router.get("/products/{sku}")
async def product_page(sku: str, request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    product = await catalog.get_product(db, sku_param(sku), holder.merchant_id)
    counts = await inventory.stock(db, product.id)
    saved = request.query_params.get("saved") == "1"
    return page(request, "console/product.html", product=product, stock=counts, saved=saved)


@router.post("/products/{sku}")
async def edit_product(sku: str, request: Request, holder: ConsoleDep, db: DbDep, state: StateDep) -> Response:
    """Change what buyers see next; orders already open keep the price they were opened at."""
    form = await request.form()
    state.csrf.check(request, form, "console-product-edit")
    product = await catalog.get_product(db, sku_param(sku), holder.merchant_id)
    changes = {**_edits(form), "active": form.get("active") == "on"}
    for name, value in changes.items():
        setattr(product, name, value)
    audit.record(db, holder.actor, "product.edit", sku, merchant_id=holder.merchant_id, fields=",".join(changes))
    await db.commit()
    await state.hot.refresh()
    return secure(RedirectResponse(f"/console/products/{sku}?saved=1", status_code=303), private=True)


@router.get("/products/{sku}/keys")
async def keys_page(sku: str, request: Request, holder: ConsoleDep, db: DbDep) -> Response:
    product = await catalog.get_product(db, sku_param(sku), holder.merchant_id)
    counts = await inventory.stock(db, product.id)
    t = Translator(web_i18n.pick(request))
    return page(request, "console/keys.html", product=product, stock=counts, title=t("keys.title", name=product.name))


@router.post("/products/{sku}/keys/import")
async def import_chunk(sku: str, request: Request, holder: ConsoleDep, db: DbDep, state: StateDep) -> Response:
    """One chunk of a key file (text/plain, one key a line), sent by the import script. Each chunk is
    its own transaction: a file stopped half way keeps what was imported, and sending it again counts
    those keys as duplicates."""
    state.csrf.check(request, {"csrf": request.headers.get(IMPORT_HEADER, "")}, "console-import")
    uploads.check_media_type(request.headers.get("content-type"))
    product = await catalog.get_product(db, sku_param(sku), holder.merchant_id)
    data = await request.body()  # the request limits (api/limits.py) cap it
    keys = inventory.parse_keys(data, request.headers.get("content-type", ""))
    result = await inventory.import_keys(db, state.vault, product.id, keys)
    audit.record(
        db,
        holder.actor,
        "keys.import",
        sku,
        merchant_id=holder.merchant_id,
        imported=result.imported,
        duplicates=result.duplicates,
    )
    await db.commit()
    await state.hot.refresh()
    answer = {"imported": result.imported, "duplicates": result.duplicates}
    return secure(JSONResponse(answer), private=True)
