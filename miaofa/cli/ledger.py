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
