"""The console's coupons, webhook and gateway pages: the owner's forms work and show a secret once,
staff are kept to what they may do, a cross-site or malformed post changes nothing."""

import html
import re
import uuid

import pytest
from sqlalchemy import func, select

from miaofa.db.models import Coupon, Merchant, MerchantGatewayCredential
from tests.api.test_direct_settlement import direct_shop, sim_account
from tests.api.test_merchants import open_shop
from tests.helpers.console import SIGN_IN, Console, bearer
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


async def _coupon_count(stack: Stack, merchant_id: str) -> int:
    async with stack.sessionmaker() as db:
        return await db.scalar(select(func.count()).select_from(Coupon).where(Coupon.merchant_id == merchant_id)) or 0


async def test_the_owner_gives_out_coupons_from_the_console_and_staff_only_list_them(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    owner = console()
    await owner.sign_in(bearer(shop))
    code = "SPRING-" + uuid.uuid4().hex[:6].upper()
    made = await owner.post(
        "/console/coupons",
        "/console/coupons",
        {"code": code.lower(), "kind": "percent", "off": "15", "valid_days": "10"},
    )
    assert made.status_code == 201, made.text
    assert f"Coupon {code} is ready to give out." in html.unescape(made.text)
    auto = await owner.post(
        "/console/coupons",
        "/console/coupons",
        {"code": "", "kind": "amount", "off": "200", "currency": "cny", "valid_days": "30"},
    )
    assert auto.status_code == 201
    [auto_code] = re.findall(r"Coupon (MF-[A-Z0-9]{10}) is ready", auto.text)
    listed = await owner.http.get("/console/coupons")
    assert f'data-code="{code}"' in listed.text and f'data-code="{auto_code}"' in listed.text
    taken = await owner.post(
        "/console/coupons", "/console/coupons", {"code": code, "kind": "percent", "off": "50", "valid_days": "1"}
    )
    assert taken.status_code == 409
    async with dev_stack.sessionmaker() as db:
        coupon = await db.scalar(select(Coupon).where(Coupon.merchant_id == shop.merchant_id, Coupon.code == code))
        assert coupon is not None and coupon.percent_off == 15  # the refused duplicate changed nothing
        by_amount = await db.scalar(select(Coupon).where(Coupon.code == auto_code))
        assert by_amount is not None and (by_amount.amount_off_cents, by_amount.currency) == (200, "CNY")

    added = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "kim"})
    staff = console()
    await staff.sign_in(added.json()["token"])
    seen = await staff.http.get("/console/coupons")
    assert seen.status_code == 200 and f'data-code="{code}"' in seen.text
    assert 'action="/console/coupons"' not in seen.text
    refused = await staff.http.post(
        "/console/coupons",
        data={"csrf": staff.token("console-coupon"), "kind": "percent", "off": "90", "valid_days": "9"},
    )
    assert refused.status_code == 403
    for path in ("/console/webhook", "/console/gateways"):
        assert (await staff.http.get(path)).status_code == 403, path
    assert 'href="/console/webhook"' not in (await staff.http.get("/console/")).text
    assert await _coupon_count(dev_stack, shop.merchant_id) == 2


async def test_a_bad_or_cross_site_coupon_form_changes_nothing(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    owner = console()
    await owner.sign_in(bearer(shop))
    await owner.http.get("/console/coupons")
    token = owner.token("console-coupon")
    good = {"csrf": token, "kind": "percent", "off": "10", "valid_days": "5"}
    for change in (
        {"code": "MF\x00NUL1"},
        {"code": "优惠券码一二"},
        {"code": "x" * 41},
        {"kind": "free"},
        {"off": "0"},
        {"off": "101"},
        {"off": "１０"},  # full-width digits
        {"kind": "amount", "currency": "C1"},
        {"valid_days": "0"},
        {"valid_days": "400"},
    ):
        answer = await owner.http.post("/console/coupons", data={**good, **change})
        assert answer.status_code == 422, (change, answer.status_code)
    assert (await owner.http.post("/console/coupons", data={**good, "csrf": "forged"})).status_code == 403
    cross = await owner.http.post("/console/coupons", data=good, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    huge = await owner.http.post("/console/coupons", data={**good, "code": "A" * 2_000_000})
    assert huge.status_code in (413, 422)
    assert await _coupon_count(dev_stack, shop.merchant_id) == 0

    stranger = console()
    answer = await stranger.http.post("/console/coupons", data=good)
    assert (answer.status_code, answer.headers["location"]) == (303, SIGN_IN)


async def test_the_webhook_page_sets_a_url_shows_the_secret_once_and_clears_it(dev_stack: Stack, console) -> None:
    shop = await open_shop(dev_stack)
    owner = console()
    await owner.sign_in(bearer(shop))
    page = await owner.http.get("/console/webhook")
    assert page.status_code == 200 and 'id="clear-webhook"' not in page.text
    inside = await owner.post("/console/webhook", "/console/webhook", {"url": "http://169.254.169.254/latest"})
    assert inside.status_code == 422
    for url in ("ftp://hooks.example.com/x", "https://hooks.example.com/\x00", "not a url"):
        assert (await owner.post("/console/webhook", "/console/webhook", {"url": url})).status_code == 422, url
    async with dev_stack.sessionmaker() as db:
        assert (await db.get(Merchant, shop.merchant_id)).webhook_url is None  # type: ignore[union-attr]

    made = await owner.post("/console/webhook", "/console/webhook", {"url": "https://hooks.example.com/miaofa"})
    assert made.status_code == 200
    [secret] = re.findall(r'<code id="new-secret">([^<]+)</code>', made.text)
    assert secret.startswith("whsec_")
    again = await owner.http.get("/console/webhook")
    assert "https://hooks.example.com/miaofa" in again.text and secret not in again.text
    api = (await dev_stack.http.get("/merchant/webhook", headers=shop.owner)).json()
    assert api == {"url": "https://hooks.example.com/miaofa", "secret_set": True}
    async with dev_stack.sessionmaker() as db:
        merchant = await db.get(Merchant, shop.merchant_id)
        assert merchant is not None and dev_stack.vault.decrypt(merchant.webhook_secret) == secret  # type: ignore[arg-type]

    cleared = await owner.post("/console/webhook", "/console/webhook/clear", {})
    assert (cleared.status_code, cleared.headers["location"]) == (303, "/console/webhook?done=cleared")
    assert (await dev_stack.http.get("/merchant/webhook", headers=shop.owner)).json() == {
        "url": None,
        "secret_set": False,
    }


async def test_a_direct_shop_saves_checks_and_removes_its_gateway_account_from_the_console(
    dev_stack: Stack, console
) -> None:
    platform_shop = await open_shop(dev_stack)
    plain = console()
    await plain.sign_in(bearer(platform_shop))
    told = await plain.http.get("/console/gateways")
    assert told.status_code == 200 and 'id="not-direct"' in told.text

    shop, account = await direct_shop(dev_stack), await sim_account(dev_stack)
    owner = console()
    await owner.sign_in(bearer(shop))
    assert "No gateway account yet" in (await owner.http.get("/console/gateways")).text
    wrong = await owner.post(
        "/console/gateways", "/console/gateways/simulator", {"merchant_id": account.merchant_id, "secret": "w" * 24}
    )
    assert wrong.status_code == 422  # the simulator refused the harmless call: nothing saved
    nope = await owner.http.post("/console/gateways/nope", data={"csrf": owner.token("console-gateway")})
    assert nope.status_code == 404
    nul = await owner.post(
        "/console/gateways", "/console/gateways/simulator", {"merchant_id": "a\x00", "secret": "s" * 20}
    )
    assert nul.status_code == 422
    async with dev_stack.sessionmaker() as db:
        count = select(func.count()).select_from(MerchantGatewayCredential)
        assert await db.scalar(count.where(MerchantGatewayCredential.merchant_id == shop.merchant_id)) == 0

    saved = await owner.post("/console/gateways", "/console/gateways/simulator", account.fields)
    assert (saved.status_code, saved.headers["location"]) == (303, "/console/gateways?done=saved&gateway=simulator")
    listed = await owner.http.get(saved.headers["location"])
    assert 'data-gateway="simulator"' in listed.text and "simulator is saved and checked." in listed.text
    assert account.secret not in listed.text and account.secret[-4:] in listed.text
    assert f"/payments/simulator/notify/m/{shop.merchant_id}" in listed.text
    api = (await dev_stack.http.get("/merchant/gateways", headers=shop.owner)).json()["gateways"]
    assert [row["gateway"] for row in api] == ["simulator"]

    removed = await owner.post("/console/gateways", "/console/gateways/simulator/remove", {})
    assert (removed.status_code, removed.headers["location"]) == (
        303,
        "/console/gateways?done=removed&gateway=simulator",
    )
    assert (await dev_stack.http.get("/merchant/gateways", headers=shop.owner)).json() == {"gateways": []}
    again = await owner.http.post(
        "/console/gateways/simulator/remove", data={"csrf": owner.token("console-gateway-remove")}
    )
    assert again.status_code == 404
