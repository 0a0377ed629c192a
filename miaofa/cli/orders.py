"""`miaofa orders …`: find orders in Temporal's visibility store, as the Temporal UI does.

Search attributes are never encrypted: listing them needs the Temporal address, no codec. The
email is hashed here with the vault key, as the shop does, and never sent.
"""

import asyncio
import re
from typing import Any

import typer

from miaofa import contract as c
from miaofa.cli.common import BAD_INPUT, REFUSED, Column, _leave, _settings, _stop, err, print_rows, when
from miaofa.settings import Settings

orders_app = typer.Typer(help="Find orders.", no_args_is_help=True)

# Values put into a visibility query: no quotes, so nothing can change the query's meaning.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
COLUMNS = (
    Column("order_id", "order", whole=True),
    Column("status"),
    Column("sku"),
    Column("gateway"),
    Column("amount_cents", "amount"),
    Column("late", show=lambda late: "yes" if late else ""),
    Column("started_at", "started", show=when),
    Column("closed_at", "closed", show=when),
    Column("merchant_id", "merchant", whole=True),
)


def _query(
    status: str | None,
    sku: str | None,
    gateway: str | None,
    buyer_hash: str | None,
    late: bool,
    merchant: str | None = None,
) -> str:
    clauses = [f"WorkflowType = '{c.ORDER_WORKFLOW}'"]
    for attribute, value in (
        (c.SA_MERCHANT_ID.name, merchant),
        ("OrderStatus", status),
        ("ProductSku", sku),
        ("PaymentGateway", gateway),
        ("BuyerHash", buyer_hash),
    ):
        if value is not None:
            clauses.append(f"{attribute} = '{value}'")
    if late:
        clauses.append("DeliveryLate = true")
    return " AND ".join(clauses)


def _buyer_hash(settings: Settings, email: str) -> str:
    if not settings.vault_key:
        _stop("MIAOFA_VAULT_KEY is not set: it is needed to hash the email as the shop does.", BAD_INPUT)
    from miaofa.crypto.vault import Vault

    return Vault(settings.vault_key).buyer_hash(email)


@orders_app.command("search")
def search(
    email: str = typer.Option(None, help="The buyer's email (hashed here, as the shop does: never sent)."),
    status: str = typer.Option(None, help=f"One of: {', '.join(c.STATUSES)}."),
    sku: str = typer.Option(None, help="The product's SKU."),
    gateway: str = typer.Option(None, help="The payment gateway."),
    merchant: str = typer.Option(
        None, help="The shop's merchant id (m_…, or default), as `miaofa merchants list` shows."
    ),
    late: bool = typer.Option(False, "--late", help="Only orders delivered past their SLA."),
    limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts."),
) -> None:
    """Find orders by the search attributes, newest first: a table on a terminal, whole ids tab-separated
    in a pipe.

    Visibility is eventually consistent: an order may show its new status a second after it changed.
    """
    settings = _settings()
    if status is not None and status not in c.STATUSES:
        _stop(f"--status must be one of: {', '.join(c.STATUSES)}.", BAD_INPUT)
    for name, value in (("--sku", sku), ("--gateway", gateway), ("--merchant", merchant)):
        if value is not None and not SAFE_VALUE.match(value):
            _stop(f"{name} may hold letters, digits and . _ : - only.", BAD_INPUT)
    buyer_hash = _buyer_hash(settings, email) if email is not None else None
    query = _query(status, sku, gateway, buyer_hash, late, merchant)
    try:
        rows = asyncio.run(_list(settings, query, limit))
    except RuntimeError as exc:
        err.print(
            f"Cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}",
            markup=False,
            highlight=False,
        )
        _leave(REFUSED)
    print_rows(rows, COLUMNS, as_json=as_json, empty="No orders.")
    _leave(0)


@orders_app.command("buyer-hash")
def buyer_hash(email: str = typer.Argument(..., help="The buyer's email.")) -> None:
    """Print the BuyerHash of an email, for a search in the Temporal UI (`BuyerHash = "…"`)."""
    print(_buyer_hash(_settings(), email))


async def _list(settings: Settings, query: str, limit: int) -> list[dict[str, Any]]:
    from temporalio.client import Client

    # Search attributes are never encrypted: no codec (and no vault key) is needed to list them.
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    rows = []
    async for execution in client.list_workflows(query, limit=limit):
        found = execution.typed_search_attributes
        rows.append(
            {
                "order_id": execution.id.removeprefix("order-"),
                "status": found.get(c.SA_ORDER_STATUS),
                "sku": found.get(c.SA_PRODUCT_SKU),
                "gateway": found.get(c.SA_PAYMENT_GATEWAY),
                "amount_cents": found.get(c.SA_AMOUNT_CENTS),
                "late": bool(found.get(c.SA_DELIVERY_LATE)),
                "buyer_hash": found.get(c.SA_BUYER_HASH),
                "started_at": execution.start_time.isoformat() if execution.start_time else None,
                "closed_at": execution.close_time.isoformat() if execution.close_time else None,
                "merchant_id": found.get(c.SA_MERCHANT_ID),
            }
        )
    return rows
