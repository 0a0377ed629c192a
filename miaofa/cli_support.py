"""`miaofa support …`, `miaofa orders search` and `miaofa audit`: support's work from a terminal.

The support commands go through the API over HTTP, never straight to Temporal: one road for every
caller, so the API's checks, the workflow's rules and the audit log apply, under the name of the
token's holder. `orders search` asks Temporal's visibility store and `audit` reads the database:
they run where the shop's settings are (an ops host).
"""

import asyncio
import json
import re
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.table import Table

from miaofa import contract as c

support_app = typer.Typer(no_args_is_help=True, short_help="Show and act on an order, through the API.", help=(
    "Support an order through the API (MIAOFA_STAFF_API_URL, default the API's own URL), with your own "
    "token (MIAOFA_STAFF_TOKEN, from `miaofa tokens add`; else MIAOFA_SUPPORT_TOKEN): the API checks each "
    "action and writes it to the audit log under your token's name. Exit status: 0 done, 1 refused "
    "or failed, 2 bad input or settings."))
orders_app = typer.Typer(help="Find orders.", no_args_is_help=True)

REFUSED = 1
BAD_INPUT = 2
# Values put into a visibility query: no quotes, so nothing can change the query's meaning.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
REASON = typer.Option("", "--reason", help="Why, for the order's timeline and the audit log.")


def _cli():
    from miaofa import cli  # the shared settings loader and consoles

    return cli


def _stop(message: str, code: int) -> NoReturn:
    _cli().err.print(message, markup=False, highlight=False)
    raise typer.Exit(code)


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the API; its refusal printed as one sentence and the exit status set."""
    settings = _cli()._settings()
    token = settings.staff_token or settings.support_token
    if not token:
        _stop("MIAOFA_STAFF_TOKEN is not set: ask an admin for one (`miaofa tokens add`).", BAD_INPUT)
    base = (settings.staff_api_url or settings.api_url).rstrip("/")
    try:
        response = httpx.request(method, base + path, json=body, headers={"Authorization": f"Bearer {token}"},
                                 timeout=settings.update_timeout_seconds + 10)
    except httpx.HTTPError as exc:
        _stop(f"Cannot reach the API at {base} ({type(exc).__name__}); set MIAOFA_STAFF_API_URL.", REFUSED)
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.is_success:
        return answer
    error = answer.get("error", "") if isinstance(answer, dict) else ""
    detail = str(answer.get("detail", "")) if isinstance(answer, dict) else ""
    detail = detail or response.reason_phrase
    if response.status_code == 401:
        _stop(f"The API refused the token: {detail}.", BAD_INPUT)
    if response.status_code in (404, 405) and error in ("not_found", "method_not_allowed"):
        # A route this API does not have (an older shop): not a refusal of the order.
        _stop(f"This API has no {method} {path.rsplit('/', 1)[-1]} endpoint; it may be an older version.", BAD_INPUT)
    if response.status_code in (400, 422):
        _stop(f"Bad input: {detail}.", BAD_INPUT)
    if response.status_code >= 500:
        _stop(f"The API could not do it now ({error or response.status_code}): {detail}.", REFUSED)
    _stop(f"Refused ({error or response.status_code}): {detail}.", REFUSED)


def _order_path(order: str, action: str = "") -> str:
    return f"/support/orders/{quote(order, safe='')}" + (f"/{action}" if action else "")


def _act(order: str, action: str, reason: str) -> None:
    result = _call("POST", _order_path(order, action), {"reason": reason})
    print(f"Order {result.get('order_id', order)} is {result.get('status', '?')}: {result.get('detail', '')}.")


@support_app.command("refund")
def refund(order: str = typer.Argument(..., help="The order id."), reason: str = REASON) -> None:
    """Refund a delivered order at its gateway and mark its keys refunded."""
    _act(order, "refund", reason)


@support_app.command("resend")
def resend(order: str = typer.Argument(..., help="The order id."), reason: str = REASON) -> None:
    """Send the delivery email again."""
    _act(order, "resend", reason)


@support_app.command("cancel")
def cancel(order: str = typer.Argument(..., help="The order id."), reason: str = REASON) -> None:
    """Cancel an unpaid order: close its payment and release its stock."""
    _act(order, "cancel", reason)


@support_app.command("approve")
def approve(order: str = typer.Argument(..., help="The order id."), reason: str = REASON) -> None:
    """Approve an order held for review: it is delivered."""
    _act(order, "approve", reason)


@support_app.command("reject")
def reject(order: str = typer.Argument(..., help="The order id."), reason: str = REASON) -> None:
    """Reject an order held for review: it is refunded and its stock released."""
    _act(order, "reject", reason)


@support_app.command("reveal")
def reveal(order: str = typer.Argument(..., help="The order id."),
           reason: str = typer.Option(..., "--reason", help="Why the keys are needed (audited).")) -> None:
    """Print the order's keys in clear, one a line. The API writes who asked, and why, to the audit log."""
    result = _call("POST", _order_path(order, "reveal"), {"reason": reason})
    keys = result.get("keys", [])
    if not keys:
        _stop(f"Order {order} holds no delivered keys.", REFUSED)
    for key in keys:
        print(f"{key['key']}\t{key['status']}")


def _when(value: Any) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(str(value)).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@support_app.command("show")
def show(order: str = typer.Argument(..., help="The order id."),
         as_json: bool = typer.Option(False, "--json", help="The API's answer as JSON.")) -> None:
    """The order: status, timeline, payment, notify log and its keys, masked."""
    view = _call("GET", _order_path(order))
    if as_json:
        print(json.dumps(view, ensure_ascii=False))
        return
    console = _cli().console
    console.print(f"[bold]Order {view['order_id']}[/]  {view['status']}  {view['quantity']} × {view['sku']}  "
                  f"{view['amount_cents']} {view['currency']} (minor units)", highlight=False)
    payment = view.get("payment") or {}
    if payment:
        console.print("Payment: " + ", ".join(f"{name} {value}" for name, value in payment.items()
                                              if value not in (None, "") and name != "pay_url"), highlight=False)
    timeline = Table("at", "stage", "detail", title="Timeline", title_justify="left")
    for event in view.get("timeline", []):
        detail = ", ".join(f"{k}={v}" for k, v in (event.get("detail") or {}).items())
        timeline.add_row(_when(event["at"]), event["stage"], detail)
    console.print(timeline)
    notifies = view.get("notifies") or []
    if notifies:
        table = Table(*notifies[0].keys(), title="Notifies", title_justify="left")
        for notify in notifies:
            table.add_row(*(str(value) if value is not None else "" for value in notify.values()))
        console.print(table)
    keys = view.get("keys") or []
    console.print("Keys: " + (", ".join(f"{key['masked']} ({key['status']})" for key in keys) or "none"),
                  highlight=False)


def _query(status: str | None, sku: str | None, gateway: str | None, buyer_hash: str | None, late: bool) -> str:
    clauses = [f"WorkflowType = '{c.ORDER_WORKFLOW}'"]
    for attribute, value in (("OrderStatus", status), ("ProductSku", sku), ("PaymentGateway", gateway),
                             ("BuyerHash", buyer_hash)):
        if value is not None:
            clauses.append(f"{attribute} = '{value}'")
    if late:
        clauses.append("DeliveryLate = true")
    return " AND ".join(clauses)


@orders_app.command("search")
def search(email: str = typer.Option(None, help="The buyer's email (hashed here, as the shop does: never sent)."),
           status: str = typer.Option(None, help=f"One of: {', '.join(c.STATUSES)}."),
           sku: str = typer.Option(None, help="The product's SKU."),
           gateway: str = typer.Option(None, help="The payment gateway."),
           late: bool = typer.Option(False, "--late", help="Only orders delivered past their SLA."),
           limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
           as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """Find orders in Temporal's visibility store by the search attributes (as the Temporal UI does).

    Visibility is eventually consistent: an order may show its new status a second after it changed.
    """
    cli = _cli()
    settings = cli._settings()
    if status is not None and status not in c.STATUSES:
        _stop(f"--status must be one of: {', '.join(c.STATUSES)}.", BAD_INPUT)
    for name, value in (("--sku", sku), ("--gateway", gateway)):
        if value is not None and not SAFE_VALUE.match(value):
            _stop(f"{name} may hold letters, digits and . _ : - only.", BAD_INPUT)
    buyer_hash = None
    if email is not None:
        if not settings.vault_key:
            _stop("MIAOFA_VAULT_KEY is not set: it is needed to hash the email as the shop does.", BAD_INPUT)
        from miaofa.crypto.vault import Vault

        buyer_hash = Vault(settings.vault_key).buyer_hash(email)
    query = _query(status, sku, gateway, buyer_hash, late)
    try:
        rows = asyncio.run(_list(settings, query, limit))
    except RuntimeError as exc:
        cli.err.print(f"Cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}",
                      markup=False, highlight=False)
        _leave(REFUSED)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    elif not rows:
        cli.console.print("No orders.")
    else:
        table = Table("order", "status", "sku", "gateway", "amount", "late", "started", "closed")
        for row in rows:
            table.add_row(row["order_id"], row["status"], row["sku"], row["gateway"], str(row["amount_cents"]),
                          "yes" if row["late"] else "", _when(row["started_at"]), _when(row["closed_at"]))
        cli.console.print(table)
    _leave(0)


def _leave(code: int) -> NoReturn:
    from miaofa.cli import _leave as leave

    leave(code)


@orders_app.command("buyer-hash")
def buyer_hash(email: str = typer.Argument(..., help="The buyer's email.")) -> None:
    """Print the BuyerHash of an email, for a search in the Temporal UI (`BuyerHash = "…"`)."""
    settings = _cli()._settings()
    if not settings.vault_key:
        _stop("MIAOFA_VAULT_KEY is not set: it is needed to hash the email as the shop does.", BAD_INPUT)
    from miaofa.crypto.vault import Vault

    print(Vault(settings.vault_key).buyer_hash(email))


async def _list(settings, query: str, limit: int) -> list[dict[str, Any]]:
    from temporalio.client import Client

    # Search attributes are never encrypted: no codec (and no vault key) is needed to list them.
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    rows = []
    async for execution in client.list_workflows(query, limit=limit):
        found = execution.typed_search_attributes
        rows.append({"order_id": execution.id.removeprefix("order-"), "status": found.get(c.SA_ORDER_STATUS),
                     "sku": found.get(c.SA_PRODUCT_SKU), "gateway": found.get(c.SA_PAYMENT_GATEWAY),
                     "amount_cents": found.get(c.SA_AMOUNT_CENTS), "late": bool(found.get(c.SA_DELIVERY_LATE)),
                     "buyer_hash": found.get(c.SA_BUYER_HASH),
                     "started_at": execution.start_time.isoformat() if execution.start_time else None,
                     "closed_at": execution.close_time.isoformat() if execution.close_time else None})
    return rows


def audit_log(actor: str = typer.Option(None, help="Only this actor (a token's name, admin, support, system…)."),
              action: str = typer.Option(None, help="Only actions starting with this (e.g. support. or order.refund)."),
              target: str = typer.Option(None, help="Only this target (an order id, a SKU, token:NAME…)."),
              limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
              as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """The audit log, newest first: who did what to which order, product or token, and when."""
    cli = _cli()
    settings = cli._settings()
    if not settings.database_url:
        _stop("MIAOFA_DATABASE_URL is not set.", BAD_INPUT)
    try:
        rows = asyncio.run(_audit_rows(settings.database_url, actor, action, target, limit))
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        cli.console.print("No entries.")
        return
    table = Table("id", "at", "actor", "action", "target", "detail")
    for row in rows:
        table.add_row(str(row["id"]), _when(row["at"]), row["actor"], row["action"], row["target"],
                      ", ".join(f"{k}={v}" for k, v in row["detail"].items()))
    cli.console.print(table)


async def _audit_rows(database_url: str, actor: str | None, action: str | None, target: str | None,
                      limit: int) -> list[dict[str, Any]]:
    from miaofa import audit
    from miaofa.db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            found = await audit.entries(session, actor=actor, action_prefix=action, target=target, limit=limit)
            return [{"id": row.id, "at": row.at.isoformat(), "actor": row.actor, "action": row.action,
                     "target": row.target, "detail": row.detail} for row in found]
    finally:
        await engine.dispose()
