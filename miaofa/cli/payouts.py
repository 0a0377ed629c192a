"""`miaofa payouts …`: platform finance's review queue, one withdrawal's timeline, approve and reject.

Through the API over HTTP, like `miaofa support`: the API checks the token's role (finance or admin),
the workflow keeps the two-person rule, and the audit log names the token's holder. Destinations are
only ever shown masked: the API never sends more.
"""

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import typer

from miaofa import contract as c
from miaofa.cli.common import BAD_INPUT, Column, _stop, call_api, console, print_rows, when

payouts_app = typer.Typer(
    no_args_is_help=True,
    short_help="Review withdrawals, through the API.",
    help=(
        "Platform finance's withdrawals, through the API (MIAOFA_STAFF_API_URL, default the API's own URL), "
        "with your own token (MIAOFA_STAFF_TOKEN, a finance or admin token from `miaofa tokens add`; else "
        "MIAOFA_ADMIN_TOKEN). Each approve and reject is in the audit log under your token's name. Exit "
        "status: 0 done, 1 refused or failed, 2 bad input or settings."
    ),
)
STATUSES = (
    c.WITHDRAWAL_REQUESTED,
    c.WITHDRAWAL_IN_REVIEW,
    c.WITHDRAWAL_APPROVED,
    c.WITHDRAWAL_SUBMITTED,
    c.WITHDRAWAL_PAID,
    c.WITHDRAWAL_FAILED,
    c.WITHDRAWAL_REJECTED,
    c.WITHDRAWAL_RETURNED,
)
MERCHANT = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # a merchant id (m_…) or a slug, as the API takes it


def money(cents: Any) -> str:
    cents = int(cents)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


COLUMNS = (
    Column("withdrawal_id", "withdrawal", whole=True),
    Column("status"),
    Column("merchant", "shop"),
    Column("amount_cents", "amount", show=money),
    Column("currency"),
    Column("destination"),
    Column("created_at", "asked", show=when),
    Column("review_reason", "why a person reviews it"),
)
TIMELINE = (Column("at", show=when), Column("stage"), Column("note"))


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return call_api(method, path, body, fallback="admin_token")


def _path(withdrawal: str, action: str = "") -> str:
    return f"/admin/withdrawals/{quote(withdrawal, safe='')}" + (f"/{action}" if action else "")


@payouts_app.command("list")
def listing(
    status: str = typer.Option(c.WITHDRAWAL_IN_REVIEW, help=f"One of: {', '.join(STATUSES)}."),
    merchant: str = typer.Option(None, help="One shop's: its slug or merchant id (m_…)."),
    limit: int = typer.Option(100, min=1, max=500, help="How many, oldest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts."),
) -> None:
    """Withdrawals in one status, oldest first: by default the review queue. A table on a terminal,
    whole values tab-separated in a pipe."""
    if status not in STATUSES:
        _stop(f"--status must be one of: {', '.join(STATUSES)}.", BAD_INPUT)
    query: dict[str, Any] = {"status": status, "limit": limit}
    if merchant is not None:
        if not MERCHANT.match(merchant):
            _stop("--merchant is a slug or a merchant id: letters, digits, _ and - only.", BAD_INPUT)
        query["merchant"] = merchant
    found = _call("GET", "/admin/withdrawals?" + urlencode(query))["withdrawals"]
    print_rows(found, COLUMNS, as_json=as_json, empty=f"No withdrawals {status}.")


@payouts_app.command("show")
def show(
    withdrawal: str = typer.Argument(..., help="The withdrawal id (wd_…)."),
    as_json: bool = typer.Option(False, "--json", help="The API's answer as JSON."),
) -> None:
    """The withdrawal, its shop, its destination masked, and its timeline as the merchant reads it."""
    seen = _call("GET", _path(withdrawal))
    if as_json:
        print(json.dumps(seen, ensure_ascii=False))
        return
    console.print(
        f"Withdrawal {seen['withdrawal_id']} is {seen['status']}: {money(seen['amount_cents'])} "
        f"{seen['currency']} (fee {money(seen['fee_cents'])}) to {seen['destination']} on {seen['rail']}, "
        f"for shop {seen['merchant']} ({seen['merchant_id']}).",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if seen.get("review_reason"):
        console.print(f"Review required: {seen['review_reason']}.", markup=False, highlight=False, soft_wrap=True)
    print_rows(seen["timeline"], TIMELINE, as_json=False, empty="No timeline yet.", title="Timeline")


@payouts_app.command("approve")
def approve(
    withdrawal: str = typer.Argument(..., help="The withdrawal id (wd_…)."),
    reason: str = typer.Option(..., "--reason", help="Why, for the merchant's timeline and the audit log."),
) -> None:
    """Approve a withdrawal in review. Above the second threshold a different person must approve too."""
    done = _call("POST", _path(withdrawal, "approve"), {"reason": reason})
    approvals = done.get("approvals") or []
    print(f"Approved. Withdrawal {done['withdrawal_id']} has {len(approvals)} approval(s): {', '.join(approvals)}.")


@payouts_app.command("reject")
def reject(
    withdrawal: str = typer.Argument(..., help="The withdrawal id (wd_…)."),
    reason: str = typer.Option(..., "--reason", help="Why, in words the merchant reads (required)."),
) -> None:
    """Reject a withdrawal in review. Its money goes back to the shop's balance, with the reason."""
    done = _call("POST", _path(withdrawal, "reject"), {"reason": reason})
    print(f"Rejected. Withdrawal {done['withdrawal_id']}'s money goes back to the shop's balance.")
