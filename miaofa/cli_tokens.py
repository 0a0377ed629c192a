"""`miaofa tokens …`: named support and admin tokens, so every action in the audit log has a person.

Runs where the shop's settings are: it writes to the database, and hashes with the vault key.
"""

import asyncio
import getpass
import json
from typing import Any

import typer
from rich.table import Table

from miaofa.cli_support import BAD_INPUT, REFUSED, _stop

tokens_app = typer.Typer(no_args_is_help=True, short_help="Named support and admin tokens.", help=(
    "Named support and admin tokens. A token is shown once, when it is made; the database keeps only a "
    "keyed hash of it. The holder's name is the actor of everything done with it. MIAOFA_ADMIN_TOKEN and "
    "MIAOFA_SUPPORT_TOKEN still work, as the holders admin and support."))


def _settings():
    from miaofa import cli

    settings = cli._settings()
    missing = [f"MIAOFA_{name.upper()}" for name in ("database_url", "vault_key") if not getattr(settings, name)]
    if missing:
        _stop(f"{', '.join(missing)} not set.", BAD_INPUT)
    return settings


async def _run(settings, work) -> Any:
    from miaofa.db.engine import make_engine, make_sessionmaker
    from miaofa.crypto.vault import Vault

    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await work(session, Vault(settings.vault_key))
    finally:
        await engine.dispose()


def _who() -> str:
    return f"cli:{getpass.getuser()}"


def _guarded(settings, work) -> Any:
    from miaofa.staff import TokenError

    try:
        return asyncio.run(_run(settings, work))
    except TokenError as exc:
        _stop(f"Refused: {exc}.", REFUSED)
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)


@tokens_app.command("add")
def add(name: str = typer.Argument(..., help="Who holds it: lowercase letters, digits, . _ - (e.g. ann)."),
        role: str = typer.Option(..., "--role", help="support or admin (an admin may do what support does).")) -> None:
    """Make a token for NAME and print it once. Hand it over privately; it cannot be shown again."""
    from miaofa import audit, staff

    if role not in staff.ROLES:
        _stop(f"--role must be one of: {', '.join(staff.ROLES)}.", BAD_INPUT)
    if problem := staff.name_problem(name):
        _stop(f"Bad name: {problem}.", BAD_INPUT)

    async def work(session, vault):
        token = await staff.add(session, vault, role=role, name=name, created_by=_who())
        audit.record(session, _who(), "token.add", f"token:{name}", role=role)
        return token

    token = _guarded(_settings(), work)
    print(token)
    _cli_err(f"Token for {name} ({role}) made. Shown once: store it now.")


def _cli_err(message: str) -> None:
    from miaofa import cli

    cli.err.print(message, markup=False, highlight=False)


@tokens_app.command("list")
def listing(revoked: bool = typer.Option(False, "--revoked", help="Show revoked tokens too."),
            as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """The tokens' holders, roles, when made and last used. Never a token."""
    from miaofa import cli, staff

    async def work(session, _vault):
        return [{"name": row.name, "role": row.role, "created_at": row.created_at.isoformat(),
                 "created_by": row.created_by,
                 "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
                 "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}
                for row in await staff.listing(session, with_revoked=revoked)]

    rows = _guarded(_settings(), work)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        cli.console.print("No named tokens (only the settings' MIAOFA_ADMIN_TOKEN and MIAOFA_SUPPORT_TOKEN).")
        return
    table = Table("name", "role", "created", "by", "last used", *(["revoked"] if revoked else []))
    for row in rows:
        table.add_row(row["name"], row["role"], row["created_at"][:19].replace("T", " "), row["created_by"],
                      (row["last_used_at"] or "never")[:19].replace("T", " "),
                      *([(row["revoked_at"] or "")[:19].replace("T", " ")] if revoked else []))
    cli.console.print(table)


@tokens_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The holder's name.")) -> None:
    """Revoke NAME's token: refused from the next request on. The name stays in the audit log."""
    from miaofa import audit, staff

    async def work(session, _vault):
        row = await staff.revoke(session, name)
        audit.record(session, _who(), "token.revoke", f"token:{name}", role=row.role)

    _guarded(_settings(), work)
    print(f"Token of {name} revoked.")
