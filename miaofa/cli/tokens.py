"""`miaofa tokens …`: named support, admin and finance tokens, so every action in the audit log has a person.

Runs where the shop's settings are: it writes to the database, and hashes with the vault key.
"""

import asyncio
import getpass
from typing import Any

import typer

from miaofa.cli.common import (
    BAD_INPUT,
    REFUSED,
    Column,
    _require,
    _settings,
    _stop,
    database,
    err,
    print_rows,
)
from miaofa.settings import Settings

tokens_app = typer.Typer(
    no_args_is_help=True,
    short_help="Named support, admin and finance tokens.",
    help=(
        "Named support, admin and finance tokens. A token is shown once, when it is made; the database keeps only a "
        "keyed hash of it. The holder's name is the actor of everything done with it. MIAOFA_ADMIN_TOKEN and "
        "MIAOFA_SUPPORT_TOKEN still work, as the holders admin and support."
    ),
)


def _moment(value: str | None, never: str = "") -> str:
    return (value or never)[:19].replace("T", " ")


COLUMNS = (
    Column("name", whole=True),
    Column("role"),
    Column("created_at", "created", show=_moment),
    Column("created_by", "by"),
    Column("last_used_at", "last used", show=lambda at: _moment(at, "never")),
)
REVOKED = Column("revoked_at", "revoked", show=_moment)


def _token_settings() -> Settings:
    settings = _settings()
    _require(settings, "database_url", "vault_key", code=BAD_INPUT)
    return settings


async def _run(settings: Settings, work) -> Any:
    from miaofa.crypto.vault import Vault

    async with database(settings) as sessionmaker, sessionmaker.begin() as session:
        return await work(session, Vault(settings.vault_key))


def _who() -> str:
    return f"cli:{getpass.getuser()}"


def _guarded(settings: Settings, work) -> Any:
    from miaofa.staff import TokenError

    try:
        return asyncio.run(_run(settings, work))
    except TokenError as exc:
        _stop(f"Refused: {exc}.", REFUSED)
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)


@tokens_app.command("add")
def add(
    name: str = typer.Argument(..., help="Who holds it: lowercase letters, digits, . _ - (e.g. ann)."),
    role: str = typer.Option(
        ..., "--role", help="support, admin or finance (finance reviews withdrawals; an admin may do all three)."
    ),
) -> None:
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

    token = _guarded(_token_settings(), work)
    print(token)
    err.print(f"Token for {name} ({role}) made. Shown once: store it now.", markup=False, highlight=False)


@tokens_app.command("list")
def listing(
    revoked: bool = typer.Option(False, "--revoked", help="Show revoked tokens too."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts."),
) -> None:
    """The tokens' holders, roles, when made and last used. Never a token."""
    from miaofa import staff

    async def work(session, _vault):
        return [
            {
                "name": row.name,
                "role": row.role,
                "created_at": row.created_at.isoformat(),
                "created_by": row.created_by,
                "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
                "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            }
            for row in await staff.listing(session, with_revoked=revoked)
        ]

    rows = _guarded(_token_settings(), work)
    print_rows(
        rows,
        (*COLUMNS, REVOKED) if revoked else COLUMNS,
        as_json=as_json,
        empty="No named tokens (only the settings' MIAOFA_ADMIN_TOKEN and MIAOFA_SUPPORT_TOKEN).",
    )


@tokens_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The holder's name.")) -> None:
    """Revoke NAME's token: refused from the next request on. The name stays in the audit log."""
    from miaofa import audit, staff

    async def work(session, _vault):
        row = await staff.revoke(session, name)
        audit.record(session, _who(), "token.revoke", f"token:{name}", role=row.role)

    _guarded(_token_settings(), work)
    print(f"Token of {name} revoked.")
