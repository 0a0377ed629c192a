"""The console's withdrawals: a destination saved and shown masked (owner only), a withdrawal requested
from the form and seen paid on its timeline, a double submit making one withdrawal, the API's
refusals said in plain words, hostile input and forged posts refused with nothing changed, another
shop's withdrawal a 404; and the admin console's review queue approving (two people above the second
threshold, the same person twice refused) or rejecting through the workflow's Updates."""

import asyncio
import html
import re
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from miaofa import audit, staff
from miaofa import contract as c
from miaofa.db.payout_tables import PayoutDestination, Withdrawal
from tests.api.test_console_admin import sign_in as admin_sign_in
from tests.api.test_merchants import Shop
from tests.helpers import payouts as p
from tests.helpers.console import Console, bearer, token_in
from tests.helpers.stack import ADMIN_TOKEN, Stack
from tests.helpers.waiting import eventually

PAGE = "/console/withdrawals"
QUEUE = "/console/admin/withdrawals"


@pytest.fixture
async def console(payout_stack: Stack):
    browsers: list[Console] = []

    def make(stack: Stack = payout_stack) -> Console:
        browsers.append(Console(stack))
        return browsers[-1]

    yield make
    for browser in browsers:
        await browser.aclose()


def hidden_fields(page: str, action: str) -> dict[str, str]:
    """The hidden inputs (csrf, idem …) of the form posting to `action`, as the browser would send them."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}".*?</form>', page, re.S)
    assert form is not None, f"no form posting to {action}"
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[0]))


async def signed_in(console, shop: Shop, stack: Stack | None = None) -> Console:
    browser = console(stack) if stack is not None else console()
    assert (await browser.sign_in(bearer(shop))).status_code == 303
    return browser


async def add_destination(browser: Console, account: str = p.ACCOUNT, name: str = p.NAME) -> httpx.Response:
    fields = {"rail": "simulator", "account": account, "name": name}
    return await browser.post(PAGE, "/console/payout-destinations", fields)


async def request(browser: Console, amount: str, dest: str, extra: dict[str, str] | None = None) -> httpx.Response:
    page = (await browser.http.get(PAGE)).text
    fields = hidden_fields(page, PAGE)
    return await browser.http.post(
        PAGE, data={**fields, "amount": amount, "currency": "CNY", "destination_id": dest, **(extra or {})}
    )


def said(answer: httpx.Response) -> str:
    found = re.search(r'<p class="error" role="alert"[^>]*>(.*?)</p>', answer.text, re.S)
    assert found is not None, answer.text[:2000]
    return html.unescape(found[1])


async def destination_ids(stack: Stack, shop: Shop) -> list[str]:
    async with stack.sessionmaker() as db:
        rows = await db.scalars(select(PayoutDestination.id).where(PayoutDestination.merchant_id == shop.merchant_id))
        return list(rows)


async def withdrawal_count(stack: Stack, shop: Shop) -> int:
    async with stack.sessionmaker() as db:
        count = await db.scalar(
            select(func.count()).select_from(Withdrawal).where(Withdrawal.merchant_id == shop.merchant_id)
        )
        return count or 0


async def test_a_withdrawal_from_the_console_is_paid_on_its_timeline_and_a_double_submit_makes_one(
    payout_stack: Stack, console
) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    owner = await signed_in(console, shop)
    empty = await owner.http.get(PAGE)
    assert empty.status_code == 200 and empty.headers["cache-control"] == "no-store"
    assert "Add a destination below before the first withdrawal." in empty.text
    assert 'href="/console/withdrawals"' in (await owner.http.get("/console/money")).text  # the money page links

    added = await add_destination(owner)
    assert added.status_code == 201, added.text
    assert "****0123 (张*) is saved" in html.unescape(added.text)
    assert p.ACCOUNT not in added.text and p.NAME not in added.text  # shown masked, never in clear
    [dest] = await destination_ids(payout_stack, shop)

    # The whole balance, submitted twice at once from one rendered form: one withdrawal, both answers on it.
    page = (await owner.http.get(PAGE)).text
    fields = hidden_fields(page, PAGE)
    assert set(fields) == {"csrf", "idem"} and len(fields["idem"]) >= 16
    assert hidden_fields((await owner.http.get(PAGE)).text, PAGE)["idem"] != fields["idem"]  # one per render
    body = {**fields, "amount": "50.00", "currency": "CNY", "destination_id": dest}
    first, again = await asyncio.gather(owner.http.post(PAGE, data=body), owner.http.post(PAGE, data=body))
    assert first.status_code == again.status_code == 303, (first.text[:500], again.text[:500])
    assert first.headers["location"] == again.headers["location"]
    wid = re.fullmatch(r"/console/withdrawals/(wd_[0-9a-f]{20})\?done=requested", first.headers["location"])
    assert wid is not None
    assert await withdrawal_count(payout_stack, shop) == 1
    late = await owner.http.post(PAGE, data=body)  # the same form posted again after Back
    assert late.headers["location"] == first.headers["location"]

    seen = await p.wait_status(payout_stack, shop, wid[1], c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "approved", "submitted", "paid"]
    shown = await owner.http.get(f"/console/withdrawals/{wid[1]}")
    assert shown.status_code == 200
    text = html.unescape(shown.text)
    assert 'data-status="paid"' in text and 'http-equiv="refresh"' not in text  # settled: no more reloading
    assert re.findall(r'<li data-stage="([a-z_]+)"', text) == p.stages(seen)
    assert "You asked for 50.00 CNY to ****0123 (张*); the fee is 0.50 CNY." in text
    assert "Paid: 49.50 CNY arrived." in text and p.ACCOUNT not in text
    zh = html.unescape((await owner.http.get(f"/console/withdrawals/{wid[1]}?lang=zh")).text)
    assert "已到账：49.50 CNY。" in zh and "时间线" in zh

    listed = html.unescape((await owner.http.get(PAGE + "?lang=en")).text)
    row = re.search(rf'<tr data-withdrawal="{wid[1]}">(.*?)</tr>', listed, re.S)
    assert row is not None and "¥50.00" in row[1] and "****0123 (张*)" in row[1] and 'data-status="paid"' in row[1]
    assert row[1].count(" UTC") == 2  # requested and paid times
    assert await p.balance(payout_stack, shop) == {"pending": 0, "available": 0, "reserved": 0, "debt": 0, "payable": 0}
    async with payout_stack.sessionmaker() as db:
        logged = await audit.entries(db, merchant_id=shop.merchant_id, action_prefix="withdrawal.")
    assert [(e.action, e.target) for e in logged] == [("withdrawal.request", wid[1])]
    await p.clean(payout_stack)


async def test_a_failure_shows_the_rails_reason_and_the_money_back(payout_stack: Stack, console) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    owner = await signed_in(console, shop)
    await payout_stack.control(payout="fail")
    answer = await request(owner, "10", dest)
    wid = answer.headers["location"].split("/")[-1].split("?")[0]
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_FAILED)
    text = html.unescape((await owner.http.get(f"/console/withdrawals/{wid}?lang=en")).text)
    why = re.search(r'<dd id="why">(.*?)</dd>', text, re.S)
    assert why is not None and "the name given does not match the account's holder" in why[1]
    assert "back in your balance" in why[1] and 'class="bad"' in text
    zh = html.unescape((await owner.http.get(f"/console/withdrawals/{wid}?lang=zh")).text)
    assert "转账失败：收款人姓名与账户持有人不符。款项已退回余额。" in zh and "失败，已退回" in zh
    assert (await p.balance(payout_stack, shop))["available"] == 5000
    await p.clean(payout_stack)


async def test_the_apis_refusals_are_said_in_plain_words_and_change_nothing(payout_stack: Stack, console) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    owner = await signed_in(console, shop)
    too_much = await request(owner, "60", dest)
    assert too_much.status_code == 409
    assert said(too_much) == "Not enough available money: ¥50.00 can be withdrawn now."
    assert 'value="60"' in too_much.text  # the form keeps what was typed
    small = await request(owner, "0.99", dest)
    assert (small.status_code, said(small)) == (422, "The smallest withdrawal is ¥1.00.")
    foreign = await request(owner, "10", "pd_" + "0" * 20)
    assert (foreign.status_code, said(foreign)) == (404, "Choose one of the shop's destinations.")
    zh = await owner.http.post(
        PAGE,
        data={
            **hidden_fields((await owner.http.get(PAGE)).text, PAGE),
            "amount": "60",
            "currency": "CNY",
            "destination_id": dest,
        },
        headers={"Accept-Language": "zh-CN"},
    )
    assert said(zh) == "可用余额不足：当前可提现 ¥50.00。"
    await p.fund(payout_stack, shop, 10, kind="debt")
    owed = await request(owner, "10", dest)
    assert owed.status_code == 409 and said(owed).startswith("The shop owes the platform ¥0.10")
    assert await withdrawal_count(payout_stack, shop) == 0
    assert (await p.balance(payout_stack, shop))["available"] == 5000


async def test_a_new_destination_cools_off_in_plain_words(dev_stack: Stack, console) -> None:
    shop = await p.funded_shop(dev_stack, 5000)  # dev_stack: the default cooling-off of a day
    owner = await signed_in(console, shop, dev_stack)
    added = await add_destination(owner)
    assert added.status_code == 201
    [dest] = await destination_ids(dev_stack, shop)
    listed = html.unescape(added.text)
    assert "it can be paid from" in listed and "usable from" in listed
    answer = await request(owner, "10", dest)
    assert answer.status_code == 409
    assert re.fullmatch(
        r"\*\*\*\*0123 \(张\*\) is a new destination: it can be paid from [0-9-]{10} [0-9:]{5} UTC\. "
        r"The wait protects the balance if a token is stolen\.",
        said(answer),
    )
    assert await withdrawal_count(dev_stack, shop) == 0
    await p.clean(dev_stack)


async def test_hostile_input_is_a_422_and_changes_nothing(payout_stack: Stack, console) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    owner = await signed_in(console, shop)
    for amount in ("\x00", "1\x000", "１２", "十", "-5", "1e3", "1.234", "0", "99999999999", "9" * 16, "9" * 40, ""):
        answer = await request(owner, amount, dest)
        assert answer.status_code == 422, (amount, answer.status_code)
        assert "\x00" not in answer.text
    for extra in (
        {"destination_id": "pd_\x00"},
        {"destination_id": "收款"},
        {"currency": "人民币"},
        {"currency": "C\x00Y"},
        {"idem": "\x00" * 20},
        {"idem": "短"},
    ):
        answer = await request(owner, "10", dest, extra)
        assert answer.status_code == 422, (extra, answer.status_code)
    for name, value in (
        ("rail", "paypal"),
        ("rail", "\x00"),
        ("account", "62\x0001234"),
        ("account", "\u202e1234567"),
        ("name", "张\x00"),
        ("account", "1" * 200),
    ):
        fields = {"rail": "simulator", "account": p.ACCOUNT, "name": p.NAME, name: value}
        answer = await owner.post(PAGE, "/console/payout-destinations", fields)
        assert answer.status_code == 422, (name, value, answer.status_code)
    assert await withdrawal_count(payout_stack, shop) == 0
    assert await destination_ids(payout_stack, shop) == [dest]
    assert (await p.balance(payout_stack, shop))["available"] == 5000


async def test_posts_without_their_token_or_from_another_site_are_refused(payout_stack: Stack, console) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    owner = await signed_in(console, shop)
    fields = hidden_fields((await owner.http.get(PAGE)).text, PAGE)
    body = {**fields, "amount": "10", "currency": "CNY", "destination_id": dest}
    forged = [
        (PAGE, {k: v for k, v in body.items() if k != "csrf"}, {}),
        (PAGE, {**body, "csrf": owner.token("console-destination")}, {}),  # another form's token
        (PAGE, body, {"Origin": "https://evil.example"}),
        (PAGE, body, {"Sec-Fetch-Site": "cross-site"}),
        ("/console/payout-destinations", {"account": "6222000011112222", "name": "Eve"}, {}),
        (
            "/console/payout-destinations",
            {"account": "6222000011112222", "name": "Eve", "csrf": owner.token("console-destination")},
            {"Origin": "https://evil.example"},
        ),
    ]
    for path, data, headers in forged:
        answer = await owner.http.post(path, data=data, headers=headers)
        assert answer.status_code == 403, (path, headers, answer.status_code)
    assert await withdrawal_count(payout_stack, shop) == 0
    assert await destination_ids(payout_stack, shop) == [dest]
    stranger = console()
    away = await stranger.http.post(PAGE, data=body)
    assert away.status_code in (303, 403)
    assert await withdrawal_count(payout_stack, shop) == 0


async def test_staff_see_the_destinations_and_may_withdraw_but_cannot_add_a_destination(
    payout_stack: Stack, console
) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    made = await payout_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "cashier"})
    assert made.status_code == 201, made.text
    clerk = console()
    assert (await clerk.sign_in(made.json()["token"])).status_code == 303
    page = html.unescape((await clerk.http.get(PAGE)).text)
    assert "****0123 (张*)" in page and 'action="/console/payout-destinations"' not in page
    assert "Only the shop's owner adds destinations." in page
    refused = await clerk.http.post(
        "/console/payout-destinations",
        data={
            "csrf": clerk.token("console-destination"),
            "rail": "simulator",
            "account": "6222000011112222",
            "name": "Eve",
        },
    )
    assert refused.status_code == 403
    assert await destination_ids(payout_stack, shop) == [dest]
    asked = await request(clerk, "10", dest)  # as in the API: staff may withdraw to the owner's destinations
    assert asked.status_code == 303
    wid = asked.headers["location"].split("/")[-1].split("?")[0]
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.clean(payout_stack)


async def test_another_shops_withdrawal_is_not_found(payout_stack: Stack, console) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    wid = await p.withdrawn(payout_stack, shop, 1000, await p.destination(payout_stack, shop))
    other = await p.funded_shop(payout_stack, 0)
    browser = await signed_in(console, other)
    for path in (
        f"/console/withdrawals/{wid}",
        "/console/withdrawals/wd_" + "0" * 20,
        "/console/withdrawals/%00",
        "/console/withdrawals/提现",
        "/console/withdrawals/" + "a" * 300,
    ):
        answer = await browser.http.get(path)
        assert answer.status_code == 404 and "Not found." in answer.text, (path, answer.status_code)
    assert wid not in (await browser.http.get(PAGE)).text
    [theirs] = await destination_ids(payout_stack, shop)
    forged = {"csrf": browser.token("console-withdrawal"), "idem": uuid.uuid4().hex}  # B has no form: no destination
    foreign = await browser.http.post(
        PAGE, data={**forged, "amount": "10", "currency": "CNY", "destination_id": theirs}
    )
    assert foreign.status_code == 404
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.clean(payout_stack)


# ---- the admin console's review queue -------------------------------------------------------------


async def _admin(console, token: str = ADMIN_TOKEN) -> Console:
    browser = console()
    assert (await admin_sign_in(browser, token)).status_code == 303
    return browser


async def _review(browser: Console, wid: str, action: str, reason: str, **headers: str) -> httpx.Response:
    page = (await browser.http.get(QUEUE)).text
    path = f"{QUEUE}/{wid}/{action}"
    # A decided withdrawal has left the queue: its form is the one of a page opened before.
    token = token_in(page, path) if path in page else browser.token("admin-withdrawal-review")
    return await browser.http.post(path, data={"csrf": token, "reason": reason}, headers=headers)


async def _in_review(stack: Stack, console, amount_yuan: str) -> tuple[Shop, str, Console]:
    shop = await p.funded_shop(stack, 3_000_000)
    dest = await p.destination(stack, shop)
    owner = await signed_in(console, shop)
    answer = await request(owner, amount_yuan, dest)
    assert answer.status_code == 303, answer.text[:1000]
    wid = answer.headers["location"].split("/")[-1].split("?")[0]
    await p.wait_status(stack, shop, wid, c.WITHDRAWAL_IN_REVIEW)
    return shop, wid, owner


async def test_the_admin_approves_from_the_console_and_the_withdrawal_is_paid(payout_stack: Stack, console) -> None:
    shop, wid, owner = await _in_review(payout_stack, console, "2000")  # over the auto-approve limit (1000.00)
    waiting = html.unescape((await owner.http.get(f"/console/withdrawals/{wid}")).text)
    assert "Waiting for review by platform finance." in waiting and 'http-equiv="refresh"' not in waiting
    assert (await owner.http.get(QUEUE)).status_code == 303  # a merchant's session does not open it

    finance = await _admin(console)
    queue = html.unescape((await finance.http.get(QUEUE)).text)
    row = re.search(rf'<tr data-withdrawal="{wid}">(.*?)</tr>', queue, re.S)
    assert row is not None and shop.slug in row[1] and "¥2000.00" in row[1] and "****0123 (张*)" in row[1]
    assert "0 of 1" in row[1]
    bare = await _review(finance, wid, "approve", "")
    assert bare.status_code == 422
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW
    forged = await _review(finance, wid, "approve", "forged", Origin="https://evil.example")
    assert forged.status_code == 403
    approved = await _review(finance, wid, "approve", "known shop")
    assert (approved.status_code, approved.headers["location"]) == (303, f"{QUEUE}?done=approve&id={wid}")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "in_review", "review_approved", "approved", "submitted", "paid"]
    assert seen["timeline"][2]["note"] == "Approved by admin: known shop"
    notice = html.unescape((await finance.http.get(f"{QUEUE}?done=approve&id={wid}")).text)
    assert f"Your approval of {wid} is recorded." in notice and f'data-withdrawal="{wid}"' not in notice
    again = await _review(finance, wid, "approve", "again")
    assert again.status_code == 409
    assert "no longer waiting for review" in html.unescape(again.text)
    async with payout_stack.sessionmaker() as db:
        logged = await audit.entries(db, merchant_id=shop.merchant_id, action_prefix="withdrawal.")
    assert [(e.actor, e.action) for e in reversed(logged)] == [
        (f"{shop.slug}/owner", "withdrawal.request"),
        ("admin", "withdrawal.approve"),
    ]
    assert (await p.balance(payout_stack, shop))["available"] == 2_800_000
    await p.clean(payout_stack)


async def test_two_people_approve_above_the_second_threshold_and_one_person_twice_is_refused(
    payout_stack: Stack, console
) -> None:
    shop, wid, _ = await _in_review(payout_stack, console, "20000")  # over the two-person limit (10000.00)
    async with payout_stack.sessionmaker.begin() as db:
        other_token = await staff.add(
            db, payout_stack.vault, role="admin", name=f"fin-{uuid.uuid4().hex[:6]}", created_by="test"
        )
    first, second = await _admin(console), await _admin(console, other_token)
    assert (await _review(first, wid, "approve", "documents checked")).status_code == 303
    twice = await _review(first, wid, "approve", "still fine")
    assert twice.status_code == 409
    assert "You have already approved this withdrawal." in html.unescape(twice.text)
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW

    async def one_approval_shown() -> bool:
        page = (await second.http.get(QUEUE)).text
        assert re.search(rf'<tr data-withdrawal="{wid}">.*?data-approvals="1"', page, re.S)
        return "1 of 2" in page and "Approved by admin: documents checked" in html.unescape(page)

    await eventually(one_approval_shown, 10, "the first approval on the queue")
    assert (await _review(second, wid, "approve", "second pair of eyes")).status_code == 303
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.clean(payout_stack)


async def test_the_admin_rejects_with_a_reason_and_the_money_returns(payout_stack: Stack, console) -> None:
    shop, wid, owner = await _in_review(payout_stack, console, "2000")
    finance = await _admin(console)
    rejected = await _review(finance, wid, "reject", "documents missing")
    assert rejected.status_code == 303
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_REJECTED)
    text = html.unescape((await owner.http.get(f"/console/withdrawals/{wid}")).text)
    why = re.search(r'<dd id="why">(.*?)</dd>', text, re.S)
    assert why is not None and "Rejected by platform finance: documents missing." in why[1]
    assert (await p.balance(payout_stack, shop))["available"] == 3_000_000
    for path in (f"{QUEUE}/wd_{'0' * 20}/approve", f"{QUEUE}/%00/reject", f"{QUEUE}/提现/approve"):
        answer = await finance.http.post(path, data={"csrf": finance.token("admin-withdrawal-review"), "reason": "x"})
        assert answer.status_code == 404, (path, answer.status_code)
    await p.clean(payout_stack)
