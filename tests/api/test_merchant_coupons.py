"""A shop's own coupons (/merchant/coupons): the owner gives them out, a code is the shop's alone, two
requests for one code make one coupon, and a buyer spends it once, at that shop only."""

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from miaofa import contract as c
from miaofa import coupons
from miaofa.db.models import AuditLog, Coupon
from tests.api.test_merchants import open_shop, shop_order, shop_product
from tests.helpers.stack import Stack


def _code() -> str:
    return "TEA-" + uuid.uuid4().hex[:8].upper()


async def test_the_owner_gives_out_a_coupon_and_a_buyer_spends_it_once(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, [f"K-{uuid.uuid4().hex}" for _ in range(2)])
    code = _code()
    made = await dev_stack.http.post(
        "/merchant/coupons", headers=shop.owner, json={"code": code.lower(), "percent_off": 20, "valid_days": 7}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["code"], body["percent_off"], body["amount_off_cents"], body["reason"]) == (code, 20, None, "shop")

    order = await shop_order(dev_stack, shop, sku, coupon_code=code)
    assert order["amount_cents"] == 400  # 500 less 20 %
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, c.DELIVERED)
    again = await dev_stack.order(sku, merchant=shop.slug, coupon_code=code)
    assert (again.status_code, again.json()["error"]) == (422, "coupon_used")

    [listed] = (await dev_stack.http.get("/merchant/coupons", headers=shop.owner)).json()["coupons"]
    assert (listed["code"], listed["used_by_order_id"]) == (code, order["order_id"])
    async with dev_stack.sessionmaker() as db:
        audited = await db.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "coupon.create", AuditLog.target == code)
        )
    assert audited == 1


async def test_a_code_is_the_shops_own_and_another_shop_cannot_see_or_spend_it(dev_stack: Stack) -> None:
    shop_a, shop_b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    sku_b = await shop_product(dev_stack, shop_b, [f"K-{uuid.uuid4().hex}"])
    code = _code()
    made = await dev_stack.http.post(
        "/merchant/coupons",
        headers=shop_a.owner,
        json={"code": code, "amount_off_cents": 100, "currency": "cny"},
    )
    assert made.status_code == 201 and made.json()["currency"] == "CNY"
    assert (await dev_stack.http.get("/merchant/coupons", headers=shop_b.owner)).json() == {"coupons": []}
    elsewhere = await dev_stack.order(sku_b, merchant=shop_b.slug, coupon_code=code)
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (404, "coupon_not_found")
    # The same letters at B are B's own coupon, not a conflict with A's.
    own = await dev_stack.http.post("/merchant/coupons", headers=shop_b.owner, json={"code": code, "percent_off": 5})
    assert own.status_code == 201


async def test_two_requests_for_one_code_make_one_coupon(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    code = _code()
    answers = await asyncio.gather(
        *[
            dev_stack.http.post("/merchant/coupons", headers=shop.owner, json={"code": code, "percent_off": 10 + i})
            for i in range(6)
        ]
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], [a.text for a in answers]
    refused = next(answer for answer in answers if answer.status_code == 409)
    assert refused.json() == {"error": "coupon_code_taken", "detail": "this shop already has a coupon with that code"}
    async with dev_stack.sessionmaker() as db:
        rows = await db.scalars(select(Coupon).where(Coupon.merchant_id == shop.merchant_id, Coupon.code == code))
        [coupon] = rows.all()
    winner = next(answer for answer in answers if answer.status_code == 201).json()
    assert coupon.percent_off == winner["percent_off"]


async def test_staff_list_coupons_but_only_the_owner_gives_them_out_and_bad_input_changes_nothing(
    dev_stack: Stack,
) -> None:
    shop = await open_shop(dev_stack)
    added = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "kim"})
    staff = {"Authorization": f"Bearer {added.json()['token']}"}
    assert (await dev_stack.http.get("/merchant/coupons", headers=staff)).status_code == 200
    refused = await dev_stack.http.post("/merchant/coupons", headers=staff, json={"percent_off": 10})
    assert refused.status_code == 403
    assert (await dev_stack.http.post("/merchant/coupons", json={"percent_off": 10})).status_code == 401

    bad = [
        {"percent_off": 10, "amount_off_cents": 100, "currency": "CNY"},  # two kinds
        {},  # no kind
        {"amount_off_cents": 100},  # no currency
        {"percent_off": 10, "currency": "CNY"},  # a currency without an amount
        {"percent_off": 0},
        {"percent_off": 101},
        {"percent_off": "10"},  # a string is not a number here
        {"percent_off": 10, "code": "MF\u0000NUL1"},
        {"percent_off": 10, "code": "优惠券码一二三"},
        {"percent_off": 10, "code": "ab"},
        {"percent_off": 10, "valid_days": 0},
        {"percent_off": 10, "valid_days": 10_000},
        {"amount_off_cents": 10**13, "currency": "CNY"},
    ]
    for body in bad:
        answer = await dev_stack.http.post("/merchant/coupons", headers=shop.owner, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert set(answer.json()) == {"error", "detail"}
    form = await dev_stack.http.post(
        "/merchant/coupons",
        headers={**shop.owner, "Content-Type": "application/x-www-form-urlencoded"},
        content="percent_off=10",
    )
    assert form.status_code == 422
    assert (await dev_stack.http.get("/merchant/coupons", headers=shop.owner)).json() == {"coupons": []}


async def test_a_shop_sees_the_late_delivery_coupons_its_buyers_got(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, [f"K-{uuid.uuid4().hex}"])
    order = await shop_order(dev_stack, shop, sku)
    async with dev_stack.sessionmaker.begin() as db:
        coupon = await coupons.issue_for_late_delivery(db, order["order_id"], "sla_timer", datetime.now(UTC))
    [listed] = (await dev_stack.http.get("/merchant/coupons", headers=shop.owner)).json()["coupons"]
    assert (listed["code"], listed["reason"], listed["issued_for_order_id"]) == (
        coupon.code,
        "sla_timer",
        order["order_id"],
    )
