"""The merchant console (/console): its session cookie, CSRF on every form, the wall between shops on
every route, the chunked key import, the audited reveal and the order actions (hostile input:
test_console_attacks.py)."""

import html
import logging
import re
import uuid
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select, update
from starlette.requests import Request
from starlette.responses import Response

from api.console import session as console_session
from miaofa import contract as c
from miaofa.db.models import AuditLog, Order, Product
from tests.api.test_merchants import open_shop, shop_order, shop_product
from tests.helpers.console import SIGN_IN, Console, bearer, import_token, token_in
from tests.helpers.stack import Stack


@pytest.fixture
async def console(dev_stack: Stack):
    browsers: list[Console] = []

    def make() -> Console:
        browsers.append(Console(dev_stack))
        return browsers[-1]

    yield make
    for browser in browsers:
        await browser.aclose()


async def test_sign_in_sets_a_strict_session_cookie_and_sign_out_clears_it(
    dev_stack: Stack, console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shop = await open_shop(dev_stack)
    browser = console()
    away = await browser.http.get("/console/")
    assert (away.status_code, away.headers["location"]) == (303, SIGN_IN)

    bad = await browser.sign_in("mfm_" + "x" * 43)
    assert bad.status_code == 401
    assert "That token is not a live merchant token." in bad.text
    assert "mf_console" not in bad.headers.get("set-cookie", "")

    page = (await browser.http.get(SIGN_IN)).text
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        forged = await browser.http.post(
            SIGN_IN, data={"csrf": token_in(page, SIGN_IN), "token": bearer(shop)}, headers=headers
        )
        assert forged.status_code == 403 and "mf_console" not in forged.headers.get("set-cookie", "")
    tokenless = await browser.http.post(SIGN_IN, data={"token": bearer(shop)})
    assert tokenless.status_code == 403 and "mf_console" not in tokenless.headers.get("set-cookie", "")

    signed = await browser.sign_in(bearer(shop))
    assert (signed.status_code, signed.headers["location"]) == (303, "/console/")
    [cookie] = [h for h in signed.headers.get_list("set-cookie") if h.startswith("mf_console=")]
    value = cookie.split(";", 1)[0].removeprefix("mf_console=")
    assert re.fullmatch(r"v1\.[0-9]+\.[0-9]+\.[A-Za-z0-9_-]{43}", value)
    assert bearer(shop) not in cookie
    attributes = sorted(part.strip() for part in cookie.split(";")[1:])
    assert attributes == ["HttpOnly", "Max-Age=43200", "Path=/console", "SameSite=strict"]  # http: not Secure

    home = await browser.http.get("/console/")
    assert home.status_code == 200
    assert f"{shop.slug} / owner" in home.text
    assert bearer(shop) not in home.text
    assert home.headers["cache-control"] == "no-store"
    assert "Balance / statements / withdrawals" in home.text
    zh = await browser.http.get("/console/", headers={"Accept-Language": "zh-CN"})
    assert "今日订单" in zh.text and "余额、冻结金额与账本" in zh.text

    # A tampered cookie is no session.
    forged = httpx.AsyncClient(base_url=str(dev_stack.http.base_url), cookies={"mf_console": value[:-2] + "AA"})
    async with forged:
        assert (await forged.get("/console/")).status_code == 303

    without = await browser.http.post("/console/sign-out", data={})
    assert without.status_code == 403
    assert "This form has expired or came from another site." in without.text
    page = (await browser.http.get("/console/")).text
    cross = await browser.http.post(
        "/console/sign-out",
        data={"csrf": token_in(page, "/console/sign-out")},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert (await browser.http.get("/console/")).status_code == 200  # still signed in

    out = await browser.post("/console/", "/console/sign-out", {})
    assert (out.status_code, out.headers["location"]) == (303, f"{SIGN_IN}?out=1")
    [cleared] = [h for h in out.headers.get_list("set-cookie") if h.startswith("mf_console=")]
    assert "Max-Age=0" in cleared and "Path=/console" in cleared
    assert (await browser.http.get("/console/")).status_code == 303
    # The server's logs (not this test client's own wire trace) hold neither the token nor the session.
    served = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert bearer(shop) not in served and value not in served


def test_the_session_cookie_is_secure_over_https() -> None:
    vault_key = b"k" * 32
    app = SimpleNamespace(state=SimpleNamespace(miaofa=SimpleNamespace(vault=SimpleNamespace(form_key=vault_key))))
    app.state.miaofa.csrf = SimpleNamespace(secure=False)
    scope = {"type": "http", "scheme": "https", "server": ("shop.example", 443), "path": "/console/sign-in"}
    scope.update(method="POST", headers=[], query_string=b"", app=app, root_path="")
    response = Response()
    holder = SimpleNamespace(token_id=7)
    console_session.start(Request(scope), response, holder)  # type: ignore[arg-type]
    cookie = response.headers["set-cookie"]
    assert sorted(p.strip() for p in cookie.split(";")[1:]) == [
        "HttpOnly",
        "Max-Age=43200",
        "Path=/console",
        "SameSite=strict",
        "Secure",
    ]
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert console_session.opened(vault_key, value) == 7
    assert console_session.opened(vault_key, value, now=10**11) is None  # expired
    assert console_session.opened(b"j" * 32, value) is None  # another key


async def test_a_revoked_token_ends_its_session_and_staff_cannot_open_tokens(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    added = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "kim"})
    staff = console()
    assert (await staff.sign_in(added.json()["token"])).status_code == 303
    assert (await staff.http.get("/console/")).status_code == 200
    refused = await staff.http.get("/console/staff")
    assert refused.status_code == 403 and "Only the shop's owner may open this." in html.unescape(refused.text)
    assert 'href="/console/staff"' not in (await staff.http.get("/console/")).text

    owner = console()
    await owner.sign_in(bearer(shop))
    listed = await owner.http.get("/console/staff")
    assert listed.status_code == 200 and 'data-name="kim"' in listed.text
    made = await owner.post("/console/staff", "/console/staff", {"name": "lee"})
    assert made.status_code == 200
    [shown] = re.findall(r'<code id="new-token">([^<]+)</code>', made.text)
    assert shown.startswith("mfm_")
    assert shown not in (await owner.http.get("/console/staff")).text  # shown once
    revoked = await owner.post("/console/staff", "/console/staff/kim/revoke", {})
    assert (revoked.status_code, revoked.headers["location"]) == (303, "/console/staff?revoked=kim")
    again = await staff.http.get("/console/")
    assert (again.status_code, again.headers["location"]) == (303, SIGN_IN)


async def _walk(browser: Console, csrf_page: str, sku: str, order_id: str) -> list[tuple[str, str, int]]:
    """Every console route with these ids: (method, path, status)."""
    signed = bool(csrf_page)
    if signed:
        assert (await browser.http.get(csrf_page)).status_code == 200

    def form(name: str) -> dict[str, str]:
        return {"csrf": browser.token(name)} if signed else {}

    product = {"name": "Taken over", "price_cents": "1", "delivery_sla_seconds": "60", "description": ""}
    reason = {"reason": "not mine", "idem": "i" * 20}
    steps = [
        ("GET", f"/console/products/{sku}", None),
        ("POST", f"/console/products/{sku}", {**form("console-product-edit"), **product}),
        ("GET", f"/console/products/{sku}/keys", None),
        ("GET", f"/console/orders/{order_id}", None),
        ("POST", f"/console/orders/{order_id}/reveal", form("console-reveal")),
        *[
            ("POST", f"/console/orders/{order_id}/{action}", {**form("console-order-action"), **reason})
            for action in ("refund", "resend", "cancel")
        ],
    ]
    seen = []
    for method, path, data in steps:
        answer = await browser.http.request(method, path, data=data)
        seen.append((method, path, answer.status_code))
    headers = {"Content-Type": "text/plain", "X-CSRF-Token": form("console-import").get("csrf", "")}
    answer = await browser.http.post(f"/console/products/{sku}/keys/import", content="STOLEN-KEY-1", headers=headers)
    seen.append(("POST", f"/console/products/{sku}/keys/import", answer.status_code))
    return seen


async def test_merchant_b_meets_a_404_on_every_route_with_merchant_a_ids(dev_stack: Stack, console) -> None:
    shop_a, shop_b = await open_shop(dev_stack, "Shop A"), await open_shop(dev_stack, "Shop B")
    sku = await shop_product(dev_stack, shop_a, [f"A-{uuid.uuid4().hex}" for _ in range(3)])
    order = await shop_order(dev_stack, shop_a, sku)
    stock_before = (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=shop_a.owner)).json()

    browser = console()
    assert (await browser.sign_in(bearer(shop_b))).status_code == 303
    walked = await _walk(browser, "/console/", sku, order["order_id"])
    assert [status for _, _, status in walked] == [404] * len(walked), walked
    listing = await browser.http.get("/console/orders", params={"sku": sku})
    assert listing.status_code == 200 and order["order_id"] not in listing.text
    assert sku not in (await browser.http.get("/console/products")).text

    async with dev_stack.sessionmaker() as db:
        product = await db.scalar(select(Product).where(Product.merchant_id == shop_a.merchant_id, Product.sku == sku))
        assert product is not None and product.name == f"Card {sku}" and product.price_cents == 500
        assert await db.scalar(select(Order.status).where(Order.id == order["order_id"])) == c.AWAITING_PAYMENT
        touched = await db.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.actor.like(f"{shop_b.slug}/%"))
        )
        assert touched == 0
    assert (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=shop_a.owner)).json() == stock_before

    stranger = console()
    for method, path, _ in await _walk(stranger, "", sku, order["order_id"]):
        answer = await stranger.http.request(method, path)
        if path.endswith("/keys/import"):
            assert answer.status_code == 401, path
        else:
            assert (answer.status_code, answer.headers["location"]) == (303, SIGN_IN), (method, path)
    for path in ("/console/", "/console/products", "/console/orders", "/console/staff", "/console"):
        answer = await stranger.http.get(path)
        assert answer.status_code == 303, path


async def test_the_import_counts_duplicates_and_a_reveal_is_audited_once(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    browser = console()
    await browser.sign_in(bearer(shop))
    sku = "c-" + uuid.uuid4().hex[:8]
    made = await browser.post(
        "/console/products",
        "/console/products",
        {"sku": sku, "name": "月卡 Monthly", "currency": "cny", "price_cents": "1990", "delivery_sla_seconds": "60"},
    )
    assert (made.status_code, made.headers["location"]) == (303, f"/console/products?created={sku}")
    keys_page = await browser.http.get(f"/console/products/{sku}/keys")
    token = import_token(keys_page.text)
    url = f"/console/products/{sku}/keys/import"
    keys = [f"CK-{uuid.uuid4().hex}" for _ in range(300)]
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-CSRF-Token": token}
    first = await browser.http.post(url, content="\n".join(keys[:200]), headers=headers)
    assert first.json() == {"imported": 200, "duplicates": 0}
    second = await browser.http.post(url, content="\n".join(keys[100:300]), headers=headers)
    assert second.json() == {"imported": 100, "duplicates": 100}
    no_token = await browser.http.post(url, content=keys[0], headers={"Content-Type": "text/plain"})
    assert (no_token.status_code, no_token.json()["error"]) == (403, "csrf_refused")
    cross = await browser.http.post(url, content="X-1", headers={**headers, "Origin": "https://evil.example"})
    assert cross.status_code == 403
    listing = await browser.http.get("/console/products")
    assert re.search(rf'data-sku="{sku}".*?data-available>300<', listing.text, re.S)
    assert "¥19.90" in listing.text and "月卡 Monthly" in listing.text
    keys_text = (await browser.http.get(f"/console/products/{sku}/keys")).text
    assert not any(key in keys_text for key in keys)

    await dev_stack.refresh_stock()
    order = await shop_order(dev_stack, shop, sku, email="reveal@example.com")
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, c.DELIVERED)
    page = await browser.http.get(f"/console/orders/{order['order_id']}")
    assert page.status_code == 200 and "Keys delivered" in page.text
    assert not any(key in page.text for key in keys)
    shown = await browser.post(
        f"/console/orders/{order['order_id']}", f"/console/orders/{order['order_id']}/reveal", {}
    )
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    [key] = re.findall(r"<code>([^<]+)</code>", shown.text)
    assert html.unescape(key) in keys
    async with dev_stack.sessionmaker() as db:
        rows = list(
            await db.scalars(
                select(AuditLog).where(AuditLog.action == "keys.reveal", AuditLog.target == order["order_id"])
            )
        )
    assert [(r.actor, r.merchant_id, r.detail) for r in rows] == [
        (f"{shop.slug}/owner", shop.merchant_id, {"count": 1})
    ]

    found = await browser.http.get("/console/orders", params={"email": "reveal@example.com", "status": "delivered"})
    assert order["order_id"] in found.text
    dashboard = await browser.http.get("/console/")
    assert re.search(r'id="today-sales">¥19.90<', dashboard.text), dashboard.text
    assert order["order_id"] not in dashboard.text  # delivered within its SLA
    async with dev_stack.sessionmaker.begin() as db:  # as if the gateway's payment came 2 min before delivery
        await db.execute(
            update(Order).where(Order.id == order["order_id"]).values(paid_at=Order.delivered_at - timedelta(minutes=2))
        )
    late = await browser.http.get("/console/")
    assert f'href="/console/orders/{order["order_id"]}"' in late.text  # the SLA is 60 s

    refunded = await browser.post(
        f"/console/orders/{order['order_id']}",
        f"/console/orders/{order['order_id']}/refund",
        {"reason": "buyer asked", "idem": "r" * 20},
    )
    assert refunded.status_code == 200, refunded.text
    assert "Done: the order is now Refunded." in refunded.text
    assert 'id="refund"' not in refunded.text  # a refunded order offers no refund
    replayed = await browser.http.post(
        f"/console/orders/{order['order_id']}/refund",
        data={"csrf": browser.token("console-order-action"), "reason": "buyer asked", "idem": "r" * 20},
    )
    assert replayed.status_code == 200, replayed.text  # the same click again: answered, not refunded twice
    stale = {"csrf": browser.token("console-order-action"), "reason": "late"}  # a stale page's post
    again = await browser.http.post(f"/console/orders/{order['order_id']}/cancel", data=stale)
    assert 400 <= again.status_code < 500 and 'id="error"' in again.text
    async with dev_stack.sessionmaker() as db:
        rows = await db.scalars(
            select(AuditLog).where(AuditLog.action == "console.refund", AuditLog.target == order["order_id"])
        )
        # Each click is audited; the replay is the same Update (its id carries the form's key): one refund.
        assert [(r.actor, r.detail["outcome"]) for r in rows] == [(f"{shop.slug}/owner", "done")] * 2
    assert (await dev_stack.stages_of(order)).count("refunded") == 1
    assert (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=shop.owner)).json()["refunded"] == 1


async def test_a_product_is_edited_from_its_page(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, ["E-1", "E-2"])
    browser = console()
    await browser.sign_in(bearer(shop))
    page = await browser.http.get(f"/console/products/{sku}")
    assert page.status_code == 200 and 'data-count="available">2<' in page.text
    edited = await browser.post(
        f"/console/products/{sku}",
        f"/console/products/{sku}",
        {"name": "茶 Tea", "description": "Green.", "price_cents": "1234", "delivery_sla_seconds": "300"},
    )  # no "active" box ticked: off sale
    assert (edited.status_code, edited.headers["location"]) == (303, f"/console/products/{sku}?saved=1")
    [product] = (await dev_stack.http.get("/merchant/products", headers=shop.owner)).json()["products"]
    assert {k: product[k] for k in ("name", "description", "price_cents", "delivery_sla_seconds", "active")} == {
        "name": "茶 Tea",
        "description": "Green.",
        "price_cents": 1234,
        "delivery_sla_seconds": 300,
        "active": False,
    }
    back_on = await browser.post(
        f"/console/products/{sku}",
        f"/console/products/{sku}",
        {"name": "茶 Tea", "description": "", "price_cents": "1234", "delivery_sla_seconds": "300", "active": "on"},
    )
    assert back_on.status_code == 303
    [product] = (await dev_stack.http.get("/merchant/products", headers=shop.owner)).json()["products"]
    assert product["active"] is True and product["description"] == ""
    async with dev_stack.sessionmaker() as db:
        edits = await db.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "product.edit", AuditLog.target == sku)
        )
    assert edits == 2
