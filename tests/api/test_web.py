"""The buyer's pages (issue 10) through the whole shop: storefront, order page, lookup page, the
form checkout without JavaScript, both languages, the security headers; and the simulator's pay page."""

import re
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx

from api.routes.web import CSP, describe
from api.web.i18n import Translator
from miaofa import orders
from miaofa.db.models import Order
from miaofa.simulator import page as sim_page
from tests.helpers.stack import Stack

EN = {"Accept-Language": "en-US,en;q=0.9"}
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}


def _tampered(token: str) -> str:
    """The token with its first character changed (to "y" if it was an "x": else it is the same token)."""
    return ("y" if token[0] == "x" else "x") + token[1:]


def _buyer() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


async def _listed(stack: Stack, sku: str) -> None:
    """The stock hint refreshes every second: refresh it now, so the storefront lists the product."""
    await stack.refresh_stock()
    assert sku in [p["sku"] for p in (await stack.http.get("/products")).json()]


def _cookie(answer: httpx.Response, name: str) -> str:
    """The one Set-Cookie of `name` in an answer (a page with a form sets the CSRF cookie too)."""
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith(name + "=")]
    return cookie


def _card(page: str, sku: str) -> str:
    """The storefront's <li> of one product."""
    start = page.index(f'data-sku="{sku}"')
    return page[start : page.index("</li>", start)]


async def _named_product(stack: Stack, name: str, keys: int, price_cents: int = 990) -> str:
    sku = "w-" + uuid.uuid4().hex[:10]
    created = await stack.http.post(
        "/admin/products",
        headers=stack.admin,
        json={"sku": sku, "name": name, "price_cents": price_cents, "currency": "CNY", "delivery_sla_seconds": 60},
    )
    assert created.status_code == 201, created.text
    if keys:
        imported = await stack.http.post(
            f"/admin/products/{sku}/keys",
            headers={**stack.admin, "Content-Type": "text/plain"},
            content="\n".join(f"K-{sku}-{i}-{uuid.uuid4().hex[:6]}" for i in range(keys)),
        )
        assert imported.status_code == 200, imported.text
    await _listed(stack, sku)
    return sku


# ---- the storefront ----------------------------------------------------------------------------


async def test_the_storefront_lists_a_product_with_its_price_and_stock(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Steam Wallet 50", keys=3, price_cents=4990)
    page = await dev_stack.http.get("/", params={"q": sku}, headers=EN)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    card = _card(page.text, sku)
    assert "<h2>Steam Wallet 50</h2>" in card
    assert '<span class="price">¥49.90</span>' in card
    assert "3 in stock" in card
    assert '<option value="simulator">Test payment (simulator)</option>' in card
    assert 'max="3"' in card  # no more than is left


async def test_a_product_name_is_escaped(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, '<script>alert("x")</script> & co', keys=1)
    page = (await dev_stack.http.get("/", params={"q": sku}, headers=EN)).text
    assert "<h2>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co</h2>" in _card(page, sku)
    assert "<script>alert" not in page
    # Every script on the page is a file of ours or inert JSON: nothing inline runs.
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script type="application/json" id="strings">', '<script src="/static/shop.js" defer>']


async def test_a_search_box_appears_past_eight_products_and_filters(dev_stack: Stack) -> None:
    marker = uuid.uuid4().hex[:8]
    skus = [await _named_product(dev_stack, f"Search {marker} {i}", keys=1) for i in range(9)]
    page = (await dev_stack.http.get("/", headers=EN)).text
    assert 'id="search"' in page
    found = (await dev_stack.http.get("/", params={"q": f"{marker} 7"}, headers=EN)).text
    assert [sku for sku in skus if f'data-sku="{sku}"' in found] == [skus[7]]
    nothing = (await dev_stack.http.get("/", params={"q": "no such product at all"}, headers=EN)).text
    assert '<p class="empty" id="no-match">No product matches your search.</p>' in nothing


async def test_the_language_follows_accept_language_and_the_switch(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Lang test", keys=2)
    zh = await dev_stack.http.get("/", params={"q": sku}, headers=ZH)
    assert '<html lang="zh-CN">' in zh.text and "库存 2" in _card(zh.text, sku) and "提交订单" in zh.text
    for header in (EN, {"Accept-Language": "fr-FR,fr;q=0.9"}, {}):
        en = await dev_stack.http.get("/", params={"q": sku}, headers=header)
        assert '<html lang="en">' in en.text and "2 in stock" in _card(en.text, sku), header
    assert 'href="/?q=' + sku + '&amp;lang=en"' in zh.text  # the switch keeps the query

    # A browser of its own: the switch's cookie must not reach the shared client of the other tests.
    async with httpx.AsyncClient(base_url=dev_stack.http.base_url, timeout=10) as browser:
        switched = await browser.get("/", params={"q": sku, "lang": "zh"}, headers=EN)
        assert '<html lang="zh-CN">' in switched.text
        assert _cookie(switched, "lang").startswith("lang=zh;")
        remembered = await browser.get("/lookup", headers=EN)
        assert '<html lang="zh-CN">' in remembered.text and "查找我的订单" in remembered.text
        back = await browser.get("/lookup", params={"lang": "en"}, headers=ZH)
        assert '<html lang="en">' in back.text and _cookie(back, "lang").startswith("lang=en;")
        assert '<html lang="en">' in (await browser.get("/lookup", headers=ZH)).text


# ---- the checkout form without JavaScript --------------------------------------------------------


def _csrf(page: str) -> str:
    """The hidden CSRF token of the (first) form on a page."""
    found = re.search(r'<input type="hidden" name="csrf" value="([A-Za-z0-9_-]+)">', page)
    assert found, page[:300]
    return found.group(1)


async def _form_token(client: httpx.AsyncClient, path: str) -> str:
    """The token of the form at `path` (the client keeps the nonce cookie, as a browser does)."""
    page = await client.get(path)
    assert page.status_code == 200
    return _csrf(page.text)


async def _buy(stack: Stack, headers: dict[str, str] = EN, **fields: str) -> httpx.Response:
    form = {
        "quantity": "1",
        "gateway": "simulator",
        "coupon_code": "",
        "idem": uuid.uuid4().hex,
        "csrf": await _form_token(stack.http, "/"),
        **fields,
    }
    if "Cookie" in headers:  # a Cookie header replaces the client's cookies: keep the CSRF nonce
        headers = {**headers, "Cookie": f"{headers['Cookie']}; mf_csrf={stack.http.cookies['mf_csrf']}"}
    return await stack.http.post("/buy", data=form, headers=headers, follow_redirects=False)


async def test_bad_form_input_gets_a_readable_message_and_creates_nothing(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Form test", keys=2)
    empty = await _named_product(dev_stack, "Form sold out", keys=0)
    cases = [
        (dict(sku=sku, email="not-an-email"), 422, "Please enter one valid email address, like name@example.com."),
        (dict(sku=sku, email=_buyer(), quantity="11"), 422, "Please choose a quantity from 1 to 10."),
        (dict(sku=sku, email=_buyer(), quantity="two"), 422, "Please choose a quantity from 1 to 10."),
        (dict(sku=sku, email=_buyer(), coupon_code="NOSUCHCOUPON"), 422, "Unknown coupon code."),
        (dict(sku=sku, email=_buyer(), gateway="paypal"), 422, "This payment method is not available."),
        (
            dict(sku=empty, email=_buyer()),
            409,
            "Sorry, this product is sold out (or not enough left for that quantity).",
        ),
    ]
    for fields, status, message in cases:
        answer = await _buy(dev_stack, **fields)
        assert answer.status_code == status, (fields, answer.text[:300])
        card = _card(answer.text, fields["sku"])
        assert f'<p class="error" role="alert" data-error>{message}</p>' in card, fields
        assert "<details open>" in card
    zh = await _buy(dev_stack, ZH, sku=sku, email='<b>"x"</b>')
    card = _card(zh.text, sku)
    assert "请输入一个有效的邮箱地址，例如 name@example.com。" in card
    assert 'value="&lt;b&gt;&#34;x&#34;&lt;/b&gt;"' in card  # the form is refilled, escaped
    assert await dev_stack.stock(sku) == {"available": 2, "reserved": 0, "sold": 0, "refunded": 0}


async def test_the_form_checkout_goes_to_the_order_page_once_per_submission(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Form buy", keys=3)
    email, idem = _buyer(), uuid.uuid4().hex
    bought = await _buy(dev_stack, {**EN, "Cookie": "lang=zh"}, sku=sku, email=email, quantity="2", idem=idem)
    assert bought.status_code == 303, bought.text[:300]
    location = urlsplit(bought.headers["location"])
    order_id = location.path.removeprefix("/o/")
    assert location.path == f"/o/{order_id}" and parse_qs(location.query) == {
        "token": [dev_stack.vault.order_token(order_id)]
    }
    again = await _buy(dev_stack, sku=sku, email=email, quantity="2", idem=idem)  # a double submit
    assert again.status_code == 409
    assert "This order was already placed." in _card(again.text, sku)
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 2, "sold": 0, "refunded": 0}
    page = await dev_stack.http.get(bought.headers["location"], headers=EN)
    assert page.status_code == 200 and "Awaiting payment" in page.text
    async with dev_stack.sessionmaker() as session:  # the emails will speak the page's language
        assert (await session.get(Order, order_id)).lang == "zh"


def test_refusals_read_well_in_both_languages() -> None:
    en, zh = Translator("en"), Translator("zh")
    assert (
        describe(en, "too_many_requests", "slow down", "7") == "Too many attempts. Please wait 7 seconds and try again."
    )
    assert describe(zh, "too_many_requests", "slow down", "7") == "操作过于频繁，请 7 秒后再试。"
    assert (
        describe(en, "too_many_open_orders", "")
        == "You already have unpaid orders. Pay or wait for them to expire first."
    )
    assert describe(en, "quantity_limit", "") == "That is more than one buyer may take of this product."
    assert describe(en, "order_timeout", "") == "The shop is busy. Please try again in a moment."
    assert describe(en, "something_new", "") == "Something went wrong. Please try again."
    assert describe(en, "invalid_input", "sku: too long") == "Please check the form: sku: too long"


# ---- the order page ----------------------------------------------------------------------------


async def test_the_order_page_shows_the_pay_link_then_the_keys(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Order page", keys=1)
    order = await dev_stack.ordered(sku, email=_buyer())
    url = f"/o/{order['order_id']}"
    page = await dev_stack.http.get(url, params={"token": order["access_token"]}, headers=EN)
    assert page.status_code == 200
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert '<span class="badge status-awaiting_payment" id="status">Awaiting payment</span>' in page.text
    assert f'href="{order["payment"]["pay_url"]}"' in page.text
    assert '<svg viewBox="0 0 ' in page.text and 'class="qr"' in page.text  # the QR, drawn locally
    assert "<dd>¥9.90</dd>" in page.text and "<dd>Order page × 1</dd>" in page.text

    await dev_stack.pay(order)
    view = await dev_stack.wait_status(order, "delivered")
    done = await dev_stack.http.get(url, params={"token": order["access_token"]}, headers=ZH)
    assert '<span class="badge status-delivered" id="status">已发货</span>' in done.text
    assert f"<li><code>{view['keys'][0]}</code>" in done.text
    assert "<span>卡密已发货</span>" in done.text and 'id="pay" hidden' in done.text
    assert 'href="/o/' + order["order_id"] + "?token=" + order["access_token"] + '&amp;lang=en"' in done.text


async def test_the_order_timeline_shows_buyers_words_never_an_internal_stage(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Timeline", keys=1)
    order = await dev_stack.ordered(sku, email=_buyer())
    async with dev_stack.sessionmaker.begin() as session:  # stages support and the system write, shown or not
        for stage in ("reconcile", "stray_payment_refund_refused", "review_approved", "refund_by_hand"):
            await orders.add_event(session, order["order_id"], stage, datetime.now(UTC), once=False)
    stages = [e["stage"] for e in (await dev_stack.view(order))["timeline"]]
    assert stages == [
        "created",
        "risk",
        "reserved",
        "payment_created",
        "reconcile",
        "stray_payment_refund_refused",
        "review_approved",
        "refund_by_hand",
    ]  # the JSON API keeps them all
    for headers, words in (
        (
            EN,
            ["Order placed", "Stock reserved", "Payment opened", "Approved after review", "Refund to be sent by hand"],
        ),
        (ZH, ["订单已创建", "库存已锁定", "已创建支付", "审核通过", "退款将由人工办理"]),
    ):
        page = (
            await dev_stack.http.get(
                f"/o/{order['order_id']}", params={"token": order["access_token"]}, headers=headers
            )
        ).text
        timeline = page[page.index('<ol class="timeline"') : page.index("</ol>", page.index('<ol class="timeline"'))]
        assert re.findall(r"<li><span>([^<]*)</span>", timeline) == words
        for internal in ("risk", "reconcile", "stray_payment_refund_refused", "stray payment refund refused"):
            assert internal not in timeline


async def test_fr_then_zh_is_chinese_for_the_page_and_the_email(dev_stack: Stack) -> None:
    header = {"Accept-Language": "fr, zh;q=0.5"}  # French first (we have none), then Chinese
    sku = await _named_product(dev_stack, "Language", keys=1)
    assert '<html lang="zh-CN">' in (await dev_stack.http.get("/", params={"q": sku}, headers=header)).text
    order = await dev_stack.ordered(sku, email=_buyer(), headers=header)
    async with dev_stack.sessionmaker() as session:
        assert (await session.get(Order, order["order_id"])).lang == "zh"  # the emails' language


async def test_a_cancelled_order_says_so_and_offers_no_payment(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Cancelled", keys=1)
    order = await dev_stack.ordered(sku, email=_buyer())
    cancelled = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel", headers=dev_stack.support)
    assert cancelled.status_code == 200, cancelled.text
    page = (
        await dev_stack.http.get(f"/o/{order['order_id']}", params={"token": order["access_token"]}, headers=ZH)
    ).text
    assert '<span class="badge status-cancelled" id="status">已取消</span>' in page
    assert '<p class="message" id="message">此订单已取消，无需付款。</p>' in page
    assert 'id="pay" hidden' in page and order["payment"]["pay_url"] not in page
    assert 'data-live="no"' in page  # settled: the page opens no event stream


async def test_a_wrong_or_missing_token_is_a_readable_404_that_reveals_nothing(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Hidden order", keys=1)
    order = await dev_stack.ordered(sku, email=_buyer())
    url = f"/o/{order['order_id']}"
    wrong = await dev_stack.http.get(url, params={"token": _tampered(order["access_token"])}, headers=EN)
    missing = await dev_stack.http.get(url, headers=EN)
    unknown = await dev_stack.http.get("/o/nosuchorder", params={"token": order["access_token"]}, headers=EN)
    odd = await dev_stack.http.get("/o/bad%20id%0A", params={"token": "t"}, headers=EN)

    def shown(answer: httpx.Response) -> str:  # all but the language switch, which links to the same URL
        return re.sub(r'<a class="switch" href="[^"]*"', "", answer.text)

    for answer in (wrong, missing, unknown, odd):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert shown(answer) == shown(wrong)
    assert "<h1>Order not found</h1>" in wrong.text and order["order_id"] not in shown(wrong)
    # The JSON API keeps its error contract.
    api = await dev_stack.http.get(f"/orders/{order['order_id']}", params={"token": "nope"})
    assert (api.status_code, api.json()) == (404, {"error": "order_not_found", "detail": "no such order"})
    nowhere = await dev_stack.http.get("/no/such/page")
    assert (nowhere.status_code, nowhere.json()["error"]) == (404, "not_found")


# ---- the lookup page, headers, static files ---------------------------------------------------------


async def test_the_lookup_page_renders_a_form_that_lists_nothing(dev_stack: Stack) -> None:
    page = await dev_stack.http.get("/lookup", headers=EN)
    assert page.status_code == 200
    assert '<form id="lookup" class="lookup" method="post" action="/lookup" novalidate>' in page.text
    assert '<input type="email" name="email"' in page.text
    assert (
        '<p class="ok" role="status" data-sent hidden>If there are orders for this address, we have emailed '
        "links to it.</p>" in page.text
    )
    assert '<script src="/static/lookup.js" defer>' in page.text


async def test_every_page_carries_the_security_headers(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Headers", keys=1)
    order = await dev_stack.ordered(sku, email=_buyer())
    for path in ("/", "/lookup", f"/o/{order['order_id']}?token={order['access_token']}", "/o/nosuchorder"):
        answer = await dev_stack.http.get(path)
        assert answer.headers["content-security-policy"] == CSP, path
        assert "'unsafe-inline'" not in CSP and "script-src 'self';" in CSP
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
    for name, kind in (
        ("shop.css", "text/css"),
        ("shop.js", "text/javascript"),
        ("order.js", "text/javascript"),
        ("lookup.js", "text/javascript"),
    ):
        served = await dev_stack.http.get(f"/static/{name}")
        assert (served.status_code, served.headers["content-type"].split(";")[0]) == (200, kind), name


# ---- the simulator's pay page --------------------------------------------------------------------


async def test_the_simulator_pay_page_shows_amount_merchant_qr_and_both_buttons(dev_stack: Stack) -> None:
    sku = await _named_product(dev_stack, "Sim page", keys=1, price_cents=1234)
    order = await dev_stack.ordered(sku, email=_buyer())
    payment_id = order["payment"]["payment_id"]
    page = await dev_stack.sim.get(f"/pay/{payment_id}")
    assert page.headers["content-security-policy"] == sim_page.CSP
    assert '<p class="amount">12.34 CNY</p>' in page.text
    assert f'<p class="merchant">{dev_stack.settings.sim_merchant_id}</p>' in page.text
    assert '<svg viewBox="0 0 ' in page.text
    assert f'<form method="post" action="/pay/{payment_id}"><button class="pay" type="submit">' in page.text
    assert f'<form method="post" action="/pay/{payment_id}/fail"><button class="fail" type="submit">' in page.text

    # Fail: the buyer goes back to the shop (the return link: tests/api/test_buyer_links.py), nothing is paid.
    failed = await dev_stack.sim.post(
        f"/pay/{payment_id}/fail", headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False
    )
    assert failed.status_code == 303
    assert failed.headers["location"].startswith(f"{dev_stack.settings.api_url}/o/{order['order_id']}/return?ticket=")
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"
    paid = await dev_stack.sim.post(f"/pay/{payment_id}", headers={"accept": "text/html"}, follow_redirects=False)
    assert (paid.status_code, paid.headers["location"]) == (303, failed.headers["location"])
    after = await dev_stack.sim.get(f"/pay/{payment_id}")
    assert "Paid · 已支付" in after.text and 'class="pay"' not in after.text
    await dev_stack.wait_status(order, "delivered")
