"""`miaofa audit`: the audit log from the shop's database, where the shop's settings are."""

import asyncio
from typing import Any

import typer

from miaofa.cli.common import BAD_INPUT, REFUSED, Column, _settings, _stop, database, print_rows, when
from miaofa.settings import Settings

COLUMNS = (
    Column("id"),
    Column("at", show=when),
    Column("actor"),
    Column("action"),
    Column("target", whole=True),
    Column("detail", show=lambda detail: ", ".join(f"{k}={v}" for k, v in detail.items())),
)


def audit_log(
    actor: str = typer.Option(None, help="Only this actor (a token's name, admin, support, system…)."),
    action: str = typer.Option(None, help="Only actions starting with this (e.g. support. or order.refund)."),
    target: str = typer.Option(None, help="Only this target (an order id, a SKU, token:NAME…)."),
    limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts."),
) -> None:
    """The audit log, newest first: who did what to which order, product or token, and when.

    A table on a terminal; in a pipe whole values, tab-separated under a header line.
    """
    settings = _settings()
    if not settings.database_url:
        _stop("MIAOFA_DATABASE_URL is not set.", BAD_INPUT)
    try:
        rows = asyncio.run(_audit_rows(settings, actor, action, target, limit))
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)
    print_rows(rows, COLUMNS, as_json=as_json, empty="No entries.")


async def _audit_rows(
    settings: Settings, actor: str | None, action: str | None, target: str | None, limit: int
) -> list[dict[str, Any]]:
    from miaofa import audit

    async with database(settings) as sessionmaker, sessionmaker() as session:
        found = await audit.entries(session, actor=actor, action_prefix=action, target=target, limit=limit)
        return [
            {
                "id": row.id,
                "at": row.at.isoformat(),
                "actor": row.actor,
                "action": row.action,
                "target": row.target,
                "detail": row.detail,
            }
            for row in found
        ]
