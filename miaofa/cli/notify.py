"""`miaofa notify …` and `miaofa gateways`: what the gateways told us, a notify run again, which gateways are on."""

import asyncio
import getpass

import typer

from miaofa.cli.common import Column, _fail, _leave, _require, _settings, console, database, print_rows
from miaofa.settings import Settings

notify_app = typer.Typer(help="Gateway notifies as the shop received them.", no_args_is_help=True)

NOTIFY_COLUMNS = (
    Column("id"),
    Column("received_at", "received", show=lambda at: at.strftime("%Y-%m-%d %H:%M:%S")),
    Column("gateway"),
    Column("method"),
    Column("outcome"),
    Column("order_id", "order", show=lambda order: order or "", whole=True),
    Column("detail", show=lambda detail: detail[:60]),
)
GATEWAY_COLUMNS = (Column("gateway"), Column("state"), Column("needs", show=", ".join), Column("bill"))


@notify_app.command("list")
def notify_list(
    gateway: str = typer.Option(None, help="Only this gateway."),
    order: str = typer.Option(None, help="Only this order id."),
    outcome: str = typer.Option(None, help="accepted, duplicate, stray, ignored, foreign or rejected."),
    limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts."),
) -> None:
    """Notifies newest first, with what was made of each (bodies stay in the database)."""
    settings = _settings()
    _require(settings, "database_url")
    try:
        rows = asyncio.run(_rows(settings, gateway, order, outcome, limit))
    except OSError as exc:
        _fail(f"cannot reach the database: {exc.strerror or exc}")
    print_rows(rows, NOTIFY_COLUMNS, as_json=as_json, empty="No notifies.")


@notify_app.command("replay")
def notify_replay(
    notify_id: int = typer.Argument(..., min=1, help="The id `miaofa notify list` shows."),
    actor: str = typer.Option(None, help="Who replays it, for the audit log (default: your login)."),
) -> None:
    """Run a stored notify through verification and the saga again, as if it had just arrived.

    For support: a notify refused while a key was misconfigured, or one whose order missed it. A
    notify with a signed timestamp (WeChat Pay, Stripe, the simulator) is refused as stale once its
    window has passed: replay cannot make an old signature new.
    """
    settings = _settings()
    _require(settings, "database_url", "vault_key")
    try:
        handled = asyncio.run(_replay(settings, notify_id, actor or f"cli:{getpass.getuser()}"))
    except LookupError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot reach the database: {exc.strerror or exc}")
    except RuntimeError as exc:
        _fail(f"cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}")
    console.print(
        f"Notify {notify_id} replayed: {handled.outcome}" + (f" ({handled.detail})." if handled.detail else ".")
    )
    _leave(0)


def gateways(as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """Which payment gateways are on, and what each one that is off still needs."""
    from miaofa.gateways.registry import BILLS, gateway_statuses

    rows = [
        {
            "gateway": status.name,
            "state": "on" if status.enabled else "off",
            "needs": list(status.missing),
            "bill": BILLS.get(status.name, "none"),
        }
        for status in gateway_statuses(_settings())
    ]
    print_rows(rows, GATEWAY_COLUMNS, as_json=as_json, empty="No gateways.")


async def _rows(
    settings: Settings, gateway: str | None, order: str | None, outcome: str | None, limit: int
) -> list[dict]:
    from sqlalchemy import select

    from miaofa.db.models import NotifyLog

    query = select(NotifyLog).order_by(NotifyLog.id.desc()).limit(limit)
    for column, value in ((NotifyLog.gateway, gateway), (NotifyLog.order_id, order), (NotifyLog.outcome, outcome)):
        if value is not None:
            query = query.where(column == value)
    async with database(settings) as sessionmaker, sessionmaker() as session:
        return [
            {
                "id": row.id,
                "received_at": row.received_at,
                "gateway": row.gateway,
                "method": row.headers.get(":method", "POST"),
                "outcome": row.outcome,
                "order_id": row.order_id,
                "detail": row.detail,
            }
            for row in await session.scalars(query)
        ]


async def _replay(settings: Settings, notify_id: int, actor: str):
    from miaofa import audit
    from miaofa import contract as c
    from miaofa.crypto.vault import Vault
    from miaofa.db.models import NotifyLog
    from miaofa.direct.book import GatewayBook
    from miaofa.gateways.registry import build_gateways
    from miaofa.payments import notify
    from miaofa.temporal.client import connect
    from miaofa.temporal.signals import Signaller

    gateways = build_gateways(settings)
    book: GatewayBook | None = None
    try:
        async with database(settings, pool_size=2) as sessionmaker:
            async with sessionmaker() as session:
                row = await session.get(NotifyLog, notify_id)
            if row is None:
                raise LookupError(f"no notify {notify_id}")
            vault = Vault(settings.vault_key)
            # A direct merchant's notify is verified again with that merchant's keys, never the platform's.
            account = row.headers.get(notify.ACCOUNT_HEADER)
            book = GatewayBook(settings, sessionmaker, vault, gateways)
            adapter = await book.for_account(row.gateway, account)
            if adapter is None:
                raise LookupError(f"the {row.gateway} gateway is not configured here; see `miaofa gateways`")
            signaller = Signaller(await connect(settings, vault), c.TASK_QUEUE)
            headers, body, query = notify.replayed_request(row.headers, row.body)
            stored_headers = {**row.headers, "x-miaofa-replay-of": str(notify_id)}
            handled = await notify.handle(
                sessionmaker,
                signaller,
                row.gateway,
                adapter,
                headers,
                body,
                query,
                (stored_headers, row.body.encode()),
                lambda: True,
                account,
            )
            async with sessionmaker.begin() as session:
                audit.record(session, actor, "notify.replayed", f"notify:{notify_id}", outcome=handled.outcome)
            return handled
    finally:
        for gateway in gateways.values():
            await gateway.aclose()
        if book is not None:
            await book.aclose()
