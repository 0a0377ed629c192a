"""`miaofa support …`: show an order and act on it, through the API.

Always over HTTP, never straight to Temporal: one road for every caller, so the API's checks, the
workflow's rules and the audit log apply, under the name of the token's holder. (`miaofa orders`
and `miaofa audit` read Temporal and the database where the shop's settings are: an ops host.)
"""

import json
from typing import Any
from urllib.parse import quote

import typer
from rich.table import Table

from miaofa.cli.common import REFUSED, _stop, call_api, console, when

support_app = typer.Typer(
    no_args_is_help=True,
    short_help="Show and act on an order, through the API.",
    help=(
        "Support an order through the API (MIAOFA_STAFF_API_URL, default the API's own URL), with your own "
        "token (MIAOFA_STAFF_TOKEN, from `miaofa tokens add`; else MIAOFA_SUPPORT_TOKEN): the API checks each "
        "action and writes it to the audit log under your token's name. Exit status: 0 done, 1 refused "
        "or failed, 2 bad input or settings."
    ),
)
REASON = typer.Option("", "--reason", help="Why, for the order's timeline and the audit log.")


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return call_api(method, path, body, fallback="support_token")


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
    """Approve an order held for review: its payment is created and the buyer can pay."""
    _act(order, "approve", reason)


@support_app.command("reject")
def reject(order: str = typer.Argument(..., help="The order id."), reason: str = REASON) -> None:
    """Reject an order held for review: its stock is released (nothing was paid, nothing is refunded)."""
    _act(order, "reject", reason)


@support_app.command("reveal")
def reveal(
    order: str = typer.Argument(..., help="The order id."),
    reason: str = typer.Option(..., "--reason", help="Why the keys are needed (audited)."),
) -> None:
    """Print the order's keys in clear, one a line. The API writes who asked, and why, to the audit log."""
    result = _call("POST", _order_path(order, "reveal"), {"reason": reason})
    keys = result.get("keys", [])
    if not keys:
        _stop(f"Order {order} holds no delivered keys.", REFUSED)
    for key in keys:
        print(f"{key['key']}\t{key['status']}")


@support_app.command("show")
def show(
    order: str = typer.Argument(..., help="The order id."),
    as_json: bool = typer.Option(False, "--json", help="The API's answer as JSON."),
) -> None:
    """The order: status, timeline, payment, notify log and its keys, masked."""
    view = _call("GET", _order_path(order))
    if as_json:
        print(json.dumps(view, ensure_ascii=False))
        return
    console.print(
        f"[bold]Order {view['order_id']}[/]  {view['status']}  {view['quantity']} × {view['sku']}  "
        f"{view['amount_cents']} {view['currency']} (minor units)",
        highlight=False,
    )
    payment = view.get("payment") or {}
    if payment:
        console.print(
            "Payment: "
            + ", ".join(
                f"{name} {value}" for name, value in payment.items() if value not in (None, "") and name != "pay_url"
            ),
            highlight=False,
        )
    timeline = Table("at", "stage", "detail", title="Timeline", title_justify="left")
    for event in view.get("timeline", []):
        detail = ", ".join(f"{k}={v}" for k, v in (event.get("detail") or {}).items())
        timeline.add_row(when(event["at"]), event["stage"], detail)
    console.print(timeline)
    notifies = view.get("notifies") or []
    if notifies:
        table = Table(*notifies[0].keys(), title="Notifies", title_justify="left")
        for notify in notifies:
            table.add_row(*(str(value) if value is not None else "" for value in notify.values()))
        console.print(table)
    keys = view.get("keys") or []
    console.print(
        "Keys: " + (", ".join(f"{key['masked']} ({key['status']})" for key in keys) or "none"), highlight=False
    )
