"""A merchant's daily statements: opening, lines, closing, chained by hash, JSON and CSV, made once."""

import asyncio
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from miaofa.ledger import statements
from miaofa.ledger.posting import PLATFORM, credit, debit, post
from tests.api.test_ledger import money_shop
from tests.api.test_merchants import Shop
from tests.cli.test_support_cli import cli
from tests.helpers.stack import Stack

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (4, 3, 2)]  # busy, quiet, busy


async def _history(stack: Stack, shop: Shop) -> None:
    """A sale on the first day, nothing on the second, a release and a second sale on the third."""
    m = shop.merchant_id
    at = [datetime.combine(day, time(12), tzinfo=UTC) for day in DAYS]
    async with stack.sessionmaker.begin() as session:
        for key, when, lines in (
            (f"t-sale1:{m}", at[0], [debit(PLATFORM, "gateway_clearing:simulator", 1000), credit(m, "pending", 1000)]),
            (f"t-release:{m}", at[2], [debit(m, "pending", 1000), credit(m, "available", 1000)]),
            (f"t-sale2:{m}", at[2], [debit(PLATFORM, "gateway_clearing:simulator", 300), credit(m, "available", 300)]),
        ):
            await post(session, key=key, kind="sale", currency="CNY", lines=lines, at=when, merchant_id=m)


async def _get(stack: Stack, shop: Shop, day: str) -> dict:
    answer = await stack.http.get(f"/merchant/statements/{day}", headers=shop.owner)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_statements_chain_closed_days_and_quiet_days_carry_the_balance(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack)
    await _history(dev_stack, shop)
    first, quiet, third = [await _get(dev_stack, shop, d.isoformat()) for d in DAYS]
    zero = {"pending": 0, "available": 0, "reserved": 0, "debt": 0, "payable": 0}
    cny = first["currencies"]["CNY"]
    assert (cny["opening"], cny["closing"]["pending"]) == (zero, 1000)
    assert [(x["account"], x["amount_cents"], x["balance_after_cents"]) for x in cny["lines"]] == [
        ("pending", 1000, 1000)
    ]
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
    assert third["currencies"]["CNY"]["closing"] == {**zero, "available": 1300}
    assert third["prev_hash"] == first["hash"]  # the chain runs through stored (busy) days
    for found in (first, quiet, third):
        body = {k: v for k, v in found.items() if k not in ("hash", "prev_hash")}
        assert statements.digest(body, found["prev_hash"]) == found["hash"]

    csv = await dev_stack.http.get(f"/merchant/statements/{DAYS[2].isoformat()}.csv", headers=shop.owner)
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    rows = csv.text.splitlines()
    assert rows[0] == "day,currency,row,at,kind,account,amount_cents,balance_after_cents,ref"
    assert sum(1 for r in rows if ",line," in r) == 3 and rows[-1].endswith(third["hash"])

    not_yet = await dev_stack.http.get(f"/merchant/statements/{TODAY.isoformat()}", headers=shop.owner)
    assert (not_yet.status_code, not_yet.json()["error"]) == (409, "statement_not_ready")
    for bad in ("2026-13-01", "yesterday", "2026-01-01.pdf", "2026-01-01%00"):
        assert (await dev_stack.http.get(f"/merchant/statements/{bad}", headers=shop.owner)).status_code == 422, bad
    with pytest.raises(DBAPIError, match="append-only"):
        async with dev_stack.sessionmaker.begin() as session:
            await session.execute(
                text("UPDATE ledger_statements SET hash = 'x' WHERE merchant_id = :m"), {"m": shop.merchant_id}
            )


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
    bad = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "show", shop.slug, "13/01")
    assert (bad.returncode, bad.stderr.strip()) == (2, "'13/01' is not a date: use YYYY-MM-DD.")
    early = await asyncio.to_thread(cli, dev_stack, tmp_path, "statements", "show", shop.slug, TODAY.isoformat())
    assert early.returncode == 1 and "is not closed yet" in early.stderr
