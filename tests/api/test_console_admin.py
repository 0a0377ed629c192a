"""The platform admin's console (/console/admin): its own session cookie, who may sign in (the admin
token or a named admin staff token; never a merchant's or support's), merchants created, suspended
and resumed from forms (audited with the admin as the actor), CSRF on every form, flagged keys, the
ledger check, and hostile input answered with a 4xx."""

import html
import logging
import re
import uuid

import httpx
import pytest
from sqlalchemy import select

from miaofa import staff
from miaofa.db.models import AuditLog, Merchant
from tests.api.test_merchants import open_shop, shop_product
from tests.helpers.console import Console, bearer, token_in
from tests.helpers.stack import ADMIN_TOKEN, SUPPORT_TOKEN, Stack

HOME = "/console/admin/"
SIGN_IN = "/console/admin/sign-in"


@pytest.fixture
async def console(dev_stack: Stack):
    browsers: list[Console] = []

    def make() -> Console:
        browsers.append(Console(dev_stack))
        return browsers[-1]

    yield make
    for browser in browsers:
        await browser.aclose()


async def sign_in(browser: Console, token: str) -> httpx.Response:
    return await browser.post(SIGN_IN, SIGN_IN, {"token": token})


async def admin(console) -> Console:
    browser = console()
    assert (await sign_in(browser, ADMIN_TOKEN)).status_code == 303
    return browser


async def create(browser: Console, **fields: str) -> httpx.Response:
    form = {"slug": "c-" + uuid.uuid4().hex[:10], "name": "Cloud 云", "settlement": "platform"}
    return await browser.post(
        HOME, "/console/admin/merchants", {"fee_bps": "250", "hold_seconds": "86400", **form, **fields}
    )


async def audited(stack: Stack, merchant_id: str) -> list[tuple[str, str]]:
    async with stack.sessionmaker() as db:
        rows = await db.execute(
            select(AuditLog.actor, AuditLog.action).where(AuditLog.merchant_id == merchant_id).order_by(AuditLog.id)
        )
        return [(actor, action) for actor, action in rows.all()]


async def test_no_session_wrong_tokens_and_the_cookie(
    dev_stack: Stack, console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = console()
    for path in (HOME, "/console/admin/key-flags", "/console/admin/ledger-check"):
        away = await stranger.http.get(path)
        assert (away.status_code, away.headers["location"]) == (303, SIGN_IN), path
    for path in ("/console/admin/merchants", "/console/admin/merchants/default/suspend"):
        away = await stranger.http.post(path, data={})
        assert (away.status_code, away.headers["location"]) == (303, SIGN_IN), path
    assert (await stranger.http.get("/console/admin")).headers["location"] == HOME
    assert "Platform admin sign-in" in (await stranger.http.get(SIGN_IN)).text

    shop = await open_shop(dev_stack)
    for token in ("adm_wrong", bearer(shop), SUPPORT_TOKEN, ADMIN_TOKEN + "x", "\x00", "令牌" * 60, "x" * 5000):
        refused = await sign_in(stranger, token)
        assert refused.status_code == 401, token[:20]
        assert "That token is not a platform admin token." in refused.text
        assert "mf_console_admin" not in refused.headers.get("set-cookie", "")
    # A merchant's console session opens no admin page.
    await stranger.sign_in(bearer(shop))
    assert (await stranger.http.get(HOME)).status_code == 303

    browser = console()
    signed = await sign_in(browser, ADMIN_TOKEN)
    assert (signed.status_code, signed.headers["location"]) == (303, HOME)
    [cookie] = [h for h in signed.headers.get_list("set-cookie") if h.startswith("mf_console_admin=")]
    value = cookie.split(";", 1)[0].removeprefix("mf_console_admin=")
    assert re.fullmatch(r"a1\.0\.[0-9]+\.[A-Za-z0-9_-]{43}", value) and ADMIN_TOKEN not in cookie
    attributes = sorted(part.strip() for part in cookie.split(";")[1:])
    assert attributes == ["HttpOnly", "Max-Age=14400", "Path=/console/admin", "SameSite=strict"]
    home = await browser.http.get(HOME)
    assert home.status_code == 200 and "Signed in as admin" in home.text and ADMIN_TOKEN not in home.text
    assert home.headers["cache-control"] == "no-store"
    # The admin cookie is no merchant session, and a tampered one is no session.
    assert (await browser.http.get("/console/")).status_code == 303
    async with httpx.AsyncClient(
        base_url=str(dev_stack.http.base_url), cookies={"mf_console_admin": value[:-2] + "AA"}
    ) as forged:
        assert (await forged.get(HOME)).status_code == 303

    out = await browser.post(HOME, "/console/admin/sign-out", {})
    assert (out.status_code, out.headers["location"]) == (303, f"{SIGN_IN}?out=1")
    assert (await browser.http.get(HOME)).status_code == 303
    served = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert ADMIN_TOKEN not in served and value not in served


async def test_a_named_admin_staff_token_signs_in_and_its_revocation_ends_the_session(
    dev_stack: Stack, console
) -> None:
    name = "ops-" + uuid.uuid4().hex[:6]
    async with dev_stack.sessionmaker.begin() as db:
        token = await staff.add(db, dev_stack.app.state.miaofa.vault, role="admin", name=name, created_by="test")
        helper = await staff.add(
            db, dev_stack.app.state.miaofa.vault, role="support", name="sup-" + name[4:], created_by="test"
        )
    browser = console()
    assert (await sign_in(browser, helper)).status_code == 401  # support is not admin
    assert (await sign_in(browser, token)).status_code == 303
    assert f"Signed in as {name}" in (await browser.http.get(HOME)).text
    made = await create(browser)
    assert made.status_code == 201
    slug = re.search(r'id="created"><p>Shop ([a-z0-9-]+) is open', made.text)
    assert slug is not None
    async with dev_stack.sessionmaker() as db:
        merchant_id = await db.scalar(select(Merchant.id).where(Merchant.slug == slug[1]))
    assert merchant_id is not None and (name, "merchant.create") in await audited(dev_stack, merchant_id)
    async with dev_stack.sessionmaker.begin() as db:
        await staff.revoke(db, name)
    assert (await browser.http.get(HOME)).status_code == 303


async def test_create_suspend_resume_are_audited_and_the_reason_is_shown(dev_stack: Stack, console) -> None:
    browser = await admin(console)
    slug = "c-" + uuid.uuid4().hex[:10]
    made = await create(browser, slug=slug, name="Cloud 云", fee_bps="275", hold_seconds="7200")
    assert made.status_code == 201
    owner_token = re.search(r'<code id="new-token">(mfm_[^<]+)</code>', made.text)
    assert owner_token is not None
    row = re.search(rf'<tr data-slug="{slug}">(.*?)</tr>', made.text, re.S)
    assert row is not None and "2.75 %" in row[1] and "2 h" in row[1] and "Active" in row[1]
    assert "Cloud 云" in row[1]
    # The token works once given to the owner, and is on no later page.
    owner = console()
    assert (await owner.sign_in(owner_token[1])).status_code == 303
    assert owner_token[1] not in (await browser.http.get(HOME)).text
    async with dev_stack.sessionmaker() as db:
        merchant = await db.scalar(select(Merchant).where(Merchant.slug == slug))
    assert merchant is not None and (merchant.fee_bps, merchant.hold_seconds, merchant.settlement) == (
        275,
        7200,
        "platform",
    )
    taken = await create(browser, slug=slug)
    assert taken.status_code == 409 and "is taken" in taken.text

    status_form = f"/console/admin/merchants/{slug}/suspend"
    assert (await browser.post(HOME, status_form, {"reason": ""})).status_code == 422
    assert (await browser.post(HOME, status_form, {"reason": "  "})).status_code == 422
    reason = "Chargebacks under review 退款审查中."
    suspended = await browser.post(HOME, status_form, {"reason": reason})
    assert (suspended.status_code, suspended.headers["location"]) == (303, f"{HOME}?done=suspended&slug={slug}")
    listing = (await browser.http.get(suspended.headers["location"])).text
    assert f"{slug} is suspended" in listing
    row = re.search(rf'<tr data-slug="{slug}" class="off">(.*?)</tr>', listing, re.S)
    assert row is not None and 'data-status="suspended"' in row[1] and html.escape(reason) in row[1]
    assert f"/console/admin/merchants/{slug}/resume" in row[1]
    # The merchant reads why, on its dashboard and its Money page; the storefront takes no orders.
    for path in ("/console/", "/console/money"):
        assert html.escape(reason) in (await owner.http.get(path)).text, path
    storefront = await dev_stack.http.get(f"/s/{slug}/", headers={"Accept-Language": "en"})
    assert "This shop is not taking orders right now." in storefront.text

    resumed = await browser.post(HOME, f"/console/admin/merchants/{slug}/resume", {})
    assert resumed.status_code == 303
    assert html.escape(reason) not in (await owner.http.get("/console/")).text
    assert await audited(dev_stack, merchant.id) == [
        ("admin", "merchant.create"),
        ("admin", "merchant.suspend"),
        ("admin", "merchant.resume"),
    ]
    status_token = browser.token("admin-merchant-status")  # the page offers no such form for `default`
    default = await browser.http.post(
        "/console/admin/merchants/default/suspend", data={"csrf": status_token, "reason": "no"}
    )
    assert default.status_code == 409 and "Back to the merchants" in default.text
    missing = await browser.http.post("/console/admin/merchants/nobody-here/resume", data={"csrf": status_token})
    assert missing.status_code == 404


async def test_csrf_is_required_on_every_admin_form(dev_stack: Stack, console) -> None:
    browser = await admin(console)
    shop = await open_shop(dev_stack)
    page = (await browser.http.get(HOME)).text
    fields = {"slug": "x-" + uuid.uuid4().hex[:8], "name": "x", "settlement": "platform", "fee_bps": "0"}
    fields["hold_seconds"] = "0"
    create_token = token_in(page, "/console/admin/merchants")
    suspend = f"/console/admin/merchants/{shop.slug}/suspend"
    for path, data, headers in (
        ("/console/admin/merchants", fields, {}),
        ("/console/admin/merchants", {**fields, "csrf": create_token}, {"Origin": "https://evil.example"}),
        ("/console/admin/merchants", {**fields, "csrf": create_token}, {"Sec-Fetch-Site": "cross-site"}),
        ("/console/admin/merchants", {**fields, "csrf": browser.token("console-product")}, {}),
        (suspend, {"reason": "forged"}, {}),
        (suspend, {"reason": "forged", "csrf": token_in(page, suspend)}, {"Origin": "https://evil.example"}),
        ("/console/admin/sign-out", {}, {}),
    ):
        answer = await browser.http.post(path, data=data, headers=headers)
        assert answer.status_code == 403, (path, headers)
        assert "This form has expired or came from another site." in answer.text
    async with dev_stack.sessionmaker() as db:
        assert await db.scalar(select(Merchant.id).where(Merchant.slug == fields["slug"])) is None
        assert await db.scalar(select(Merchant.status).where(Merchant.slug == shop.slug)) == "active"
    fresh = console()
    signin = (await fresh.http.get(SIGN_IN)).text
    forged = await fresh.http.post(
        SIGN_IN,
        data={"csrf": token_in(signin, SIGN_IN), "token": ADMIN_TOKEN},
        headers={"Origin": "https://evil.example"},
    )
    assert forged.status_code == 403 and "mf_console_admin" not in forged.headers.get("set-cookie", "")


async def test_flagged_keys_and_the_ledger_check_pages(dev_stack: Stack, console) -> None:
    shop_a, shop_b = await open_shop(dev_stack, "Flag A"), await open_shop(dev_stack, "Flag B")
    key = f"SAME-{uuid.uuid4().hex}"
    await shop_product(dev_stack, shop_a, [key])
    sku_b = await shop_product(dev_stack, shop_b, [key, f"OTHER-{uuid.uuid4().hex}"])
    browser = await admin(console)
    flags = (await browser.http.get("/console/admin/key-flags")).text
    flagged = (await dev_stack.http.get("/admin/key-flags", headers=dev_stack.admin)).json()["flags"]
    ours = [f for f in flagged if f["sku"] == sku_b]
    assert ours and ours[0]["imported_by"] == shop_b.slug and ours[0]["also_held_by"] == shop_a.slug
    row = re.search(rf'<tr data-flag="{ours[0]["flag_id"]}">(.*?)</tr>', flags, re.S)
    assert row is not None and shop_a.slug in row[1] and shop_b.slug in row[1] and sku_b in row[1]
    assert key not in flags  # the key itself is never on a page

    checked = (await dev_stack.http.get("/admin/ledger/check", headers=dev_stack.admin)).json()
    page = (await browser.http.get("/console/admin/ledger-check")).text
    if checked["ok"]:
        assert 'data-ok="true"' in page and "The ledger adds up" in page
    else:
        assert 'data-ok="false"' in page
        for violation in checked["violations"]:
            assert html.escape(violation["detail"]) in page
    assert "账本核对" in (await browser.http.get("/console/admin/ledger-check?lang=zh")).text


async def test_hostile_input_to_the_admin_console_is_a_4xx(dev_stack: Stack, console) -> None:
    browser = await admin(console)
    shop = await open_shop(dev_stack)
    for name, value in [
        ("slug", "a\x00b"),
        ("slug", "商店"),
        ("slug", "admin"),
        ("slug", "A"),
        ("name", "a\x00b"),
        ("name", "\u202eevil"),
        ("name", ""),
        ("name", "n" * 101),
        ("settlement", "both"),
        ("settlement", "\x00"),
        ("fee_bps", "１２"),
        ("fee_bps", "10001"),
        ("fee_bps", "-1"),
        ("hold_seconds", "1e3"),
        ("hold_seconds", str(90 * 86400 + 1)),
    ]:
        answer = await create(browser, **{name: value})
        assert answer.status_code == 422, (name, value, answer.status_code)
        assert "Please check the form" in answer.text
    assert (await create(browser, name="名字 " * 20)).status_code == 201  # non-ASCII is welcome
    assert (await create(browser, name="n" * 200_000)).status_code == 413
    for path in ("%00", "商家", "a" * 300, "A-B", "%E2%80%AEx"):
        for action in ("suspend", "resume"):
            answer = await browser.http.post(
                f"/console/admin/merchants/{path}/{action}",
                data={"csrf": browser.token("admin-merchant-status"), "reason": "r"},
            )
            assert answer.status_code == 404, (path, action, answer.status_code)
    suspend = f"/console/admin/merchants/{shop.slug}/suspend"
    for reason in ("\x00", "\u202e", "r" * 301):
        assert (await browser.post(HOME, suspend, {"reason": reason})).status_code == 422, reason
    as_file = await browser.http.post(
        suspend, data={"csrf": browser.token("admin-merchant-status")}, files={"reason": ("r.txt", b"x")}
    )
    assert as_file.status_code == 422
    for params in ({"done": "\x00", "slug": "\x00"}, {"done": "suspended", "slug": "<script>"}):
        answer = await browser.http.get(HOME, params=params)
        assert answer.status_code == 200 and "<script>" not in answer.text
    for method in ("PUT", "DELETE"):
        assert (await browser.http.request(method, "/console/admin/merchants")).status_code == 405


async def test_no_console_page_is_in_the_openapi_schema(dev_stack: Stack) -> None:
    paths = (await dev_stack.http.get("/openapi.json")).json()["paths"]
    assert [p for p in paths if p.startswith("/console")] == []
    assert "/admin/merchants" in paths and "/merchant/balance" in paths  # the JSON API is still there


async def test_a_new_fee_and_hold_apply_to_later_sales_only_and_are_audited(dev_stack: Stack, console) -> None:
    from tests.api.test_ledger import money_shop, sold

    shop = await money_shop(dev_stack, fee_bps=1000, hold_seconds=0)
    await sold(dev_stack, shop, price_cents=1000)  # 900 to the shop at 10 %
    browser = await admin(console)
    path = f"/console/admin/merchants/{shop.slug}/terms"
    for fee, hold in (("10001", "0"), ("-1", "0"), ("\x00", "0"), ("0", str(90 * 86400 + 1)), ("0", "1e3")):
        refused = await browser.post(HOME, path, {"fee_bps": fee, "hold_seconds": hold})
        assert refused.status_code == 422, (fee, hold)
    forged = await browser.http.post(path, data={"fee_bps": "0", "hold_seconds": "0"})
    assert forged.status_code == 403
    changed = await browser.post(HOME, path, {"fee_bps": "500", "hold_seconds": "0"})
    assert (changed.status_code, changed.headers["location"]) == (303, f"{HOME}?done=terms&slug={shop.slug}")
    listing = (await browser.http.get(changed.headers["location"])).text
    row = re.search(rf'<tr data-slug="{shop.slug}">(.*?)</tr>', listing, re.S)
    assert row is not None and "5.00 %" in row[1] and "fee and hold are changed" in listing
    await sold(dev_stack, shop, price_cents=1000)  # 950 at 5 %; the first sale keeps its 900
    [cny] = (await dev_stack.http.get("/merchant/balance", headers=shop.owner)).json()["balances"]
    assert cny["available_cents"] == 900 + 950
    assert (await audited(dev_stack, shop.merchant_id)).count(("admin", "merchant.terms")) == 1
    nobody = await browser.http.post(
        "/console/admin/merchants/nobody-here/terms",
        data={"csrf": browser.token("admin-merchant-terms"), "fee_bps": "1", "hold_seconds": "0"},
    )
    assert nobody.status_code == 404
