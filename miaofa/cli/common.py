"""What every `miaofa` command shares: settings, the consoles, exits, the database, rows printed.

The sub-modules import this one and nothing else of the CLI; `miaofa/cli/__init__.py` assembles
them. Heavy imports (SQLAlchemy, temporalio, the shop's domain modules) stay inside the commands
that use them, so `miaofa --help` and every process `miaofa up` starts load only what they run.
"""

import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from miaofa.devstack.secrets import with_dev_defaults
from miaofa.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

console = Console()
err = Console(stderr=True, soft_wrap=True)

REFUSED = 1  # refused or failed
BAD_INPUT = 2  # bad input or settings: like a usage error, the command was never started
_TYPE_MESSAGES = {
    "int_parsing": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "path_type": "must be a path",
}


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem, named as its environment variable: `MIAOFA_API_PORT must be an integer`.

    Never echoes the value: it may be a secret.
    """
    lines = []
    for error in exc.errors():
        name = "MIAOFA_" + "__".join(str(part) for part in error["loc"]).upper()
        message = _TYPE_MESSAGES.get(error["type"]) or error["msg"].removeprefix("Value error, ")
        message = " ".join(message.split())
        # A whole-gateway check names its own setting (MIAOFA_ALIPAY__APP_ID …), not the group.
        lines.append(message if message.startswith("MIAOFA_") else f"{name} {message}")
    return lines


def _load_settings() -> Settings:
    """The settings from the environment, or one line per bad setting on stderr and exit status 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        for line in settings_problems(exc):
            print(line, file=sys.stderr)
        raise typer.Exit(BAD_INPUT) from None


def _settings() -> Settings:
    return with_dev_defaults(_load_settings())


def _leave(code: int = 0) -> NoReturn:
    """Exit without the interpreter's teardown, for commands that held a Temporal client: its runtime
    threads can abort the teardown (SIGABRT after all was printed, temporalio/sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int = REFUSED) -> NoReturn:
    err.print(f"[red]Error:[/] {message}")
    raise typer.Exit(code)


def _stop(message: str, code: int) -> NoReturn:
    """The message as it is (no markup: it may quote the API or the user) and the exit status."""
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code)


def call_api(method: str, path: str, body: dict[str, Any] | None = None, *, fallback: str) -> dict[str, Any]:
    """One request to the shop's API (MIAOFA_STAFF_API_URL) with the person's own token
    (MIAOFA_STAFF_TOKEN; else the settings' token named by `fallback`). Its refusal is printed as one
    sentence and sets the exit status: 2 for bad input or a token refused, 1 for anything else."""
    import httpx

    settings = _settings()
    token = settings.staff_token or getattr(settings, fallback)
    if not token:
        _stop("MIAOFA_STAFF_TOKEN is not set: ask an admin for one (`miaofa tokens add`).", BAD_INPUT)
    base = (settings.staff_api_url or settings.api_url).rstrip("/")
    try:
        response = httpx.request(
            method,
            base + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=settings.update_timeout_seconds + 10,
        )
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
        # A route this API does not have (an older shop): not a refusal of what was asked.
        _stop(f"This API has no {method} {path.rsplit('/', 1)[-1]} endpoint; it may be an older version.", BAD_INPUT)
    if response.status_code in (400, 422):
        _stop(f"Bad input: {detail}.", BAD_INPUT)
    if response.status_code >= 500:
        _stop(f"The API could not do it now ({error or response.status_code}): {detail}.", REFUSED)
    _stop(f"Refused ({error or response.status_code}): {detail}.", REFUSED)


def _require(settings: Settings, *names: str, code: int = REFUSED) -> None:
    missing = [f"MIAOFA_{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        _fail(f"{', '.join(missing)} not set (or run `miaofa up` once to create dev values).", code)


def _logging(settings: Settings) -> None:
    # Error types and ids only: exception messages (SQL parameters, emails) never reach a log.
    from miaofa.telemetry import logs

    logs.configure(settings.log_level, settings.log_format)


@asynccontextmanager
async def database(settings: Settings, pool_size: int = 1) -> AsyncIterator["async_sessionmaker[AsyncSession]"]:
    """A sessionmaker on the shop's database for one command; its engine disposed at the end."""
    from miaofa.db.engine import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url, pool_size=pool_size)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


def when(value: datetime | str | None) -> str:
    """A timestamp in the local time zone, to the second, for a table on the terminal."""
    if not value:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Column:
    """A column of a listing: `key` is the row's field (the JSON key, the TSV header); `show` formats
    it for the terminal's table only; `whole` columns (ids) are never cut there."""

    key: str
    title: str = ""
    show: Callable[[Any], str] | None = None
    whole: bool = False


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _tsv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=_json_value)
    else:
        text = str(value)
    # One row a line, one cell a column, whatever the value holds.
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def print_rows(
    rows: Sequence[dict[str, Any]], columns: Iterable[Column], *, as_json: bool, empty: str, title: str | None = None
) -> None:
    """Rows as a table on a terminal; in a pipe whole values, tab-separated under a header line of
    the fields' names (as `gh` and `kubectl` do); JSON lines with --json, every field.

    A table is cut to the terminal's width (an 80-column pipe made `3704adc…` of an order id), so
    only a person at a terminal gets one. With no rows, `empty` is said on the terminal (stderr
    in a pipe: stdout holds data only).
    """
    columns = list(columns)
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, default=_json_value))
        return
    if not sys.stdout.isatty():
        print("\t".join(column.key for column in columns))
        for row in rows:
            print("\t".join(_tsv_cell(row[column.key]) for column in columns))
        if not rows:
            err.print(empty, markup=False, highlight=False)
        sys.stdout.flush()
        return
    if not rows:
        console.print(empty, markup=False, highlight=False)
        return
    shown = [
        [column.show(row[column.key]) if column.show else _tsv_cell(row[column.key]) for column in columns]
        for row in rows
    ]
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        if column.whole:  # the other columns give way first; folded, never cut, on a narrow terminal
            table.add_column(
                column.title or column.key, overflow="fold", min_width=max(len(cells[index]) for cells in shown)
            )
        else:
            table.add_column(column.title or column.key)
    for cells in shown:
        table.add_row(*(Text(cell) for cell in cells))  # values are text, never rich markup
    console.print(table)
