"""A merchant's statements, of a UTC day or a month: per currency, the opening balances, every line,
the closing balances (the opening plus the lines, to the cent).

A line belongs to the day it was booked: when the database wrote it (ledger_transactions.created_at,
the start of the database transaction that posted it), not the moment it records (`at`, which a
retried activity carries from hours before). So a posting can never land in a day already stored:
a sale dated 23:59 that commits at 03:00 is on the next day's statement, with both times.

A day is closed an hour after it ends (GRACE), and only once no database transaction of ours that
began before its end is still open (one could still commit a line into it). A closed day with lines
is stored when first asked for, in order under the merchant's advisory lock, with the hash of the
stored statement before it, and never changes. A quiet closed day is answered from the last stored
one (its closing is the day's opening and closing) and named by the same chain. A day not closed yet
is computed live, stored nowhere, and carries no hash.

A month is its days put together: the opening of its first day, the lines of each, the closing of
its last, with the hash of each stored day in it; closed once its last day is."""

import csv
import hashlib
import io
import json
import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Label, case, func, literal_column, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.ledger_tables import LedgerAccount, LedgerEntry, LedgerStatement, LedgerTransaction
from miaofa.errors import Conflict, InvalidInput

KINDS = ("pending", "available", "reserved", "debt", "payable")
GENESIS = "0" * 64
GRACE = timedelta(hours=1)  # a posting that began just before midnight may commit just after it
PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?")


@dataclass(frozen=True)
class Period:
    """A UTC day (first == last) or a calendar month, as asked for: `2026-12-05` or `2026-12`."""

    first: date
    last: date
    label: str

    @property
    def is_month(self) -> bool:
        return len(self.label) == 7


def parse_period(value: str) -> Period:
    """YYYY-MM-DD or YYYY-MM (ASCII digits only); anything else is a 422 that names it."""
    found = PERIOD.fullmatch(value) if len(value) <= 10 else None
    if found is None:
        raise InvalidInput("period: a day (YYYY-MM-DD) or a month (YYYY-MM)")
    year, month, day = int(found[1]), int(found[2]), found[3]
    try:
        if day is None:
            first = date(year, month, 1)
            return Period(first, first.replace(day=monthrange(year, month)[1]), value)
        one = date(year, month, int(day))
    except ValueError:
        raise InvalidInput(f"period: {value} is not a date") from None
    return Period(one, one, value)


def _start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _end(day: date) -> datetime:
    return _start(day) + timedelta(days=1)


def digest(body: dict[str, Any], prev_hash: str) -> str:
    canonical = json.dumps({"body": body, "prev_hash": prev_hash}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def of_period(
    session: AsyncSession, merchant_id: str, period: Period, now: datetime | None = None
) -> dict[str, Any]:
    """The statement of a day or of a month, as asked for."""
    if period.is_month:
        return await month_statement(session, merchant_id, period, now)
    return await statement(session, merchant_id, period.first, now)


async def statement(session: AsyncSession, merchant_id: str, day: date, now: datetime | None = None) -> dict[str, Any]:
    """The statement of `day`: stored (and hashed) once closed, live before; 409
    statement_not_ready for a day that has not begun."""
    now = now or datetime.now(UTC)
    _not_future(day, now)
    await _lock(session, merchant_id)
    first_open = await _first_open(session, now)
    await _store_closed(session, merchant_id, min(day, first_open - timedelta(days=1)))
    if day < first_open:
        stored = await session.scalar(
            select(LedgerStatement).where(LedgerStatement.merchant_id == merchant_id, LedgerStatement.day == day)
        )
        if stored is not None:
            return _closed(stored.body, stored.prev_hash, stored.hash)
        last = await _last_before(session, merchant_id, day)
        body = _quiet(merchant_id, day, last.body if last else None)
        prev = last.hash if last else GENESIS
        return _closed(body, prev, digest(body, prev))
    opening = await _opening(session, merchant_id, day)
    rows = await _rows(session, merchant_id, _start(day), _end(day))
    return _open(_body(merchant_id, {"day": day.isoformat()}, opening, rows))


async def month_statement(
    session: AsyncSession, merchant_id: str, period: Period, now: datetime | None = None
) -> dict[str, Any]:
    """The month's days put together: the first day's opening, every line, the last day's closing,
    and each stored day's hash; closed (and hashed) once its last day is."""
    now = now or datetime.now(UTC)
    _not_future(period.first, now)
    await _lock(session, merchant_id)
    first_open = await _first_open(session, now)
    closed_to = min(period.last, first_open - timedelta(days=1))
    await _store_closed(session, merchant_id, closed_to)
    opening = await _opening(session, merchant_id, period.first)
    days = list(
        await session.scalars(
            select(LedgerStatement)
            .where(
                LedgerStatement.merchant_id == merchant_id,
                LedgerStatement.day >= period.first,
                LedgerStatement.day <= closed_to,
            )
            .order_by(LedgerStatement.day)
        )
    )
    lines: dict[str, list[dict[str, Any]]] = {}
    for day in days:
        for currency, section in day.body["currencies"].items():
            lines.setdefault(currency, []).extend(section["lines"])
    if first_open <= period.last:  # the open days of the month, as they stand now
        for row in await _rows(session, merchant_id, _start(max(period.first, first_open)), _end(period.last)):
            lines.setdefault(row["currency"], []).append(_line(row))
    body = _sections(
        merchant_id,
        {"month": period.label, "from": period.first.isoformat(), "to": period.last.isoformat()},
        opening,
        lines,
    )
    body["days"] = [{"day": d.day.isoformat(), "hash": d.hash} for d in days]
    if first_open <= period.last:
        return _open(body)
    last = await _last_before(session, merchant_id, period.first)
    prev = last.hash if last else GENESIS
    return _closed(body, prev, digest(body, prev))


def _not_future(day: date, now: datetime) -> None:
    if _start(day) > now:
        raise Conflict(f"{day.isoformat()} (UTC) has not begun: it has no statement yet", error="statement_not_ready")


def _closed(body: dict[str, Any], prev_hash: str, hash_: str) -> dict[str, Any]:
    return {**body, "closed": True, "prev_hash": prev_hash, "hash": hash_}


def _open(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "closed": False, "prev_hash": None, "hash": None}


async def _lock(session: AsyncSession, merchant_id: str) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"statements:{merchant_id}"})


async def _first_open(session: AsyncSession, now: datetime) -> date:
    """The first day not closed: an hour has not passed since it ended, or a database transaction
    that began before its end is still open (its lines would be booked into it when it commits).
    Only sessions of our own role show their start; the ledger's postings are all ours."""
    await session.execute(text("SELECT pg_stat_clear_snapshot()"))  # the activity as it is now
    oldest = await session.scalar(
        text(
            "SELECT min(xact_start) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    )
    first_open = (now - GRACE).date()
    return min(first_open, oldest.astimezone(UTC).date()) if oldest is not None else first_open


def _booked_day() -> Label[date]:
    return literal_column("(ledger_transactions.created_at AT TIME ZONE 'UTC')::date").label("booked")


async def _store_closed(session: AsyncSession, merchant_id: str, up_to: date) -> None:
    """Store every closed day with lines up to and including `up_to` that is not stored yet, in order."""
    last = await _last_before(session, merchant_id, up_to + timedelta(days=1))
    booked = _booked_day()
    query = (
        select(booked)
        .select_from(LedgerTransaction)
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerAccount.owner == merchant_id, LedgerTransaction.created_at < _end(up_to))
        .distinct()
        .order_by(booked)
    )
    if last is not None:
        query = query.where(LedgerTransaction.created_at >= _end(last.day))
    for (busy,) in (await session.execute(query)).all():
        prev = last.hash if last else GENESIS
        rows = await _rows(session, merchant_id, _start(busy), _end(busy))
        body = _body(merchant_id, {"day": busy.isoformat()}, _closing(last.body if last else None), rows)
        await session.execute(
            insert(LedgerStatement)
            .values(merchant_id=merchant_id, day=busy, body=body, prev_hash=prev, hash=digest(body, prev))
            .on_conflict_do_nothing()
        )
        last = await session.scalar(
            select(LedgerStatement).where(LedgerStatement.merchant_id == merchant_id, LedgerStatement.day == busy)
        )


async def _last_before(session: AsyncSession, merchant_id: str, day: date) -> LedgerStatement | None:
    return await session.scalar(
        select(LedgerStatement)
        .where(LedgerStatement.merchant_id == merchant_id, LedgerStatement.day < day)
        .order_by(LedgerStatement.day.desc())
        .limit(1)
    )


def _closing(previous: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    return {c: dict(section["closing"]) for c, section in (previous or {}).get("currencies", {}).items()}


async def _opening(session: AsyncSession, merchant_id: str, day: date) -> dict[str, dict[str, int]]:
    """The balances when `day` begins: the last stored statement's closing, and whatever was booked
    after it (days not closed yet) before `day`."""
    last = await _last_before(session, merchant_id, day)
    opening = _closing(last.body if last else None)
    signed = case((LedgerAccount.normal == "debit", LedgerEntry.amount), else_=-LedgerEntry.amount)
    query = (
        select(LedgerAccount.currency, LedgerAccount.kind, func.sum(signed))
        .select_from(LedgerEntry)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerAccount.owner == merchant_id, LedgerTransaction.created_at < _start(day))
        .group_by(LedgerAccount.currency, LedgerAccount.kind)
    )
    if last is not None:
        query = query.where(LedgerTransaction.created_at >= _end(last.day))
    for currency, kind, cents in (await session.execute(query)).all():
        balances = opening.setdefault(currency, dict.fromkeys(KINDS, 0))
        balances[kind] = balances.get(kind, 0) + int(cents)
    return opening


async def _rows(session: AsyncSession, merchant_id: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The merchant's lines booked in [since, until), in the order they were written."""
    rows = await session.execute(
        select(
            LedgerEntry.id,
            LedgerTransaction.at,
            LedgerTransaction.created_at,
            LedgerTransaction.kind,
            LedgerAccount.kind,
            LedgerEntry.amount,
            LedgerAccount.normal,
            LedgerEntry.balance_after,
            LedgerEntry.currency,
            LedgerTransaction.order_id,
            LedgerTransaction.idem_key,
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(
            LedgerAccount.owner == merchant_id,
            LedgerTransaction.created_at >= since,
            LedgerTransaction.created_at < until,
        )
        .order_by(LedgerEntry.id)
    )
    return [
        {
            "entry_id": entry_id,
            "at": at.isoformat(),
            "booked_at": booked.isoformat(),
            "kind": kind,
            "account": account,
            "amount_cents": amount if normal == "debit" else -amount,
            "balance_after_cents": after,
            "currency": currency,
            "order_id": order_id,
            "ref": ref,
        }
        for entry_id, at, booked, kind, account, amount, normal, after, currency, order_id, ref in rows.all()
    ]


def _line(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "currency"}


def _body(
    merchant_id: str, names: dict[str, str], opening: dict[str, dict[str, int]], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(row["currency"], []).append(_line(row))
    return _sections(merchant_id, names, opening, lines)


def _sections(
    merchant_id: str,
    names: dict[str, str],
    opening: dict[str, dict[str, int]],
    lines: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Per currency: the opening, the lines, and the closing as the opening plus the lines."""
    sections = {}
    for currency in sorted(set(opening) | set(lines)):
        start = {**dict.fromkeys(KINDS, 0), **opening.get(currency, {})}
        closing = dict(start)
        for line in lines.get(currency, []):
            closing[line["account"]] = closing.get(line["account"], 0) + line["amount_cents"]
        sections[currency] = {"opening": start, "lines": lines.get(currency, []), "closing": closing}
    return {"merchant_id": merchant_id, **names, "currencies": sections}


def _quiet(merchant_id: str, day: date, previous: dict[str, Any] | None) -> dict[str, Any]:
    return _sections(merchant_id, {"day": day.isoformat()}, _closing(previous), {})


def as_csv(found: dict[str, Any]) -> str:
    """One row per ledger line, the opening and closing as rows of their own, whether the statement
    is closed, and its hashes (empty while it is open)."""
    period = found.get("day") or found["month"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "month" if "month" in found else "day",
            "currency",
            "row",
            "at",
            "booked_at",
            "kind",
            "account",
            "amount_cents",
            "balance_after_cents",
            "ref",
        ]
    )
    for currency, section in found["currencies"].items():
        for account in KINDS:
            cents = section["opening"].get(account, 0)
            writer.writerow([period, currency, "opening", "", "", "", account, "", cents, ""])
        for line in section["lines"]:
            writer.writerow(
                [
                    period,
                    currency,
                    "line",
                    line["at"],
                    line.get("booked_at", ""),  # statements stored before lines were booked have none
                    line["kind"],
                    line["account"],
                    line["amount_cents"],
                    line["balance_after_cents"],
                    line["ref"],
                ]
            )
        for account in KINDS:
            cents = section["closing"].get(account, 0)
            writer.writerow([period, currency, "closing", "", "", "", account, "", cents, ""])
    writer.writerow([period, "", "closed", "", "", "", "", "", "", "yes" if found["closed"] else "no"])
    writer.writerow([period, "", "prev_hash", "", "", "", "", "", "", found["prev_hash"] or ""])
    writer.writerow([period, "", "hash", "", "", "", "", "", "", found["hash"] or ""])
    return out.getvalue()
