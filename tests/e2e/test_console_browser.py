"""A merchant in a real browser (Debian's chromium, driven by Playwright): sign in to the console,
create a product, import 1,000 keys watching the progress bar, see a buyer's order and refund it,
a form without its CSRF token refused, sign out. Screenshots at phone and desktop width go to
docs/screenshots/console-*.png (withdrawals: console-withdrawals-*.png)."""

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from miaofa import contract as c
from tests.api.test_direct_settlement import direct_shop, sim_account
from tests.api.test_merchants import open_shop, shop_order
from tests.helpers.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="no chromium at /usr/bin/chromium (apt-get install chromium)",
)
async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
# Records each value the import's progress bar takes (its value attribute follows the property).
WATCH_BAR = """() => {
  window.barSeen = [];
  const bar = document.getElementById("import-bar");
  new MutationObserver(() => window.barSeen.push(Number(bar.value))).observe(bar, {attributes: true});
}"""


async def test_a_merchant_imports_keys_sees_an_order_and_refunds_it(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack, "Moon Cards")
    token = shop.owner["Authorization"].removeprefix("Bearer ")
    base = str(dev_stack.http.base_url).rstrip("/")
    sku = "moon-" + uuid.uuid4().hex[:6]
    keys = "\n".join(f"MOON-{i:04d}-{uuid.uuid4().hex[:10]}" for i in range(1000)) + "\n"
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect = async_api.expect
    problems: list[str] = []

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        phone = await browser.new_context(viewport=PHONE, locale="en-US")
        page = await phone.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)

        await page.goto(f"{base}/console/")
        await page.wait_for_url(f"{base}/console/sign-in")
        await page.screenshot(path=str(SHOTS / "console-sign-in-phone.png"), full_page=True)
        await page.locator("input[name=token]").fill(token)
        await page.locator("button[type=submit]").click()
        await page.wait_for_url(f"{base}/console/")
        await expect(page.locator(".who")).to_have_text(f"{shop.slug} / owner")

        await page.goto(f"{base}/console/products")
        form = page.locator("#create-product")
        await form.locator("input[name=sku]").fill(sku)
        await form.locator("input[name=name]").fill("Moon card 月卡")
        await form.locator("textarea[name=description]").fill("Thirty days of moonlight.")
        await form.locator("input[name=price_cents]").fill("2990")
        await form.locator("input[name=delivery_sla_seconds]").fill("120")
        await form.locator("button[type=submit]").click()
        await page.wait_for_url(f"{base}/console/products?created={sku}")
        row = page.locator(f'tr[data-sku="{sku}"]')
        await expect(row.locator("[data-available]")).to_have_text("0")

        await row.get_by_role("link", name="Keys").click()
        await page.wait_for_url(f"{base}/console/products/{sku}/keys")
        await page.evaluate(WATCH_BAR)
        await page.locator("#key-file").set_input_files(
            {"name": "keys.txt", "mimeType": "text/plain", "buffer": keys.encode()}
        )
        started = time.monotonic()
        await page.locator("#import button[type=submit]").click()
        await expect(page.locator("#import-status")).to_have_text("Done: imported 1000, duplicates 0.", timeout=30_000)
        print(f"1,000 keys imported in 5 chunks from the browser in {time.monotonic() - started:.2f} s")
        seen = await page.evaluate("window.barSeen")
        steps = [value for i, value in enumerate(seen) if i == 0 or seen[i - 1] != value]
        assert steps == [0, 20, 40, 60, 80, 100]  # one step per chunk of 200 lines
        await expect(page.locator('[data-count="available"]')).to_have_text("1000")
        await page.screenshot(path=str(SHOTS / "console-keys-phone.png"), full_page=True)
        await page.reload()
        await expect(page.locator('[data-count="available"]')).to_have_text("1000")
        assert "MOON-0000" not in await page.content()

        # A buyer orders from this shop and pays.
        await dev_stack.refresh_stock()
        order = await shop_order(dev_stack, shop, sku, email=f"moon-{uuid.uuid4().hex[:6]}@example.com")
        assert (await dev_stack.pay(order)).status_code == 200
        await dev_stack.wait_status(order, c.DELIVERED)

        await page.goto(f"{base}/console/orders")
        await page.locator(f'tr[data-order="{order["order_id"]}"] a').click()
        await page.wait_for_url(f"{base}/console/orders/{order['order_id']}")
        await expect(page.locator("#status")).to_have_text("Delivered")
        await expect(page.locator("#timeline")).to_contain_text("Keys delivered")
        await page.screenshot(path=str(SHOTS / "console-order-phone.png"), full_page=True)
        refund = page.locator("form#refund")
        await refund.locator("input[name=reason]").fill("The buyer asked")
        await refund.locator("button[type=submit]").click()
        await expect(page.locator("#notice")).to_have_text("Done: the order is now Refunded.")
        await expect(page.locator("#status")).to_have_text("Refunded")
        await dev_stack.wait_status(order, c.REFUNDED)

        await page.goto(f"{base}/console/")
        await expect(page.locator("#by-status")).to_contain_text("Refunded 1")
        await page.screenshot(path=str(SHOTS / "console-dashboard-phone.png"), full_page=True)
        for name, path in (("orders", "/console/orders"), ("products", "/console/products")):
            await page.goto(base + path)
            await page.screenshot(path=str(SHOTS / f"console-{name}-phone.png"), full_page=True)
        await page.goto(f"{base}/console/?lang=zh")
        await expect(page.locator("h1")).to_have_text("概览")
        await page.screenshot(path=str(SHOTS / "console-dashboard-phone-zh.png"), full_page=True)
        await page.goto(f"{base}/console/products?lang=en")

        # The same session at desktop width.
        desktop = await browser.new_context(viewport=DESKTOP, locale="en-US")
        await desktop.add_cookies(await phone.cookies())
        wide = await desktop.new_page()
        for name, path in (
            ("dashboard", "/console/"),
            ("products", "/console/products"),
            ("orders", "/console/orders"),
            ("order", f"/console/orders/{order['order_id']}"),
            ("keys", f"/console/products/{sku}/keys"),
            ("product", f"/console/products/{sku}"),
            ("staff", "/console/staff"),
        ):
            await wide.goto(base + path)
            await wide.screenshot(path=str(SHOTS / f"console-{name}-desktop.png"), full_page=True)
        await wide.goto(f"{base}/console/products?lang=zh")
        await wide.screenshot(path=str(SHOTS / "console-products-desktop-zh.png"), full_page=True)
        await desktop.close()

        # A form whose CSRF token is gone is refused with a page that says so.
        await page.goto(f"{base}/console/products")
        await page.evaluate("document.querySelector('#create-product input[name=csrf]').remove()")
        await form.locator("input[name=sku]").fill(sku + "-x")
        await form.locator("input[name=name]").fill("No token")
        await form.locator("input[name=price_cents]").fill("100")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("p.error")).to_contain_text("This form has expired or came from another site.")

        await page.goto(f"{base}/console/")
        await page.locator(".signout button").click()
        await page.wait_for_url(f"{base}/console/sign-in?out=1")
        await expect(page.locator("p.ok")).to_have_text("You are signed out.")
        await page.goto(f"{base}/console/orders")
        await page.wait_for_url(f"{base}/console/sign-in")
        await browser.close()

    # The refused form is the only failed request.
    assert problems == ["Failed to load resource: the server responded with a status of 403 (Forbidden)"]
    assert (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=shop.owner)).json() == {
        "available": 999,
        "reserved": 0,
        "sold": 0,
        "refunded": 1,
    }


async def test_the_money_page_and_the_admin_console_at_phone_and_desktop_width(dev_stack: Stack) -> None:
    """Screenshots of the Money page (a held sale, a released one, a refund) and the admin's merchants
    page (one shop suspended with a reason), at phone and desktop width, in both languages."""
    from tests.api.test_ledger import money_shop, sold
    from tests.helpers.stack import ADMIN_TOKEN

    shop = await money_shop(dev_stack, fee_bps=250, hold_seconds=30 * 86400)  # test_console_money.HOLD
    orders = await sold(dev_stack, shop, price_cents=2990, n=3)
    refunded = await dev_stack.http.post(
        f"/merchant/orders/{orders[2]['order_id']}/refund", headers=shop.owner, json={"reason": "asked"}
    )
    assert refunded.status_code in (200, 202), refunded.text
    await dev_stack.wait_status(orders[2], c.REFUNDED)
    closed = await open_shop(dev_stack, "Closed Cards 关门卡店")
    token = shop.owner["Authorization"].removeprefix("Bearer ")
    base = str(dev_stack.http.base_url).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect = async_api.expect
    problems: list[str] = []

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            context = await browser.new_context(viewport=viewport, locale="en-US")
            page = await context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

            await page.goto(f"{base}/console/sign-in")
            await page.locator("input[name=token]").fill(token)
            await page.locator("button[type=submit]").click()
            await page.wait_for_url(f"{base}/console/")
            await page.locator("#money-link").click()
            await page.wait_for_url(f"{base}/console/money")
            # two held sales of 2990 less the fee, 74 (2.5 % rounds down)
            await expect(page.locator('[data-kind="pending"]')).to_have_text("¥58.32")
            await expect(page.locator("#holds tbody tr")).to_have_count(2)
            await page.screenshot(path=str(SHOTS / f"console-money-{size}.png"), full_page=True)
            await page.goto(f"{base}/console/money?lang=zh")
            await expect(page.locator("h1")).to_have_text("资金")
            await page.screenshot(path=str(SHOTS / f"console-money-{size}-zh.png"), full_page=True)
            await page.goto(f"{base}/console/money?lang=en")

            admin = await context.new_page()
            await admin.goto(f"{base}/console/admin")
            await admin.wait_for_url(f"{base}/console/admin/sign-in")
            if size == "phone":
                await admin.screenshot(path=str(SHOTS / "console-admin-sign-in-phone.png"), full_page=True)
            await admin.locator("input[name=token]").fill(ADMIN_TOKEN)
            await admin.locator("button[type=submit]").click()
            await admin.wait_for_url(f"{base}/console/admin/")
            row = admin.locator(f'tr[data-slug="{closed.slug}"]')
            if size == "phone":
                await row.locator("input[name=reason]").fill("Chargebacks under review")
                await row.locator("form.suspend button").click()
                await expect(admin.locator("#notice")).to_contain_text(f"{closed.slug} is suspended")
            await expect(row.locator(".reason")).to_have_text("Chargebacks under review")
            if size == "desktop":  # the fee and hold form, opened
                await admin.locator(f'tr[data-slug="{shop.slug}"] details.terms summary').click()
            await admin.screenshot(path=str(SHOTS / f"console-admin-merchants-{size}.png"), full_page=True)
            if size == "desktop":
                for name in ("key-flags", "ledger-check"):
                    await admin.goto(f"{base}/console/admin/{name}")
                    await admin.screenshot(path=str(SHOTS / f"console-admin-{name}-desktop.png"), full_page=True)
                await expect(admin.locator("#check-result")).to_have_attribute("data-ok", "true")
            await context.close()
        await browser.close()
    assert problems == []


async def test_an_owner_sets_up_coupons_a_webhook_and_a_gateway_account_on_a_phone(dev_stack: Stack) -> None:
    shop, account = await direct_shop(dev_stack), await sim_account(dev_stack)
    token = shop.owner["Authorization"].removeprefix("Bearer ")
    base = str(dev_stack.http.base_url).rstrip("/")
    code = "MOON-" + uuid.uuid4().hex[:6].upper()
    expect = async_api.expect
    problems: list[str] = []

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        phone = await browser.new_context(viewport=PHONE, locale="en-US")
        page = await phone.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        await page.goto(f"{base}/console/sign-in")
        await page.locator("input[name=token]").fill(token)
        await page.locator("button[type=submit]").click()
        await page.wait_for_url(f"{base}/console/")

        await page.goto(f"{base}/console/coupons")
        form = page.locator("#create-coupon")
        await form.locator("input[name=code]").fill(code.lower())
        await form.locator("input[name=off]").fill("15")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#made")).to_have_text(f"Coupon {code} is ready to give out.")
        await expect(page.locator(f'tr[data-code="{code}"]')).to_contain_text("15 %")
        await page.screenshot(path=str(SHOTS / "console-coupons-phone.png"), full_page=True)

        await page.goto(f"{base}/console/webhook")
        hook = page.locator("#set-webhook")
        await hook.locator("input[name=url]").fill("https://hooks.example.com/moon")
        await hook.locator("button[type=submit]").click()
        await expect(page.locator("#new-secret")).to_contain_text("whsec_")
        await expect(page.locator("#webhook-url")).to_have_text("https://hooks.example.com/moon")
        await page.screenshot(path=str(SHOTS / "console-webhook-phone.png"), full_page=True)

        await page.goto(f"{base}/console/gateways")
        await page.locator("#gateway-simulator summary").click()
        sim = page.locator("#gateway-simulator form")
        await sim.locator("input[name=merchant_id]").fill(account.merchant_id)
        await sim.locator("input[name=secret]").fill(account.secret)
        await sim.locator("button[type=submit]").click()
        await expect(page.locator("p.ok")).to_have_text("simulator is saved and checked.")
        await expect(page.locator('tr[data-gateway="simulator"]')).to_contain_text(account.secret[-4:])
        assert account.secret not in await page.content()
        await page.screenshot(path=str(SHOTS / "console-gateways-phone.png"), full_page=True)
        await page.goto(f"{base}/console/gateways?lang=zh")
        await expect(page.locator("h1")).to_have_text("收款渠道账户")
        await page.screenshot(path=str(SHOTS / "console-gateways-phone-zh.png"), full_page=True)

        desktop = await browser.new_context(viewport=DESKTOP, locale="en-US")
        await desktop.add_cookies(await phone.cookies())
        wide = await desktop.new_page()
        for name in ("coupons", "webhook", "gateways"):
            await wide.goto(f"{base}/console/{name}?lang=en")
            await wide.screenshot(path=str(SHOTS / f"console-{name}-desktop.png"), full_page=True)
        await browser.close()
    assert problems == []


async def test_a_merchant_withdraws_on_a_phone_and_finance_approves_a_large_one(payout_stack: Stack) -> None:
    """Withdrawals in a real browser: a destination saved (shown masked), a withdrawal requested and
    seen paid on its timeline (the page reloads itself until then), a refusal said in plain words, a
    large one approved from the admin console's queue. Screenshots: console-withdrawals-*.png."""
    from tests.helpers import payouts as p
    from tests.helpers.stack import ADMIN_TOKEN

    shop = await p.funded_shop(payout_stack, 300_000)  # ¥3000.00 available
    token = shop.owner["Authorization"].removeprefix("Bearer ")
    base = str(payout_stack.http.base_url).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect = async_api.expect
    problems: list[str] = []

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        phone = await browser.new_context(viewport=PHONE, locale="en-US")
        page = await phone.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        await page.goto(f"{base}/console/sign-in")
        await page.locator("input[name=token]").fill(token)
        await page.locator("button[type=submit]").click()
        await page.wait_for_url(f"{base}/console/")
        await page.locator('nav a[href="/console/withdrawals"]').click()
        await page.wait_for_url(f"{base}/console/withdrawals")

        add = page.locator("#add-destination")
        await add.locator("input[name=account]").fill(p.ACCOUNT)
        await add.locator("input[name=name]").fill(p.NAME)
        await add.locator("button[type=submit]").click()
        await expect(page.locator("#added")).to_contain_text("****0123 (张*) is saved")
        assert p.ACCOUNT not in await page.content()

        form = page.locator("#request-withdrawal")
        await form.locator("input[name=amount]").fill("120.50")
        await form.locator("button[type=submit]").click()
        await page.wait_for_url(re.compile(r".*/console/withdrawals/wd_[0-9a-f]{20}\?done=requested$"))
        await expect(page.locator("#status")).to_have_attribute("data-status", "paid", timeout=20_000)
        await expect(page.locator('#timeline li[data-stage="paid"] .words')).to_have_text("Paid: 120.00 CNY arrived.")
        paid_url = page.url.split("?")[0]
        await page.screenshot(path=str(SHOTS / "console-withdrawals-timeline-phone.png"), full_page=True)

        await page.goto(f"{base}/console/withdrawals")
        await form.locator("input[name=amount]").fill("2000")  # over the auto-approve limit: finance reviews it
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#status")).to_have_attribute("data-status", "in_review", timeout=20_000)
        large = page.url.split("?")[0].rsplit("/", 1)[1]

        await page.goto(f"{base}/console/withdrawals")
        await form.locator("input[name=amount]").fill("5000")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#error")).to_have_text("Not enough available money: ¥879.50 can be withdrawn now.")
        await page.screenshot(path=str(SHOTS / "console-withdrawals-refused-phone.png"))
        await page.goto(f"{base}/console/withdrawals")
        await expect(page.locator("#withdrawals tbody tr")).to_have_count(2)
        await page.screenshot(path=str(SHOTS / "console-withdrawals-phone.png"), full_page=True)
        await page.goto(f"{base}/console/withdrawals?lang=zh")
        await expect(page.locator("h1")).to_have_text("提现")
        await page.screenshot(path=str(SHOTS / "console-withdrawals-phone-zh.png"), full_page=True)
        await page.goto(f"{paid_url}?lang=zh")
        await page.screenshot(path=str(SHOTS / "console-withdrawals-timeline-phone-zh.png"), full_page=True)
        await page.goto(f"{base}/console/withdrawals?lang=en")

        desktop = await browser.new_context(viewport=DESKTOP, locale="en-US")
        await desktop.add_cookies(await phone.cookies())
        wide = await desktop.new_page()
        await wide.goto(f"{base}/console/withdrawals")
        await wide.screenshot(path=str(SHOTS / "console-withdrawals-desktop.png"), full_page=True)
        await wide.goto(paid_url)
        await wide.screenshot(path=str(SHOTS / "console-withdrawals-timeline-desktop.png"), full_page=True)

        for size, context in (("desktop", desktop), ("phone", phone)):
            admin = await context.new_page()
            admin.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            await admin.goto(f"{base}/console/admin/sign-in")
            await admin.locator("input[name=token]").fill(ADMIN_TOKEN)
            await admin.locator("button[type=submit]").click()
            await admin.wait_for_url(f"{base}/console/admin/")
            await admin.locator('nav a[href="/console/admin/withdrawals"]').click()
            row = admin.locator(f'tr[data-withdrawal="{large}"]')
            await expect(row).to_contain_text("¥2000.00")
            await expect(row).to_contain_text("0 of 1")
            await admin.screenshot(path=str(SHOTS / f"console-withdrawals-admin-{size}.png"), full_page=True)
        await row.locator("form.approve input[name=reason]").fill("Known shop, documents on file")
        await row.locator("form.approve button").click()
        await expect(admin.locator("#notice")).to_have_text(f"Your approval of {large} is recorded.")

        await page.goto(f"{base}/console/withdrawals/{large}")
        await expect(page.locator("#status")).to_have_attribute("data-status", "paid", timeout=20_000)
        await expect(page.locator('#timeline li[data-stage="review_approved"] .words')).to_have_text(
            "Approved by admin: Known shop, documents on file"
        )
        await page.screenshot(path=str(SHOTS / "console-withdrawals-reviewed-phone.png"), full_page=True)
        await browser.close()
    # The refused request is the only failed one.
    assert problems == ["Failed to load resource: the server responded with a status of 409 (Conflict)"]
    assert (await p.balance(payout_stack, shop))["available"] == 300_000 - 12_050 - 200_000
    await p.clean(payout_stack)


async def test_the_statements_page_at_phone_and_desktop_width(dev_stack: Stack) -> None:
    """Screenshots of the Statements page, reached from Money: this month (open: today's sales and a
    refund), and a closed day picked with the day field (stored, with its hash), in both languages."""
    from miaofa.ledger.posting import PLATFORM, credit, debit
    from tests.api.test_ledger import money_shop, sold
    from tests.api.test_statements import CLEARING, DAYS, book, noon

    shop = await money_shop(dev_stack, fee_bps=250, hold_seconds=30 * 86400)
    m = shop.merchant_id
    async with dev_stack.sessionmaker.begin() as session:  # a sale of days ago, released since
        await book(
            session, f"t-old:{m}", noon(DAYS[0]), [debit(PLATFORM, CLEARING, 5000), credit(m, "available", 5000)], m
        )
    orders = await sold(dev_stack, shop, price_cents=2990, n=3)
    refunded = await dev_stack.http.post(
        f"/merchant/orders/{orders[2]['order_id']}/refund", headers=shop.owner, json={"reason": "asked"}
    )
    assert refunded.status_code in (200, 202), refunded.text
    await dev_stack.wait_status(orders[2], c.REFUNDED)
    token = shop.owner["Authorization"].removeprefix("Bearer ")
    base = str(dev_stack.http.base_url).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect = async_api.expect
    problems: list[str] = []

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            context = await browser.new_context(viewport=viewport, locale="en-US")
            page = await context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            await page.goto(f"{base}/console/sign-in")
            await page.locator("input[name=token]").fill(token)
            await page.locator("button[type=submit]").click()
            await page.wait_for_url(f"{base}/console/")
            await page.goto(f"{base}/console/money")
            await page.locator("#statements-link").click()
            await page.wait_for_url(f"{base}/console/statements")
            await expect(page.locator("#statement")).to_have_attribute("data-closed", "no")
            # 5000 then, two held sales of 2990 less 74 each (the third clawed back)
            closing = page.locator('[data-currency="CNY"] tr[data-account="pending"] [data-closing]')
            await expect(closing).to_have_text("¥58.32")
            await page.screenshot(path=str(SHOTS / f"console-statements-month-{size}.png"), full_page=True)

            await page.locator("#pick-day input[name=period]").fill(DAYS[0].isoformat())
            await page.locator("#pick-day button[type=submit]").click()
            await page.wait_for_url(f"{base}/console/statements?period={DAYS[0].isoformat()}")
            await expect(page.locator("#statement")).to_have_attribute("data-closed", "yes")
            await expect(page.locator("#hash")).to_have_text(re.compile("^[0-9a-f]{64}$"))
            await page.screenshot(path=str(SHOTS / f"console-statements-day-{size}.png"), full_page=True)
            await page.goto(f"{base}/console/statements?lang=zh")
            await expect(page.locator("h1")).to_have_text("对账单")
            await page.screenshot(path=str(SHOTS / f"console-statements-month-{size}-zh.png"), full_page=True)
            await page.goto(f"{base}/console/statements?lang=en")
            await context.close()
        await browser.close()
    assert problems == []
