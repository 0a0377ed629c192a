"""Many shops on one platform: accounts, staff tokens, the merchant API, and the walls between shops."""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from miaofa import contract as c
from miaofa.db.models import AuditLog, CardKey, KeyFlag, Order
from tests.helpers.stack import Stack


@dataclass
class Shop:
    slug: str
    merchant_id: str
    owner: dict[str, str]  # the owner's Authorization header


async def open_shop(stack: Stack, name: str = "Tea House") -> Shop:
    slug = "s-" + uuid.uuid4().hex[:10]
    made = await stack.http.post("/admin/merchants", headers=stack.admin, json={"slug": slug, "name": name})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["owner_token"].startswith("mfm_")
    return Shop(slug, body["merchant_id"], {"Authorization": f"Bearer {body['owner_token']}"})


async def shop_product(stack: Stack, shop: Shop, keys: list[str], sku: str | None = None) -> str:
    sku = sku or "p-" + uuid.uuid4().hex[:10]
    made = await stack.http.post(
        "/merchant/products",
        headers=shop.owner,
        json={"sku": sku, "name": f"Card {sku}", "price_cents": 500, "currency": "CNY"},
    )
    assert made.status_code == 201, made.text
    if keys:
        imported = await stack.http.post(
            f"/merchant/products/{sku}/keys",
            headers={**shop.owner, "Content-Type": "text/plain"},
            content="\n".join(keys),
        )
        assert imported.status_code == 200, imported.text
        assert imported.json() == {"imported": len(keys), "duplicates": 0}
    return sku


async def shop_order(stack: Stack, shop: Shop, sku: str, **extra: Any) -> dict[str, Any]:
    return await stack.ordered(sku, merchant=shop.slug, **extra)


def _keys(n: int) -> list[str]:
    return [f"GIFT-{uuid.uuid4().hex[:12]}" for _ in range(n)]


async def test_the_admin_opens_a_shop_and_its_owner_manages_staff(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    me = await dev_stack.http.get("/merchant/me", headers=shop.owner)
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "owner" and me.json()["merchant"]["slug"] == shop.slug
    assert me.json()["merchant"]["status"] == "active"

    taken = await dev_stack.http.post(
        "/admin/merchants", headers=dev_stack.admin, json={"slug": shop.slug, "name": "x"}
    )
    assert (taken.status_code, taken.json()["error"]) == (409, "slug_taken")
    for slug in ("A B", "admin", "x", "shop\x00", "商店"):
        bad = await dev_stack.http.post("/admin/merchants", headers=dev_stack.admin, json={"slug": slug, "name": "x"})
        assert bad.status_code == 422, (slug, bad.text)
    as_shop = await dev_stack.http.post("/admin/merchants", headers=shop.owner, json={"slug": "s-zz", "name": "x"})
    assert as_shop.status_code == 401  # a merchant's token is not the platform's

    added = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "ann"})
    assert added.status_code == 201, added.text
    staff = {"Authorization": f"Bearer {added.json()['token']}"}
    again = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "ann"})
    assert (again.status_code, again.json()["error"]) == (409, "token_name_taken")
    assert (await dev_stack.http.get("/merchant/me", headers=staff)).json()["role"] == "staff"
    for method, path, body in (("GET", "/merchant/tokens", None), ("POST", "/merchant/tokens", {"name": "bob"})):
        refused = await dev_stack.http.request(method, path, headers=staff, json=body)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), path
    listed = (await dev_stack.http.get("/merchant/tokens", headers=shop.owner)).json()["tokens"]
    assert [(t["name"], t["role"]) for t in listed] == [("ann", "staff"), ("owner", "owner")]  # by name
    owner = await dev_stack.http.delete("/merchant/tokens/owner", headers=shop.owner)
    assert (owner.status_code, owner.json()["error"]) == (409, "owner_token")
    assert (await dev_stack.http.delete("/merchant/tokens/ann", headers=shop.owner)).status_code == 200
    assert (await dev_stack.http.get("/merchant/me", headers=staff)).status_code == 401
    gone = await dev_stack.http.delete("/merchant/tokens/ann", headers=shop.owner)
    assert (gone.status_code, gone.json()["error"]) == (404, "token_not_found")
    assert (await dev_stack.http.get("/merchant/me")).status_code == 401
    assert (await dev_stack.http.get("/merchant/me", headers=dev_stack.admin)).status_code == 401

    async with dev_stack.sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditLog.action).where(AuditLog.merchant_id == shop.merchant_id).order_by(AuditLog.id)
            )
        )
    assert actions == ["merchant.create", "token.add", "token.revoke"]


async def test_one_shop_can_neither_see_nor_touch_another(dev_stack: Stack) -> None:
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    sku = await shop_product(dev_stack, a, _keys(2))
    same_sku = await shop_product(dev_stack, b, _keys(1), sku=sku)  # a SKU is unique per shop only
    assert same_sku == sku
    order = await shop_order(dev_stack, a, sku)
    oid = order["order_id"]
    before = (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=a.owner)).json()
    assert before == {"available": 1, "reserved": 1, "sold": 0, "refunded": 0}

    other = await dev_stack.http.get("/merchant/orders", headers=b.owner)
    assert other.json() == {"orders": []}
    only_a = await shop_product(dev_stack, a, _keys(1))  # a SKU B does not have
    for method, path, kwargs in (
        ("GET", f"/merchant/products/{only_a}/stock", {}),
        ("PATCH", f"/merchant/products/{only_a}", {"json": {"price_cents": 1}}),
        ("POST", f"/merchant/products/{only_a}/keys", {"content": "B-KEY", "headers": {"Content-Type": "text/plain"}}),
    ):
        headers = {**b.owner, **kwargs.pop("headers", {})}
        answer = await dev_stack.http.request(method, path, headers=headers, **kwargs)
        assert (answer.status_code, answer.json()["error"]) == (404, "unknown_product"), path
        assert (await dev_stack.http.request(method, path, **kwargs)).status_code == 401, path
    stock_a = await dev_stack.http.get(f"/merchant/products/{only_a}/stock", headers=a.owner)
    assert stock_a.json() == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    listed_a = (await dev_stack.http.get("/merchant/products", headers=a.owner)).json()["products"]
    assert {p["sku"]: p["price_cents"] for p in listed_a}[only_a] == 500
    for method, path, kwargs in (
        ("GET", f"/merchant/orders/{oid}", {}),
        ("POST", f"/merchant/orders/{oid}/cancel", {"json": {"reason": "mine now"}}),
        ("POST", f"/merchant/orders/{oid}/refund", {"json": {"reason": "mine now"}}),
        ("POST", f"/merchant/orders/{oid}/resend", {}),
    ):
        answer = await dev_stack.http.request(method, path, headers=b.owner, **kwargs)
        assert (answer.status_code, answer.json()["error"]) == (404, "order_not_found"), path
    # B's own product of the same SKU is B's: editing it leaves A's alone.
    edited = await dev_stack.http.patch(f"/merchant/products/{sku}", headers=b.owner, json={"price_cents": 1})
    assert edited.status_code == 200 and edited.json()["price_cents"] == 1
    assert (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=b.owner)).json()["available"] == 1

    assert (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=a.owner)).json() == before
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"
    mine = (await dev_stack.http.get("/merchant/orders", headers=a.owner)).json()["orders"]
    assert [o["order_id"] for o in mine] == [oid]
    listed = (await dev_stack.http.get("/merchant/products", headers=a.owner)).json()["products"]
    assert sorted((p["sku"], p["price_cents"]) for p in listed) == sorted([(sku, 500), (only_a, 500)])
    shown = await dev_stack.http.get("/products", params={"merchant": a.slug})
    assert sorted(p["sku"] for p in shown.json()) == sorted([sku, only_a])
    support = await dev_stack.http.get("/support/orders", params={"merchant": a.slug}, headers=dev_stack.support)
    assert [o["order_id"] for o in support.json()] == [oid]
    unknown = await dev_stack.http.get("/products", params={"merchant": "s-nobody-here"})
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_merchant")


async def test_a_product_unknown_to_the_shop_is_not_sold_by_it(dev_stack: Stack) -> None:
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    sku = await shop_product(dev_stack, a, _keys(1))
    wrong = await dev_stack.order(sku, merchant=b.slug)
    assert (wrong.status_code, wrong.json()["error"]) == (404, "unknown_product")
    default = await dev_stack.order(sku)  # the default shop does not sell it either
    assert (default.status_code, default.json()["error"]) == (404, "unknown_product")
    nobody = await dev_stack.order(sku, merchant="s-nobody-here")
    assert (nobody.status_code, nobody.json()["error"]) == (404, "unknown_merchant")
    await dev_stack.http.patch(f"/merchant/products/{sku}", headers=a.owner, json={"active": False})
    inactive = await dev_stack.order(sku, merchant=a.slug)
    assert (inactive.status_code, inactive.json()["error"]) == (404, "unknown_product")


async def test_orders_of_two_shops_with_identical_keys_get_only_their_own(dev_stack: Stack) -> None:
    """The same key text in two shops (a reseller's double sale): each order is served from its own shop."""
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    keys = _keys(4)
    sku_a = await shop_product(dev_stack, a, keys, sku="card")
    sku_b = await shop_product(dev_stack, b, keys, sku="card")  # not told that A holds them

    orders = await asyncio.gather(
        *(
            shop_order(dev_stack, shop, sku, email=f"{shop.slug}-{i}@example.com")
            for i in range(4)
            for shop, sku in ((a, sku_a), (b, sku_b))
        )
    )
    await asyncio.gather(*(dev_stack.pay(order) for order in orders))
    views = await asyncio.gather(*(dev_stack.wait_status(order, "delivered") for order in orders))
    assert all(len(view["keys"]) == 1 for view in views)
    async with dev_stack.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Order.id, Order.merchant_id, CardKey.merchant_id)
                .join(CardKey, CardKey.order_id == Order.id)
                .where(Order.id.in_([o["order_id"] for o in orders]))
            )
        ).all()
    assert len(rows) == 8
    assert all(order_shop == key_shop for _, order_shop, key_shop in rows)
    assert sorted(shop for _, shop, _ in rows) == sorted([a.merchant_id] * 4 + [b.merchant_id] * 4)
    for shop, sku in ((a, sku_a), (b, sku_b)):
        stock = await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=shop.owner)
        assert stock.json() == {"available": 0, "reserved": 0, "sold": 4, "refunded": 0}


async def test_the_database_refuses_a_key_of_another_shop_on_an_order(dev_stack: Stack) -> None:
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    await shop_product(dev_stack, a, _keys(1))
    sku_b = await shop_product(dev_stack, b, _keys(1))
    order = await shop_order(dev_stack, b, sku_b)
    async with dev_stack.sessionmaker() as session:
        key_of_a = await session.scalar(select(CardKey.id).where(CardKey.merchant_id == a.merchant_id))
        with pytest.raises(IntegrityError, match="fk_card_keys_order_merchant"):
            await session.execute(
                text("UPDATE card_keys SET order_id = :order, status = 'reserved' WHERE id = :key"),
                {"order": order["order_id"], "key": key_of_a},
            )
            await session.flush()


async def test_a_key_another_shop_holds_is_flagged_to_the_platform_not_revealed(dev_stack: Stack) -> None:
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    shared = _keys(1)
    await shop_product(dev_stack, a, shared)
    sku_b = await shop_product(dev_stack, b, [])
    headers = {**b.owner, "Content-Type": "text/plain"}
    first = await dev_stack.http.post(
        f"/merchant/products/{sku_b}/keys", headers=headers, content=shared[0] + "\nNEW-1"
    )
    assert first.json() == {"imported": 2, "duplicates": 0}  # the same answer as for unseen keys
    again = await dev_stack.http.post(f"/merchant/products/{sku_b}/keys", headers=headers, content=shared[0])
    assert again.json() == {"imported": 0, "duplicates": 1}  # its own repeat is a duplicate

    flags = (await dev_stack.http.get("/admin/key-flags", headers=dev_stack.admin)).json()["flags"]
    mine = [f for f in flags if f["imported_by"] == b.slug]
    assert [(f["sku"], f["also_held_by"]) for f in mine] == [(sku_b, a.slug)]
    assert (await dev_stack.http.get("/admin/key-flags", headers=b.owner)).status_code == 401
    async with dev_stack.sessionmaker() as session:
        held_by = await session.scalar(select(KeyFlag.held_by).where(KeyFlag.merchant_id == b.merchant_id))
    assert held_by == a.merchant_id


async def test_a_suspended_shop_takes_no_orders_and_its_open_orders_finish(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack, "Paused Shop")
    sku = await shop_product(dev_stack, shop, _keys(3))
    order = await shop_order(dev_stack, shop, sku)

    reasonless = await dev_stack.http.post(f"/admin/merchants/{shop.slug}/suspend", headers=dev_stack.admin, json={})
    assert reasonless.status_code == 422
    suspended = await dev_stack.http.post(
        f"/admin/merchants/{shop.slug}/suspend", headers=dev_stack.admin, json={"reason": "ID documents expired"}
    )
    assert suspended.json()["status"] == "suspended", suspended.text
    refused = await dev_stack.order(sku, merchant=shop.slug)
    assert (refused.status_code, refused.json()["error"]) == (409, "merchant_suspended")
    assert "ID documents expired" not in refused.text  # the reason is the merchant's, not the buyers'

    me = (await dev_stack.http.get("/merchant/me", headers=shop.owner)).json()["merchant"]
    assert (me["status"], me["status_reason"]) == ("suspended", "ID documents expired")
    page = await dev_stack.http.get(f"/s/{shop.slug}/", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "This shop is not taking orders right now." in page.text
    assert "ID documents expired" not in page.text

    await dev_stack.pay(order)  # the order opened before the suspension is served
    assert len((await dev_stack.wait_status(order, "delivered"))["keys"]) == 1

    default = await dev_stack.http.post(
        "/admin/merchants/default/suspend", headers=dev_stack.admin, json={"reason": "no"}
    )
    assert (default.status_code, default.json()["error"]) == (409, "default_merchant")
    resumed = await dev_stack.http.post(f"/admin/merchants/{shop.slug}/resume", headers=dev_stack.admin)
    assert resumed.json()["status"] == "active"
    assert (await dev_stack.order(sku, merchant=shop.slug)).status_code == 201


async def test_a_merchant_refunds_its_own_order_through_the_workflow(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, _keys(1))
    order = await shop_order(dev_stack, shop, sku)
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    seen = (await dev_stack.http.get(f"/merchant/orders/{order['order_id']}", headers=shop.owner)).json()
    assert seen["merchant_id"] == shop.merchant_id
    assert len(seen["keys"]) == 1 and "GIFT-" not in str(seen["keys"])  # masked
    refunded = await dev_stack.http.post(
        f"/merchant/orders/{order['order_id']}/refund", headers=shop.owner, json={"reason": "buyer changed mind"}
    )
    assert refunded.status_code == 200, refunded.text
    view = await dev_stack.wait_status(order, "refunded")
    stage = next(s for s in view["timeline"] if s["stage"] == "refunded")
    assert stage["detail"]["actor"] == f"{shop.slug}/owner"
    described = await dev_stack.handle(order).describe()
    assert described.typed_search_attributes.get(c.SA_MERCHANT_ID) == shop.merchant_id


async def test_two_admins_opening_the_same_slug_at_once_make_one_shop(dev_stack: Stack) -> None:
    slug = "s-" + uuid.uuid4().hex[:10]
    answers = await asyncio.gather(
        *(
            dev_stack.http.post("/admin/merchants", headers=dev_stack.admin, json={"slug": slug, "name": f"N{i}"})
            for i in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * 5
    assert {a.json()["error"] for a in answers if a.status_code == 409} == {"slug_taken"}
    listed = (await dev_stack.http.get("/admin/merchants", headers=dev_stack.admin)).json()["merchants"]
    assert [m["slug"] for m in listed].count(slug) == 1


def test_shop_labels_stop_growing_past_the_limit() -> None:
    from api.http_metrics import TopShops

    top = TopShops(limit=2)
    assert [top.label(m) for m in ("m_a", "m_b", "m_c", "m_a", "m_d", "m_b")] == [
        "m_a",
        "m_b",
        "other",
        "m_a",
        "other",
        "m_b",
    ]


async def test_orders_are_counted_per_shop(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, _keys(2))
    line = f'miaofa_shop_orders_opened_total{{merchant="{shop.merchant_id}"}}'

    async def counted() -> float:
        text_ = (await dev_stack.http.get("/metrics")).text
        return next((float(row.split()[-1]) for row in text_.splitlines() if row.startswith(line)), 0.0)

    assert await counted() == 0.0
    await shop_order(dev_stack, shop, sku)
    await shop_order(dev_stack, shop, sku)
    assert (await dev_stack.order(sku, merchant=shop.slug)).status_code == 409  # sold out: not opened
    assert await counted() == 2.0


async def test_a_shop_tightens_the_risk_rules_for_itself_only(dev_stack: Stack) -> None:
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    sku_a = await shop_product(dev_stack, a, _keys(3), sku="card")
    sku_b = await shop_product(dev_stack, b, _keys(3), sku="card")
    staff_token = (await dev_stack.http.post("/merchant/tokens", headers=a.owner, json={"name": "sam"})).json()["token"]
    rules = {"blocked_emails": ["@Spam.Example", "x@y.example"], "quantity_per_order": 1}
    staff = await dev_stack.http.put("/merchant/risk", headers={"Authorization": f"Bearer {staff_token}"}, json=rules)
    assert staff.status_code == 403
    for bad in (
        {"blocked_emails": ["no-at-sign"]},
        {"blocked_emails": ["a\x00@b.example"]},
        {"blocked_networks": ["10.0.0.0/33"]},
        {"quantity_per_order": -1},
        {"quantity_per_order": "1"},
        {"blocked_emails": ["@x.example"] * 1001},
    ):
        refused = await dev_stack.http.put("/merchant/risk", headers=a.owner, json=bad)
        assert refused.status_code == 422, (bad, refused.text)
    assert (await dev_stack.http.get("/merchant/risk", headers=a.owner)).json()["rules"]["blocked_emails"] == []

    saved = await dev_stack.http.put("/merchant/risk", headers=a.owner, json=rules)
    assert saved.status_code == 200, saved.text
    assert saved.json()["rules"]["blocked_emails"] == ["@spam.example", "x@y.example"]

    blocked = await dev_stack.order(sku_a, merchant=a.slug, email="who@spam.example")
    assert (blocked.status_code, blocked.json()["error"]) == (403, "email_blocked")
    too_many = await dev_stack.order(sku_a, merchant=a.slug, quantity=2)
    assert (too_many.status_code, too_many.json()["error"]) == (403, "quantity_limit")
    assert (await dev_stack.order(sku_b, merchant=b.slug, email="who@spam.example", quantity=2)).status_code == 201
    assert (await dev_stack.order(sku_a, merchant=a.slug, email="fine@example.com")).status_code == 201
    assert (await dev_stack.order(sku_a, email="who@spam.example")).status_code == 404  # not the default's sku


def test_a_shop_may_only_tighten_the_platforms_caps() -> None:
    from miaofa.errors import InvalidInput
    from miaofa.risk import shop_rules
    from miaofa.risk.rules import Rules

    platform = Rules(quantity_per_order=3, open_per_email=0, blocked_emails=frozenset({"@bad.example"}))
    with pytest.raises(InvalidInput, match="the platform allows at most 3"):
        shop_rules.check({"quantity_per_order": 4}, platform)
    mine = shop_rules.check(
        {"quantity_per_order": 2, "open_orders_per_email": 5, "blocked_networks": ["10.1.2.3/8"]}, platform
    )
    assert mine == {
        "blocked_emails": [],
        "blocked_networks": ["10.0.0.0/8"],
        "quantity_per_order": 2,
        "open_orders_per_email": 5,
    }
    tight = shop_rules.tighten(platform, {**mine, "blocked_emails": ["@mine.example"]})
    assert (tight.quantity_per_order, tight.open_per_email) == (2, 5)
    assert tight.blocked_emails == frozenset({"@bad.example", "@mine.example"})
    assert tight.email_blocked("A@Mine.Example") and tight.network_blocked("10.9.9.9")
    # Stored before the platform lowered its cap: the lower of the two holds.
    assert shop_rules.tighten(Rules(quantity_per_order=1), {"quantity_per_order": 2}).quantity_per_order == 1
    assert shop_rules.tighten(platform, {}) is platform


async def test_the_merchant_api_refuses_bad_input_cleanly(dev_stack: Stack) -> None:
    shop = await open_shop(dev_stack)
    sku = await shop_product(dev_stack, shop, _keys(1))
    for token in ("mfm_a\tb", "mfm_ключ", "mfm_" + "a" * 5000, "Basic xyz"):
        raw = {"Authorization": ("Bearer " + token).encode("utf-8")}
        answer = await dev_stack.http.get("/merchant/me", headers=raw)  # type: ignore[arg-type]
        assert answer.status_code in (400, 401), (token[:20], answer.status_code, answer.text[:200])
    for path in (f"/merchant/products/{sku}%00/stock", "/merchant/products/%E5%95%86/stock", "/merchant/orders/abc%00"):
        answer = await dev_stack.http.get(path, headers=shop.owner)
        assert answer.status_code in (404, 422), (path, answer.status_code)
    for body in (
        {"name": "a\x00b"},
        {"description": "x" * 2001},
        {"price_cents": 0},
        {"price_cents": True},
        {"active": "yes"},
        {},
    ):
        answer = await dev_stack.http.patch(f"/merchant/products/{sku}", headers=shop.owner, json=body)
        assert answer.status_code == 422, (body, answer.text)
    huge = await dev_stack.http.post(
        f"/merchant/products/{sku}/keys",
        headers={**shop.owner, "Content-Type": "text/plain"},
        content=b"K" * (100 * 1024 * 1024),
    )
    assert huge.status_code == 413
    name = await dev_stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "a\x00"})
    assert name.status_code == 422
    form = await dev_stack.http.post(
        "/merchant/tokens",
        headers={**shop.owner, "Origin": "https://evil.example"},
        data={"name": "evil"},
    )
    assert form.status_code == 422  # a form post is not JSON: a cross-site form cannot add a token
    assert (await dev_stack.http.get(f"/merchant/products/{sku}/stock", headers=shop.owner)).json()["available"] == 1
    listed = (await dev_stack.http.get("/merchant/tokens", headers=shop.owner)).json()["tokens"]
    assert [t["name"] for t in listed] == ["owner"]
