"""The console under hostile input: NUL bytes and non-ASCII in every form field and path parameter,
bodies over the limits, replayed posts. Each is a 4xx, never a 5xx."""

import uuid

import pytest

from tests.api.test_merchants import open_shop, shop_order, shop_product
from tests.helpers.console import Console, bearer, import_token
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


async def test_hostile_input_is_refused_with_a_4xx(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, ["H-1"])
    browser = console()
    assert (await browser.sign_in("mfm_\x00")).status_code == 401
    assert (await browser.sign_in("令牌" * 50)).status_code == 401
    assert (await browser.sign_in("x" * 5000)).status_code == 401
    await browser.sign_in(bearer(shop))
    for path in (
        "/console/products/%00",
        "/console/products/商品",
        "/console/products/a%00b/keys",
        "/console/orders/%00",
        "/console/orders/订单",
        "/console/orders/%E2%80%AEx",
        "/console/products/" + "a" * 300,
    ):
        answer = await browser.http.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
    posts = {
        "/console/staff/%00/revoke": "console-staff-revoke",
        "/console/staff/名字/revoke": "console-staff-revoke",
        "/console/orders/x%00/refund": "console-order-action",
        "/console/orders/订单/cancel": "console-order-action",
        f"/console/products/{sku}%00": "console-product-edit",
        "/console/orders/订单/reveal": "console-reveal",
        "/console/orders/%00/reveal": "console-reveal",
    }
    for path, form_name in posts.items():
        answer = await browser.http.post(path, data={"csrf": browser.token(form_name), "reason": "\x00名"})
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
    own = await shop_order(dev_stack, shop, sku)
    for reason in ("\x00", "\u202e", ""):
        path = f"/console/orders/{own['order_id']}/cancel"
        answer = await browser.http.post(path, data={"csrf": browser.token("console-order-action"), "reason": reason})
        assert answer.status_code == 422, reason

    base = {
        "sku": "h-" + uuid.uuid4().hex[:6],
        "name": "ok",
        "currency": "CNY",
        "price_cents": "10",
        "delivery_sla_seconds": "60",
        "description": "",
    }
    for name, value in [
        ("sku", "a\x00"),
        ("sku", "商品"),
        ("name", "a\x00b"),
        ("name", "\u202egnp.exe"),
        ("currency", "人民币"),
        ("price_cents", "１２"),
        ("price_cents", "-1"),
        ("price_cents", "1e3"),
        ("delivery_sla_seconds", "0"),
        ("description", "\x00"),
        ("name", ""),
    ]:
        answer = await browser.post("/console/products", "/console/products", {**base, name: value})
        assert answer.status_code == 422, (name, value, answer.status_code)
        assert "Please check the form" in answer.text
    chinese = await browser.post("/console/products", "/console/products", {**base, "name": "中文商品 🎮"})
    assert chinese.status_code == 303
    replayed = await browser.post("/console/products", "/console/products", {**base, "name": "中文商品 🎮"})
    assert replayed.status_code == 409  # the same form twice: the product exists
    for value in ("\x00", "名字", "a" * 40):
        answer = await browser.post("/console/staff", "/console/staff", {"name": value})
        assert answer.status_code == 422, value
    revoke = {"csrf": browser.token("console-staff-revoke")}
    twice = [await browser.http.post("/console/staff/nobody/revoke", data=revoke) for _ in range(2)]
    assert [a.status_code for a in twice] == [404, 404]
    for params in ({"email": "\x00"}, {"status": "nope"}, {"sku": "商品"}, {"from": "2026-13-01"}, {"to": "\x00"}):
        answer = await browser.http.get("/console/orders", params=params)
        assert answer.status_code == 422, params
    assert (await browser.http.get("/console/orders", params={"email": "买家@例子.中国"})).status_code == 200

    # Bodies over the API's limits (api/limits.py covers /console: 64 KiB).
    huge = "K-" + "x" * 100 + "\n"
    token = import_token((await browser.http.get(f"/console/products/{sku}/keys")).text)
    big = await browser.http.post(
        f"/console/products/{sku}/keys/import",
        content=huge * 1000,
        headers={"Content-Type": "text/plain", "X-CSRF-Token": token},
    )
    assert big.status_code == 413
    form = await browser.post("/console/products", "/console/products", {**base, "description": "d" * 200_000})
    assert form.status_code == 413
    nul_key = await browser.http.post(
        f"/console/products/{sku}/keys/import",
        content="GOOD-1\nBAD-\x00-2",
        headers={"Content-Type": "text/plain", "X-CSRF-Token": token},
    )
    assert nul_key.status_code == 422 and "\x00" not in nul_key.text
    wrong_type = await browser.http.post(
        f"/console/products/{sku}/keys/import",
        content="{}",
        headers={"Content-Type": "application/json", "X-CSRF-Token": token},
    )
    assert wrong_type.status_code == 415


async def test_odd_encodings_of_a_form_are_a_4xx(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    browser = console()
    await browser.sign_in(bearer(shop))
    token = browser.token("console-product")
    sku = "e-" + uuid.uuid4().hex[:6]
    fields = {"csrf": token, "sku": sku, "currency": "CNY", "price_cents": "10", "delivery_sla_seconds": "60"}
    as_file = await browser.http.post("/console/products", data=fields, files={"name": ("n.txt", b"a file")})
    assert as_file.status_code == 422  # a file where text belongs
    raw = "&".join(f"{k}={v}" for k, v in fields.items()) + "&name=%FF%FE%00"
    latin = await browser.http.post(
        "/console/products", content=raw, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert latin.status_code == 422  # the NUL is refused whatever came before it
    no_csrf_file = await browser.http.post(
        "/console/sign-out", files={"csrf": ("c.txt", token.encode())}, data={"x": "1"}
    )
    assert no_csrf_file.status_code == 403
    for method in ("PUT", "DELETE", "PATCH"):
        assert (await browser.http.request(method, "/console/products")).status_code == 405
