"""A merchant's statements: of a day or a month, opening, lines, closing, chained by hash, JSON and
CSV, made once a day is closed; a posting dated into a stored day is booked on the day it is written
and never goes missing."""

import asyncio
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.ledger_tables import LedgerStatement, LedgerTransaction
from miaofa.errors import InvalidInput
from miaofa.ledger import check, statements
from miaofa.ledger.posting import PLATFORM, Line, credit, debit, lock, post, write
from tests.api.test_ledger import clean, money_shop
from tests.api.test_merchants import Shop
from tests.cli.test_support_cli import cli
from tests.helpers.stack import Stack

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (4, 3, 2)]  # busy, quiet, busy
ZERO = {"pending": 0, "available": 0, "reserved": 0, "debt": 0, "payable": 0}
CLEARING = "gateway_clearing:simulator"


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


async def book(session: AsyncSession, key: str, when: datetime, lines: list[Line], merchant_id: str) -> None:
    """A posting the database wrote at `when` (its created_at): the books of a day gone by. The
    ledger's own postings are always booked at the database's clock."""
    txn = await session.scalar(
        insert(LedgerTransaction)
        .values(idem_key=key, kind="sale", merchant_id=merchant_id, memo="", at=when, created_at=when)
        .returning(LedgerTransaction.id)
    )
    assert txn is not None
    accounts = await lock(session, "CNY", [(line.owner, line.kind) for line in lines])
    await write(session, txn, "CNY", accounts, lines)


async def _history(stack: Stack, shop: Shop) -> None:
    """A sale on the first day, nothing on the second, a release and a second sale on the third."""
    m = shop.merchant_id
    async with stack.sessionmaker.begin() as session:
        for key, when, lines in (
            (f"t-sale1:{m}", noon(DAYS[0]), [debit(PLATFORM, CLEARING, 1000), credit(m, "pending", 1000)]),
            (f"t-release:{m}", noon(DAYS[2]), [debit(m, "pending", 1000), credit(m, "available", 1000)]),
            (f"t-sale2:{m}", noon(DAYS[2]), [debit(PLATFORM, CLEARING, 300), credit(m, "available", 300)]),
        ):
            await book(session, key, when, lines, m)


async def _get(stack: Stack, shop: Shop, period: str) -> dict:
    answer = await stack.http.get(f"/merchant/statements/{period}", headers=shop.owner)
    assert answer.status_code == 200, answer.text
    return answer.json()


def hashed(found: dict[str, Any]) -> bool:
    body = {k: v for k, v in found.items() if k not in ("closed", "hash", "prev_hash")}
    return statements.digest(body, found["prev_hash"]) == found["hash"]


async def test_statements_chain_closed_days_and_quiet_days_carry_the_balance(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack)
    await _history(dev_stack, shop)
    first, quiet, third = [await _get(dev_stack, shop, d.isoformat()) for d in DAYS]
    cny = first["currencies"]["CNY"]
    assert (cny["opening"], cny["closing"]["pending"]) == (ZERO, 1000)
    assert [(x["account"], x["amount_cents"], x["balance_after_cents"]) for x in cny["lines"]] == [
        ("pending", 1000, 1000)
    ]
    assert cny["lines"][0]["booked_at"] == noon(DAYS[0]).isoformat()
    assert first["prev_hash"] == statements.GENESIS
    assert quiet["currencies"]["CNY"]["lines"] == []
    assert quiet["currencies"]["CNY"]["opening"] == quiet["currencies"]["CNY"]["closing"] == cny["closing"]
    assert quiet["prev_hash"] == first["hash"]
    lines = third["currencies"]["CNY"]["lines"]
    assert [(x["account"], x["amount_cents"]) for x in lines] == [
        ("pending", -1000),
        ("available", 1000),
        ("available", 300),
    ]
    assert third["currencies"]["CNY"]["closing"] == {**ZERO, "available": 1300}
    assert third["prev_hash"] == first["hash"]  # the chain runs through stored (busy) days
    assert all(found["closed"] and hashed(found) for found in (first, quiet, third))

    csv = await dev_stack.http.get(f"/merchant/statements/{DAYS[2].isoformat()}.csv", headers=shop.owner)
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    rows = csv.text.splitlines()
    assert rows[0] == "day,currency,row,at,booked_at,kind,account,amount_cents,balance_after_cents,ref"
    assert sum(1 for r in rows if ",line," in r) == 3 and rows[-1].endswith(third["hash"])
    assert rows[-3] == f"{DAYS[2].isoformat()},,closed,,,,,,,yes"

    # Today is open: computed live, stored nowhere, no hash. Tomorrow has not begun.
    today = await _get(dev_stack, shop, TODAY.isoformat())
    assert (today["closed"], today["hash"], today["prev_hash"]) == (False, None, None)
    assert today["currencies"]["CNY"]["opening"] == today["currencies"]["CNY"]["closing"] == {**ZERO, "available": 1300}
    tomorrow = await dev_stack.http.get(
        f"/merchant/statements/{(TODAY + timedelta(days=1)).isoformat()}", headers=shop.owner
    )
    assert (tomorrow.status_code, tomorrow.json()["error"]) == (409, "statement_not_ready")
    async with dev_stack.sessionmaker() as session:
        stored = await session.scalars(
            select(LedgerStatement.day).where(LedgerStatement.merchant_id == shop.merchant_id)
        )
        assert sorted(stored) == [DAYS[0], DAYS[2]]  # busy closed days only

    with pytest.raises(DBAPIError, match="append-only"):
        async with dev_stack.sessionmaker.begin() as session:
            await session.execute(
                text("UPDATE ledger_statements SET hash = 'x' WHERE merchant_id = :m"), {"m": shop.merchant_id}
            )


async def test_a_posting_dated_into_a_stored_day_is_booked_on_the_day_it_is_written(dev_stack: Stack) -> None:
    """The fragility this fixes: statements were cut by the time a posting records, so a sale dated
    23:59 whose activity was retried after the day's statement was stored was in no statement."""
    shop = await money_shop(dev_stack)
    m = shop.merchant_id
    async with dev_stack.sessionmaker.begin() as session:
        await book(
            session, f"t-sale1:{m}", noon(DAYS[0]), [debit(PLATFORM, CLEARING, 1000), credit(m, "available", 1000)], m
        )
    before = await _get(dev_stack, shop, DAYS[0].isoformat())
    assert before["closed"] and before["currencies"]["CNY"]["closing"]["available"] == 1000

    late = datetime.combine(DAYS[0], time(23, 59), tzinfo=UTC)  # what the workflow's step carries
    async with dev_stack.sessionmaker.begin() as session:
        await post(
            session,
            key=f"t-late:{m}",
            kind="sale",
            currency="CNY",
            lines=[debit(PLATFORM, CLEARING, 300), credit(m, "available", 300)],
            at=late,
            merchant_id=m,
        )
    assert await _get(dev_stack, shop, DAYS[0].isoformat()) == before  # stored: never changes
    today = await _get(dev_stack, shop, TODAY.isoformat())
    cny = today["currencies"]["CNY"]
    assert cny["opening"] == {**ZERO, "available": 1000} and cny["closing"] == {**ZERO, "available": 1300}
    [line] = cny["lines"]
    assert (line["ref"], line["at"], datetime.fromisoformat(line["booked_at"]).date()) == (
        f"t-late:{m}",
        late.isoformat(),
        TODAY,
    )
    month = await _get(dev_stack, shop, TODAY.isoformat()[:7])
    assert month["currencies"]["CNY"]["closing"] == cny["closing"] and month["closed"] is False
    await clean(dev_stack)  # the stored day and the entries booked by its end still agree

    # Were a line booked into the stored day all the same, the check names it (rolled back).
    async with dev_stack.sessionmaker() as session:
        try:
            forged = [debit(PLATFORM, CLEARING, 5), credit(m, "available", 5)]
            await book(session, f"t-forged:{m}", noon(DAYS[0]), forged, m)
            found = [v for v in await check.run(session) if v.check == "statement_differs_from_entries"]
            assert [v.detail for v in found] == [
                f"{m}'s statement of {DAYS[0].isoformat()} closes available in CNY at 1000; "
                "its entries booked by then sum to 1005"
            ]
        finally:
            await session.rollback()


async def test_a_day_is_stored_only_once_closed(dev_stack: Stack) -> None:
    """An hour after its end, and only when no database transaction that began before its end is
    still open; before that it is read live and stored nowhere."""
    shop = await money_shop(dev_stack)
    m = shop.merchant_id
    day = DAYS[2]
    async with dev_stack.sessionmaker.begin() as session:
        await book(session, f"t-sale:{m}", noon(day), [debit(PLATFORM, CLEARING, 700), credit(m, "available", 700)], m)

    async def read(at: datetime, asked: date = day) -> dict:
        async with dev_stack.sessionmaker.begin() as session:
            return await statements.statement(session, m, asked, now=at)

    async def stored_days() -> list[date]:
        async with dev_stack.sessionmaker() as session:
            return sorted(await session.scalars(select(LedgerStatement.day).where(LedgerStatement.merchant_id == m)))

    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
    early = await read(end + timedelta(minutes=59))
    assert early["closed"] is False and early["currencies"]["CNY"]["closing"]["available"] == 700
    assert await stored_days() == []
    closed = await read(end + statements.GRACE)
    assert closed["closed"] is True and hashed(closed) and await stored_days() == [day]

    # Today, read as if tomorrow were long over, while a transaction that began today stays open.
    async with dev_stack.sessionmaker() as holding, holding.begin():
        await holding.execute(text("SELECT 1"))
        later = datetime.combine(TODAY + timedelta(days=2), time(6), tzinfo=UTC)
        held = await read(later, TODAY)
        assert held["closed"] is False and await stored_days() == [day]


async def test_a_month_is_its_days_put_together(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack)
    m = shop.merchant_id
    first = TODAY.replace(day=1) - timedelta(days=1)
    first = first.replace(day=1)  # last month
    last = TODAY.replace(day=1) - timedelta(days=1)
    label = first.isoformat()[:7]
    async with dev_stack.sessionmaker.begin() as session:
        for key, when, lines in (
            ("before", noon(first - timedelta(days=1)), [debit(PLATFORM, CLEARING, 500), credit(m, "pending", 500)]),
            ("d1", noon(first), [debit(PLATFORM, CLEARING, 250), credit(m, "pending", 250)]),
            ("d3", noon(first + timedelta(days=2)), [debit(m, "pending", 750), credit(m, "available", 750)]),
            (
                "last",
                datetime.combine(last, time(23, 59, 59), tzinfo=UTC),
                [debit(m, "available", 100), debit(m, "debt", 20), credit(PLATFORM, CLEARING, 120)],
            ),
            (
                "next",
                datetime.combine(TODAY.replace(day=1), time(0), tzinfo=UTC),
                [debit(PLATFORM, CLEARING, 9), credit(m, "available", 9)],
            ),
        ):
            await book(session, f"t-{key}:{m}", when, lines, m)

    month = await _get(dev_stack, shop, label)
    days = [await _get(dev_stack, shop, (first + timedelta(days=n)).isoformat()) for n in range(last.day)]
    cny = month["currencies"]["CNY"]
    assert (month["month"], month["from"], month["to"]) == (label, first.isoformat(), last.isoformat())
    assert month["closed"] is True and hashed(month)
    assert cny["opening"] == days[0]["currencies"]["CNY"]["opening"] == {**ZERO, "pending": 500}
    assert (
        cny["closing"]
        == days[-1]["currencies"]["CNY"]["closing"]
        == {
            **ZERO,
            "available": 650,
            "debt": 20,
        }
    )
    assert cny["lines"] == [line for d in days for line in d["currencies"]["CNY"]["lines"]]
    assert [x["ref"] for x in cny["lines"]] == [f"t-d1:{m}", f"t-d3:{m}", f"t-d3:{m}", *[f"t-last:{m}"] * 2]
    assert month["days"] == [{"day": d["day"], "hash": d["hash"]} for d in days if d["currencies"]["CNY"]["lines"]]
    before = await _get(dev_stack, shop, (first - timedelta(days=1)).isoformat())
    assert month["prev_hash"] == before["hash"]
    for kind in statements.KINDS:  # the closing is the opening plus the lines, account by account
        moved = sum(x["amount_cents"] for x in cny["lines"] if x["account"] == kind)
        assert cny["closing"][kind] == cny["opening"][kind] + moved

    csv = await dev_stack.http.get(f"/merchant/statements/{label}.csv", headers=shop.owner)
    rows = csv.text.splitlines()
    assert rows[0].startswith("month,currency,row,") and sum(1 for r in rows if ",line," in r) == 5
    assert 'filename="statement-' + label + '.csv"' in csv.headers["content-disposition"]

    this_month = await _get(dev_stack, shop, TODAY.isoformat()[:7])
    assert this_month["closed"] is False and this_month["hash"] is None
    assert this_month["currencies"]["CNY"]["opening"] == cny["closing"]
    assert [x["ref"] for x in this_month["currencies"]["CNY"]["lines"]] == [f"t-next:{m}"]

    other = await money_shop(dev_stack)  # another shop reads its own month: nothing of this one
    theirs = await _get(dev_stack, other, label)
    assert theirs["merchant_id"] == other.merchant_id and theirs["currencies"] == {}
    await clean(dev_stack)


async def test_bad_periods_are_a_4xx_never_a_5xx(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack)
    future = TODAY.replace(day=28) + timedelta(days=5)
    for bad in (
        "2026-13",
        "2026-00",
        "2026-1",
        "0000-01",
        "2026-02-30",
        "２０２６-１２",
        "2026-12%00",
        "2026-12%0A",
        "2026-12-01.pdf",
        "yesterday",
        "9" * 5000,
        "名",
    ):
        answer = await dev_stack.http.get(f"/merchant/statements/{bad}", headers=shop.owner)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_input", (bad, answer.text)
    for early in (future.isoformat()[:7], "9999-12", "9999-12-31.csv"):
        answer = await dev_stack.http.get(f"/merchant/statements/{early}", headers=shop.owner)
        assert (answer.status_code, answer.json()["error"]) == (409, "statement_not_ready"), early
    ancient = await _get(dev_stack, shop, "0001-01")
    assert ancient["currencies"] == {} and ancient["closed"] is True
    assert (await dev_stack.http.get(f"/merchant/statements/{TODAY.isoformat()}")).status_code == 401


async def test_the_chain_is_the_same_whichever_day_is_asked_first_and_at_once(dev_stack: Stack) -> None:
    one, two = await money_shop(dev_stack), await money_shop(dev_stack)
    await _history(dev_stack, one)
    await _history(dev_stack, two)
    last_first = await _get(dev_stack, one, DAYS[2].isoformat())
    in_order = [await _get(dev_stack, two, d.isoformat()) for d in DAYS]
    assert last_first["prev_hash"] != statements.GENESIS
    again = await asyncio.gather(*(_get(dev_stack, one, d.isoformat()) for d in DAYS * 3))

    def shape(found: dict) -> tuple:
        cny = found["currencies"]["CNY"]
        return cny["opening"], [x["amount_cents"] for x in cny["lines"]], cny["closing"]

    assert [shape(s) for s in again[:3]] == [shape(s) for s in in_order]  # asked backwards, the same days
    assert {s["hash"] for s in again if s["day"] == DAYS[2].isoformat()} == {last_first["hash"]}
    other = await dev_stack.http.get(f"/merchant/statements/{DAYS[0].isoformat()}", headers=two.owner)
    assert other.json()["merchant_id"] == two.merchant_id  # a shop only ever reads its own
    async with dev_stack.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(LedgerStatement.merchant_id.in_([one.merchant_id, two.merchant_id]))
        )
    assert count == 4


async def test_the_cli_shows_and_exports_a_statement(dev_stack: Stack, tmp_path) -> None:
    shop = await money_shop(dev_stack)
    await _history(dev_stack, shop)
    day = DAYS[2].isoformat()
    shown = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "show", shop.slug, day)
    assert shown.returncode == 0, shown.stderr
    found = await _get(dev_stack, shop, day)
    assert shown.stdout.splitlines() == [
        "CNY\topening\tpending 1000 available 0 reserved 0 debt 0 payable 0",
        "CNY\tlines\t3",
        "CNY\tclosing\tpending 0 available 1300 reserved 0 debt 0 payable 0",
        f"prev_hash\t{found['prev_hash']}",
        f"hash\t{found['hash']}",
    ]
    exported = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "export", shop.slug, day)
    assert exported.stdout == statements.as_csv(found).replace("\r\n", "\n")  # text mode reads CRLF as LF
    month = DAYS[2].isoformat()[:7]
    by_month = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "export", shop.slug, month, "--json")
    assert by_month.returncode == 0, by_month.stderr
    assert by_month.stdout.strip() == json.dumps(await _get(dev_stack, shop, month), ensure_ascii=False)
    bad = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "show", shop.slug, "13/01")
    assert (bad.returncode, bad.stderr.strip()) == (2, "'13/01' is not a day or a month: use YYYY-MM-DD or YYYY-MM.")
    today = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "show", shop.slug, TODAY.isoformat())
    assert today.returncode == 0 and today.stdout.splitlines()[-1].startswith("open\tnot closed yet")
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    early = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "show", shop.slug, tomorrow)
    assert early.returncode == 1 and "has not begun" in early.stderr


def test_a_period_is_a_day_or_a_month_in_ascii_digits() -> None:
    assert statements.parse_period("2024-02") == statements.Period(date(2024, 2, 1), date(2024, 2, 29), "2024-02")
    assert statements.parse_period("2026-12-05") == statements.Period(
        date(2026, 12, 5), date(2026, 12, 5), "2026-12-05"
    )
    for bad in ("2026-12\n", "２０２６-１２", "2026-13", "2026-02-29", "0000-01", "2026-12-05T00", "", "2026"):
        with pytest.raises(InvalidInput):
            statements.parse_period(bad)
