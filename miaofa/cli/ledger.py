"""`miaofa ledger check`: prove that the ledger adds up, where the platform's settings are."""

import asyncio
import time

import typer

from miaofa.cli.common import BAD_INPUT, REFUSED, _require, _settings, _stop, database, err

ledger_app = typer.Typer(no_args_is_help=True, short_help="The merchants' money.", help="The merchants' money.")


@ledger_app.command("check")
def check_ledger() -> None:
    """Check every invariant: zero-sum transactions, balances equal to their entries, no negative
    available, pending equal to the open holds, a sale for every delivered order and a clawback for
    every refunded sale. Exit 0 when clean, 1 with each violation on its own line."""
    from miaofa.ledger import check

    settings = _settings()
    _require(settings, "database_url", code=BAD_INPUT)

    async def run() -> list[check.Violation]:
        async with database(settings) as sessionmaker, sessionmaker() as session:
            return await check.run(session)

    started = time.perf_counter()
    try:
        found = asyncio.run(run())
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)
    took = time.perf_counter() - started
    for violation in found:
        print(f"{violation.check}\t{violation.detail}")
    if found:
        err.print(f"The ledger does not add up: {len(found)} violations ({took:.2f} s).", markup=False, highlight=False)
        raise typer.Exit(1)
    err.print(f"The ledger adds up ({took:.2f} s).", markup=False, highlight=False)


statements_app = typer.Typer(
    no_args_is_help=True,
    short_help="A shop's statements, of a day or a month.",
    help="A shop's statements, of a UTC day (YYYY-MM-DD) or a month (YYYY-MM).",
)
PERIOD_HELP = "A UTC day YYYY-MM-DD, or a month YYYY-MM."


def _statement(slug: str, period: str) -> dict:
    from miaofa.errors import InvalidInput, MiaofaError
    from miaofa.ledger import statements
    from miaofa.merchants import accounts

    try:
        asked = statements.parse_period(period)
    except InvalidInput:
        _stop(f"{period!r} is not a day or a month: use YYYY-MM-DD or YYYY-MM.", BAD_INPUT)
    settings = _settings()
    _require(settings, "database_url", code=BAD_INPUT)

    async def run() -> dict:
        async with database(settings) as sessionmaker, sessionmaker.begin() as session:
            merchant = await accounts.by_slug(session, slug)
            return await statements.of_period(session, merchant.id, asked)

    try:
        return asyncio.run(run())
    except MiaofaError as exc:
        _stop(f"Refused: {exc.detail}.", REFUSED)
    except OSError as exc:
        _stop(f"Cannot reach the database: {exc.strerror or exc}", REFUSED)


@statements_app.command("show")
def show(slug: str = typer.Argument(..., help="The shop's slug."), period: str = typer.Argument(..., help=PERIOD_HELP)):
    """Opening and closing balances per currency, the number of lines, and the hash chain (none
    while the day or month is still open: it is computed live, not stored)."""
    from miaofa.ledger.statements import KINDS

    found = _statement(slug, period)
    for currency, section in found["currencies"].items():
        opening = " ".join(f"{k} {section['opening'].get(k, 0)}" for k in KINDS)
        closing = " ".join(f"{k} {section['closing'].get(k, 0)}" for k in KINDS)
        print(f"{currency}\topening\t{opening}")
        print(f"{currency}\tlines\t{len(section['lines'])}")
        print(f"{currency}\tclosing\t{closing}")
    if not found["closed"]:
        print("open\tnot closed yet: computed now, stored an hour after the day ends (UTC)")
        return
    print(f"prev_hash\t{found['prev_hash']}")
    print(f"hash\t{found['hash']}")


@statements_app.command("export")
def export(
    slug: str = typer.Argument(..., help="The shop's slug."),
    period: str = typer.Argument(..., help=PERIOD_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of CSV."),
) -> None:
    """The whole statement on stdout: CSV (a row per line, opening and closing rows) or JSON."""
    import json

    from miaofa.ledger import statements

    found = _statement(slug, period)
    print(
        json.dumps(found, ensure_ascii=False) if as_json else statements.as_csv(found), end="" if not as_json else "\n"
    )
