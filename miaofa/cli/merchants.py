"""`miaofa merchants …`: the platform admin opens, lists, suspends and resumes shops.

Runs where the platform's settings are: it writes to the database, and hashes with the vault key.
"""

import asyncio
from typing import Any

import typer

from miaofa.cli.common import BAD_INPUT, REFUSED, Column, _stop, err, print_rows
from miaofa.cli.tokens import _run, _token_settings, _who

merchants_app = typer.Typer(
    no_args_is_help=True,
    short_help="The shops on the platform.",
    help=(
        "The shops on the platform. Each has a slug (its storefront is /s/<slug>/), a settlement mode, a fee "
        "and a hold. The owner's token is shown once, when the shop is made."
    ),
)

COLUMNS = (
    Column("merchant_id", "id", whole=True),
    Column("slug", whole=True),
    Column("name"),
    Column("settlement"),
    Column("fee_bps", "fee bps"),
    Column("hold_seconds", "hold s"),
    Column("status"),
    Column("status_reason", "why"),
)


def _guarded(work) -> Any:
    from miaofa.errors import MiaofaError

    try:
        return asyncio.run(_run(_token_settings(), work))
    except MiaofaError as exc:
        _stop(f"Refused: {exc.detail}.", BAD_INPUT if exc.status_code == 422 else REFUSED)
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)


@merchants_app.command("add")
def add(
    slug: str = typer.Argument(..., help="The shop's slug: lowercase letters, digits and '-' (e.g. tea-house)."),
    name: str = typer.Option(..., "--name", help="The shop's name, as buyers see it."),
    settlement: str = typer.Option("platform", "--settlement", help="platform or direct."),
    fee_bps: int = typer.Option(0, "--fee-bps", help="The platform's fee in basis points (250 = 2.5 %)."),
    hold_seconds: int = typer.Option(0, "--hold-seconds", help="How long a sale is held before it can be withdrawn."),
) -> None:
    """Open the shop SLUG and print its owner's token once. Hand it over privately."""
    from miaofa.merchants import accounts

    async def work(session, vault):
        made = await accounts.create(
            session,
            vault,
            slug=slug,
            name=name,
            settlement=settlement,
            fee_bps=fee_bps,
            hold_seconds=hold_seconds,
            created_by=_who(),
        )
        return made.merchant.id, made.owner_token

    merchant_id, token = _guarded(work)
    print(token)
    err.print(
        f"Shop {slug} ({merchant_id}) opened: /s/{slug}/. Its owner's token is above, shown once: store it now.",
        markup=False,
        highlight=False,
    )


@merchants_app.command("list")
def listing(as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """Every shop: slug, settlement, fee, hold, status. Never a token."""
    from miaofa.merchants import accounts

    async def work(session, _vault):
        return [accounts.public(m) for m in await accounts.listing(session)]

    print_rows(_guarded(work), COLUMNS, as_json=as_json, empty="No shops.")


@merchants_app.command("suspend")
def suspend(
    slug: str = typer.Argument(..., help="The shop's slug."),
    reason: str = typer.Option(..., "--reason", help="Why, in words the merchant reads."),
) -> None:
    """Stop SLUG taking new orders. Its open orders finish; its money stays its own."""
    from miaofa.merchants import accounts

    async def work(session, _vault):
        await accounts.set_status(session, slug, status="suspended", reason=reason, actor=_who())

    _guarded(work)
    err.print(f"Shop {slug} suspended: it takes no new orders.", markup=False, highlight=False)


@merchants_app.command("resume")
def resume(slug: str = typer.Argument(..., help="The shop's slug.")) -> None:
    """Let SLUG take orders again."""
    from miaofa.merchants import accounts

    async def work(session, _vault):
        await accounts.set_status(session, slug, status="active", reason="", actor=_who())

    _guarded(work)
    err.print(f"Shop {slug} resumed.", markup=False, highlight=False)
