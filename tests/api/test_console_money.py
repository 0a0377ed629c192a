"""The console's Money page: exactly the ledger's numbers after a held sale and a refund, why money is
pending (order, reason, release time), the ledger paged with `before`, staff may read it, and merchant
B sees none of merchant A's money."""

import html
import re
import uuid

import pytest

from api.console import money as console_money
from api.console.pages import when
from tests.api.test_ledger import money_shop, sold
from tests.api.test_merchants import open_shop
from tests.helpers.console import Console, bearer
from tests.helpers.stack import Stack

# Longer than any release test_ledger.py runs (now + 2 h counts every due hold on the platform), so
# these held sales never show up in its counts.
HOLD = 30 * 86400


@pytest.fixture
async def console(dev_stack: Stack):
    browsers: list[Console] = []

    def make() -> Console:
        browsers.append(Console(dev_stack))
        return browsers[-1]

    yield make
    for browser in browsers:
        await browser.aclose()


def shown(page: str, kind: str, currency: str = "CNY") -> str:
    tile = re.search(rf'data-currency="{currency}">(.*?)</section>', page, re.S)
    assert tile is not None
    found = re.search(rf'data-kind="{kind}">([^<]*)<', tile[1])
    assert found is not None, kind
    return html.unescape(found[1])


def entry_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-entry="([0-9]+)"', page)]


async def test_the_money_page_shows_the_ledgers_numbers_after_a_held_sale(dev_stack: Stack, console) -> None:
    shop = await money_shop(dev_stack, fee_bps=250, hold_seconds=HOLD)
    orders = await sold(dev_stack, shop, price_cents=1000, n=2)
    refunded = await dev_stack.http.post(
        f"/merchant/orders/{orders[1]['order_id']}/refund", headers=shop.owner, json={"reason": "asked"}
    )
    assert refunded.status_code in (200, 202), refunded.text
    await dev_stack.wait_status(orders[1], "refunded")

    browser = console()
    assert (await browser.sign_in(bearer(shop))).status_code == 303
    dashboard = (await browser.http.get("/console/")).text
    assert 'href="/console/money"' in dashboard and "Coming with the ledger" not in dashboard
    answer = await browser.http.get("/console/money")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    page = answer.text

    books = (await dev_stack.http.get("/merchant/balance", headers=shop.owner)).json()
    [cny] = books["balances"]
    assert cny["pending_cents"] == 975  # 1000 less 2.5 %, one sale held, the other clawed back
    for kind in ("pending", "available", "reserved", "debt"):
        assert shown(page, kind) == console_money.signed_money(cny[f"{kind}_cents"], "CNY"), kind
    assert shown(page, "pending") == "¥9.75" and shown(page, "available") == "¥0.00"
    assert 'data-kind="payable"' not in page  # a platform merchant owes no fee payable

    # Why pending: the held order, linked, with its reason and release time; the refunded one is gone.
    [hold] = books["pending"]
    assert hold["order_id"] == orders[0]["order_id"]
    rows = re.findall(r'<tr data-order="([^"]+)">(.*?)</tr>', page.split('id="holds"')[1].split("</table>")[0], re.S)
    assert [order_id for order_id, _ in rows] == [orders[0]["order_id"]]
    assert f'href="/console/orders/{orders[0]["order_id"]}"' in rows[0][1]
    assert hold["reason"] == f"the platform's hold of {HOLD} s after a sale"
    assert "The platform's hold of 30 d after each sale" in html.unescape(rows[0][1]) and "¥9.75" in rows[0][1]
    assert when(hold["release_at"]) in rows[0][1]

    # The ledger lines, newest first, exactly the API's; the clawback reads as a minus.
    lines = (await dev_stack.http.get("/merchant/ledger", headers=shop.owner)).json()["entries"]
    assert entry_ids(page) == [e["entry_id"] for e in lines]
    assert "−¥9.75" in page
    assert 'id="older"' not in page and "their console page is not built yet." in page

    # Paged with `before`: a page of two lines, then the rest below the last one shown.
    pager = pytest.MonkeyPatch()
    pager.setattr(console_money, "LINES_PER_PAGE", 2)
    try:
        first = (await browser.http.get("/console/money")).text
        assert entry_ids(first) == [e["entry_id"] for e in lines[:2]]
        older = re.search(r'href="/console/money\?before=([0-9]+)" id="older"', first)
        assert older is not None and int(older[1]) == lines[1]["entry_id"]
        second = (await browser.http.get("/console/money", params={"before": older[1]})).text
        assert entry_ids(second) == [e["entry_id"] for e in lines[2:4]]
        assert 'id="newest"' in second
    finally:
        pager.undo()

    # Staff read it too, in Chinese.
    made = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "cashier"})
    assert made.status_code == 201, made.text
    staff = console()
    assert (await staff.sign_in(made.json()["token"])).status_code == 303
    zh = await staff.http.get("/console/money", headers={"Accept-Language": "zh-CN"})
    assert zh.status_code == 200 and "待结算原因" in zh.text and shown(zh.text, "pending") == "¥9.75"
    assert "平台对每笔销售的冻结期：30 天" in zh.text


async def test_a_direct_merchant_sees_the_fee_it_owes(dev_stack: Stack, console) -> None:
    from tests.api.test_direct_settlement import sim_account

    shop = await money_shop(dev_stack, fee_bps=500, hold_seconds=0, settlement="direct")
    account = await sim_account(dev_stack)  # buyers pay the shop's own account
    saved = await dev_stack.http.put("/merchant/gateways/simulator", headers=shop.owner, json=account.fields)
    assert saved.status_code == 200, saved.text
    await sold(dev_stack, shop, price_cents=2000)
    browser = console()
    await browser.sign_in(bearer(shop))
    page = (await browser.http.get("/console/money")).text
    [cny] = (await dev_stack.http.get("/merchant/balance", headers=shop.owner)).json()["balances"]
    assert shown(page, "payable") == console_money.signed_money(cny["payable_cents"], "CNY")
    assert cny["payable_cents"] != 0 and "Nothing is on hold." in page


async def test_merchant_b_sees_none_of_merchant_a_money(dev_stack: Stack, console) -> None:
    shop_a = await money_shop(dev_stack, fee_bps=100, hold_seconds=HOLD)
    [order] = await sold(dev_stack, shop_a, price_cents=1234)
    lines_a = (await dev_stack.http.get("/merchant/ledger", headers=shop_a.owner)).json()["entries"]
    shop_b = await open_shop(dev_stack, "Shop B")
    browser = console()
    await browser.sign_in(bearer(shop_b))
    for params in ({}, {"before": str(lines_a[0]["entry_id"] + 1)}):
        page = await browser.http.get("/console/money", params=params)
        assert page.status_code == 200
        assert order["order_id"] not in page.text and entry_ids(page.text) == []
        assert "¥12.22" not in page.text and "No money has moved yet." in page.text
    assert (await dev_stack.http.get("/merchant/balance", headers=shop_b.owner)).json()["balances"] == []
    stranger = console()
    away = await stranger.http.get("/console/money")
    assert (away.status_code, away.headers["location"]) == (303, "/console/sign-in")


def test_durations_read_in_the_largest_whole_unit() -> None:
    assert [console_money.duration(s) for s in (0, 59, 60, 7200, 86400, 90061)] == [
        "0 s",
        "59 s",
        "1 min",
        "2 h",
        "1 d",
        "90061 s",
    ]
    assert console_money.duration(172800, "zh") == "2 天"


async def test_hostile_paging_is_a_4xx(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack, "Odd " + uuid.uuid4().hex[:4])
    browser = console()
    await browser.sign_in(bearer(shop))
    for before in ("\x00", "abc", "０", "0", "-1", "9" * 21, "1e3", "名"):
        answer = await browser.http.get("/console/money", params={"before": before})
        assert answer.status_code == 422, (before, answer.status_code)
