"""A merchant's daily statements (UTC days): opening balances, every line, closing balances, per
currency, each made once when first asked for after its day ended, and chained by hash.

Only days with lines are stored; an asked-for quiet day is answered from the last stored one (its
closing is the day's opening and closing) and named by the same chain. Statements of a merchant are
made in day order under an advisory lock, so the chain never skips a stored day."""

import csv
import hashlib
import io
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Label, literal_column, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.ledger_tables import LedgerAccount, LedgerEntry, LedgerStatement, LedgerTransaction
from miaofa.errors import Conflict

KINDS = ("pending", "available", "reserved", "debt", "payable")
GENESIS = "0" * 64


def _start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def digest(body: dict[str, Any], prev_hash: str) -> str:
    canonical = json.dumps({"body": body, "prev_hash": prev_hash}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


GRACE = timedelta(hours=1)  # a posting dated just before midnight may commit just after it


async def statement(session: AsyncSession, merchant_id: str, day: date, now: datetime | None = None) -> dict[str, Any]:
    """The statement of `day`; 409 statement_not_ready until an hour after the day ended (UTC)."""
    now = now or datetime.now(UTC)
    if now < _start(day + timedelta(days=1)) + GRACE:
        raise Conflict(
            f"{day.isoformat()} (UTC) is not closed yet: its statement is made an hour after it ends",
            error="statement_not_ready",
        )
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"statements:{merchant_id}"})
    await _make_up_to(session, merchant_id, day)
    stored = await session.scalar(
        select(LedgerStatement).where(LedgerStatement.merchant_id == merchant_id, LedgerStatement.day == day)
    )
    if stored is not None:
        return {**stored.body, "prev_hash": stored.prev_hash, "hash": stored.hash}
    last = await _last_before(session, merchant_id, day)
    body = _quiet(merchant_id, day, last.body if last else None)
    prev = last.hash if last else GENESIS
    return {**body, "prev_hash": prev, "hash": digest(body, prev)}


async def _make_up_to(session: AsyncSession, merchant_id: str, day: date) -> None:
    """Store every day with lines, up to and including `day`, that is not stored yet, in order."""
    last = await _last_before(session, merchant_id, day + timedelta(days=1))
    since = _start(last.day + timedelta(days=1)) if last else None
    busy_day: Label[date] = literal_column("(ledger_transactions.at AT TIME ZONE 'UTC')::date").label("busy")
    query = (
        select(busy_day)
        .select_from(LedgerTransaction)
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerAccount.owner == merchant_id, LedgerTransaction.at < _start(day + timedelta(days=1)))
        .distinct()
        .order_by(busy_day)
    )
    if since is not None:
        query = query.where(LedgerTransaction.at >= since)
    for (busy,) in (await session.execute(query)).all():
        prev = last.hash if last else GENESIS
        body = await _body(session, merchant_id, busy, last.body if last else None)
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


def _quiet(merchant_id: str, day: date, previous: dict[str, Any] | None) -> dict[str, Any]:
    closing = _closing(previous)
    return {
        "merchant_id": merchant_id,
        "day": day.isoformat(),
        "currencies": {c: {"opening": b, "lines": [], "closing": b} for c, b in sorted(closing.items())},
    }


async def _body(session: AsyncSession, merchant_id: str, day: date, previous: dict[str, Any] | None) -> dict[str, Any]:
    rows = await session.execute(
        select(
            LedgerEntry.id,
            LedgerTransaction.at,
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
            LedgerTransaction.at >= _start(day),
            LedgerTransaction.at < _start(day + timedelta(days=1)),
        )
        .order_by(LedgerEntry.id)
    )
    opening = _closing(previous)
    sections: dict[str, dict[str, Any]] = {}
    for entry_id, at, kind, account, amount, normal, after, currency, order_id, ref in rows.all():
        start = opening.get(currency, dict.fromkeys(KINDS, 0))
        section = sections.setdefault(currency, {"opening": start, "lines": [], "closing": dict(start)})
        section["lines"].append(
            {
                "entry_id": entry_id,
                "at": at.isoformat(),
                "kind": kind,
                "account": account,
                "amount_cents": amount if normal == "debit" else -amount,
                "balance_after_cents": after,
                "order_id": order_id,
                "ref": ref,
            }
        )
        section["closing"][account] = after
    for currency, balances in opening.items():
        sections.setdefault(currency, {"opening": balances, "lines": [], "closing": balances})
    return {"merchant_id": merchant_id, "day": day.isoformat(), "currencies": dict(sorted(sections.items()))}


def as_csv(found: dict[str, Any]) -> str:
    """One line per ledger line, with the opening and closing as their own rows, and the hashes."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "currency", "row", "at", "kind", "account", "amount_cents", "balance_after_cents", "ref"])
    for currency, section in found["currencies"].items():
        for account in KINDS:
            cents = section["opening"].get(account, 0)
            writer.writerow([found["day"], currency, "opening", "", "", account, "", cents, ""])
        for line in section["lines"]:
            writer.writerow(
                [
                    found["day"],
                    currency,
                    "line",
                    line["at"],
                    line["kind"],
                    line["account"],
                    line["amount_cents"],
                    line["balance_after_cents"],
                    line["ref"],
                ]
            )
        for account in KINDS:
            cents = section["closing"].get(account, 0)
            writer.writerow([found["day"], currency, "closing", "", "", account, "", cents, ""])
    writer.writerow([found["day"], "", "prev_hash", "", "", "", "", "", found["prev_hash"]])
    writer.writerow([found["day"], "", "hash", "", "", "", "", "", found["hash"]])
    return out.getvalue()
