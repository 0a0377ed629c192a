"""The console's Statements page: reached from Money, a day or a month with exactly the API's opening,
closing and lines, closed days with their hash, the same CSV as the API, staff read it in Chinese,
merchant B sees none of merchant A's lines, and hostile periods are a 4xx page."""

import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from api.console import money as console_money
from miaofa.ledger.posting import PLATFORM, credit, debit
from tests.api.test_console_money import HOLD
from tests.api.test_ledger import money_shop, sold
from tests.api.test_merchants import open_shop
from tests.api.test_statements import CLEARING, DAYS, TODAY, book, noon
from tests.helpers.console import Console, bearer
from tests.helpers.stack import Stack

MONTH = TODAY.isoformat()[:7]


@pytest.fixture
async def console(dev_stack: Stack):
    browsers: list[Console] = []

    def make() -> Console:
        browsers.append(Console(dev_stack))
        return browsers[-1]

    yield make
    for browser in browsers:
        await browser.aclose()


def cell(page: str, currency: str, account: str, which: str) -> str:
    section = re.search(rf'<section class="panel" data-currency="{currency}">(.*?)</section>', page, re.S)
    assert section is not None, currency
    row = re.search(rf'<tr data-account="{account}">(.*?)</tr>', section[1], re.S)
    assert row is not None, account
    found = re.search(rf"data-{which}>([^<]*)<", row[1])
    assert found is not None, (account, which)
    return html.unescape(found[1])


def entry_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-entry="([0-9]+)"', page)]


async def test_the_statements_page_shows_the_apis_numbers_for_a_month_and_a_day(dev_stack: Stack, console) -> None:
    shop = await money_shop(dev_stack, fee_bps=250, hold_seconds=HOLD)
    orders = await sold(dev_stack, shop, price_cents=1000, n=2)
    refunded = await dev_stack.http.post(
        f"/merchant/orders/{orders[1]['order_id']}/refund", headers=shop.owner, json={"reason": "asked"}
    )
    assert refunded.status_code in (200, 202), refunded.text
    await dev_stack.wait_status(orders[1], "refunded")

    browser = console()
    assert (await browser.sign_in(bearer(shop))).status_code == 303
    money_page = (await browser.http.get("/console/money")).text
    assert 'href="/console/statements" id="statements-link"' in money_page
    answer = await browser.http.get("/console/statements")  # this month, open
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    page = answer.text
    api = (await dev_stack.http.get(f"/merchant/statements/{MONTH}", headers=shop.owner)).json()
    cny = api["currencies"]["CNY"]
    assert f'data-period="{MONTH}" data-closed="no"' in page and "Open: computed now" in page
    for kind in ("pending", "available", "reserved", "debt"):
        for which in ("opening", "closing"):
            assert cell(page, "CNY", kind, which) == console_money.signed_money(cny[which][kind], "CNY"), (kind, which)
    assert cell(page, "CNY", "pending", "closing") == "¥9.75"  # one sale held, the other clawed back
    assert 'data-account="payable"' not in page  # a platform shop owes no fee payable
    assert entry_ids(page) == [x["entry_id"] for x in cny["lines"]] and len(cny["lines"]) == 3
    assert f'href="/console/orders/{orders[0]["order_id"]}"' in page and "−¥9.75" in page

    # The CSV link: the API's CSV, as an attachment.
    link = re.search(r'href="(/console/statements\.csv\?period=[^"]+)" id="csv"', page)
    assert link is not None
    csv = await browser.http.get(html.unescape(link[1]))
    api_csv = await dev_stack.http.get(f"/merchant/statements/{MONTH}.csv", headers=shop.owner)
    assert csv.status_code == 200 and csv.text == api_csv.text
    assert csv.headers["content-disposition"] == f'attachment; filename="statement-{MONTH}.csv"'

    # Today, picked as a day: the same lines; the day before is linked, tomorrow is not.
    today = (await browser.http.get("/console/statements", params={"period": TODAY.isoformat()})).text
    day_api = (await dev_stack.http.get(f"/merchant/statements/{TODAY.isoformat()}", headers=shop.owner)).json()
    assert entry_ids(today) == [x["entry_id"] for x in day_api["currencies"]["CNY"]["lines"]]
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    assert f'href="/console/statements?period={yesterday}" id="before"' in today and 'id="after"' not in today

    # Staff read it too, in Chinese.
    made = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "cashier"})
    assert made.status_code == 201, made.text
    staff = console()
    assert (await staff.sign_in(made.json()["token"])).status_code == 303
    zh = await staff.http.get("/console/statements", headers={"Accept-Language": "zh-CN"})
    assert zh.status_code == 200 and "对账单" in zh.text and "未关账" in zh.text
    assert cell(zh.text, "CNY", "pending", "closing") == "¥9.75"


async def test_a_closed_day_shows_its_hash_and_its_neighbours(dev_stack: Stack, console) -> None:
    shop = await money_shop(dev_stack)
    m = shop.merchant_id
    async with dev_stack.sessionmaker.begin() as session:
        await book(
            session, f"t-sale:{m}", noon(DAYS[0]), [debit(PLATFORM, CLEARING, 1234), credit(m, "available", 1234)], m
        )
    browser = console()
    await browser.sign_in(bearer(shop))
    page = (await browser.http.get("/console/statements", params={"period": DAYS[0].isoformat()})).text
    api = (await dev_stack.http.get(f"/merchant/statements/{DAYS[0].isoformat()}", headers=shop.owner)).json()
    assert 'data-closed="yes"' in page and f'id="hash">{api["hash"]}<' in page
    assert cell(page, "CNY", "available", "opening") == "¥0.00"
    assert cell(page, "CNY", "available", "closing") == "¥12.34"
    after = (DAYS[0] + timedelta(days=1)).isoformat()
    assert f'href="/console/statements?period={after}" id="after"' in page
    quiet = (await browser.http.get("/console/statements", params={"period": after})).text
    assert entry_ids(quiet) == [] and "No lines in this period." in quiet
    assert cell(quiet, "CNY", "available", "opening") == cell(quiet, "CNY", "available", "closing") == "¥12.34"


async def test_merchant_b_sees_none_of_merchant_a_statements(dev_stack: Stack, console) -> None:
    shop_a = await money_shop(dev_stack, fee_bps=100, hold_seconds=HOLD)
    [order] = await sold(dev_stack, shop_a, price_cents=1234)
    lines_a = (await dev_stack.http.get("/merchant/ledger", headers=shop_a.owner)).json()["entries"]
    shop_b = await open_shop(dev_stack, "Shop B")
    browser = console()
    await browser.sign_in(bearer(shop_b))
    for period in (MONTH, TODAY.isoformat()):
        page = await browser.http.get("/console/statements", params={"period": period})
        assert page.status_code == 200
        assert order["order_id"] not in page.text and entry_ids(page.text) == []
        assert lines_a[0]["entry_id"] not in entry_ids(page.text) and "¥12.22" not in page.text
        assert "No money had moved by the end of this period." in page.text
        csv = await browser.http.get("/console/statements.csv", params={"period": period})
        assert order["order_id"] not in csv.text and ",line," not in csv.text
    stranger = console()
    for path in ("/console/statements", "/console/statements.csv"):
        away = await stranger.http.get(path)
        assert (away.status_code, away.headers["location"]) == (303, "/console/sign-in")


async def test_hostile_periods_are_a_4xx_page(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack, "Odd periods")
    browser = console()
    await browser.sign_in(bearer(shop))
    for period in ("\x00", "2026-13", "2026-02-30", "２０２６-１２", "2026-1", "9" * 5000, "名", "0000-01", "x\u202e"):
        for path in ("/console/statements", "/console/statements.csv"):
            answer = await browser.http.get(path, params={"period": period})
            assert answer.status_code == 422, (period, path, answer.status_code)
    future = (datetime.now(UTC).date().replace(day=28) + timedelta(days=5)).isoformat()[:7]
    answer = await browser.http.get("/console/statements", params={"period": future})
    assert answer.status_code == 409 and "has not begun" in html.unescape(answer.text)
