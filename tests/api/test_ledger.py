"""The merchants' money in the ledger: sales, holds, refunds, the database's refusals, the check."""

import asyncio
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from miaofa import contract as c
from miaofa.db.ledger_tables import LedgerTransaction
from miaofa.db.models import Merchant
from miaofa.ledger import check, order_money
from miaofa.ledger.posting import credit, debit, post
from tests.api.test_merchants import Shop, _keys, shop_order, shop_product
from tests.helpers.payouts import reserve_for_withdrawal
from tests.helpers.stack import Stack, stages
from tests.helpers.waiting import eventually


async def money_shop(stack: Stack, fee_bps: int = 250, hold_seconds: int = 3600, settlement: str = "platform") -> Shop:
    slug = "m-" + uuid.uuid4().hex[:10]
    made = await stack.http.post(
        "/admin/merchants",
        headers=stack.admin,
        json={"slug": slug, "name": slug, "fee_bps": fee_bps, "hold_seconds": hold_seconds, "settlement": settlement},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return Shop(slug, body["merchant_id"], {"Authorization": f"Bearer {body['owner_token']}"})


async def sold(stack: Stack, shop: Shop, price_cents: int = 1000, n: int = 1) -> list[dict[str, Any]]:
    sku = "p-" + uuid.uuid4().hex[:8]
    made = await stack.http.post(
        "/merchant/products",
        headers=shop.owner,
        json={"sku": sku, "name": sku, "price_cents": price_cents, "currency": "CNY"},
    )
    assert made.status_code == 201, made.text
    await stack.http.post(
        f"/merchant/products/{sku}/keys",
        headers={**shop.owner, "Content-Type": "text/plain"},
        content="\n".join(_keys(n)),
    )
    orders = [await shop_order(stack, shop, sku) for _ in range(n)]
    await asyncio.gather(*(stack.pay(o) for o in orders))
    await asyncio.gather(*(stack.wait_status(o, "delivered") for o in orders))
    return orders


async def balance(stack: Stack, shop: Shop) -> dict[str, int]:
    answer = (await stack.http.get("/merchant/balance", headers=shop.owner)).json()
    (cny,) = answer["balances"]
    return {k.removesuffix("_cents"): v for k, v in cny.items() if k != "currency"}


async def platform(stack: Stack, kind: str) -> int:
    async with stack.sessionmaker() as session:
        found = await session.scalar(
            text("SELECT balance FROM ledger_accounts WHERE owner = 'platform' AND kind = :k AND currency = 'CNY'"),
            {"k": kind},
        )
    return found or 0


async def clean(stack: Stack) -> None:
    answer = (await stack.http.get("/admin/ledger/check", headers=stack.admin)).json()
    assert answer == {"ok": True, "violations": []}


async def release(stack: Stack, at: datetime) -> int:
    async with stack.sessionmaker.begin() as session:
        return await order_money.release_due(session, at)


async def refund(stack: Stack, order: dict[str, Any], shop: Shop) -> None:
    answer = await stack.http.post(
        f"/merchant/orders/{order['order_id']}/refund", headers=shop.owner, json={"reason": "asked"}
    )
    assert answer.status_code == 200, answer.text
    await stack.wait_status(order, "refunded")


async def test_a_sale_is_split_and_held_then_released_by_the_workflow(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack, fee_bps=250, hold_seconds=1)
    (order,) = await sold(dev_stack, shop, price_cents=1000)
    assert await balance(dev_stack, shop) == {"pending": 975, "available": 0, "reserved": 0, "debt": 0, "payable": 0}
    held = (await dev_stack.http.get("/merchant/balance", headers=shop.owner)).json()["pending"]
    assert [(h["order_id"], h["amount_cents"]) for h in held] == [(order["order_id"], 975)]
    assert "hold of 1 s" in held[0]["reason"]
    lines = (await dev_stack.http.get("/merchant/ledger", headers=shop.owner)).json()["entries"]
    assert [(e["kind"], e["account"], e["amount_cents"], e["balance_after_cents"]) for e in lines] == [
        ("sale", "pending", 975, 975)
    ]
    await clean(dev_stack)

    await asyncio.sleep(1.1)
    released = await dev_stack.env.client.execute_workflow(
        c.HOLD_RELEASE_WORKFLOW, id=f"hold-release-{uuid.uuid4().hex[:6]}", task_queue=dev_stack.task_queue
    )
    assert released >= 1
    assert await balance(dev_stack, shop) == {"pending": 0, "available": 975, "reserved": 0, "debt": 0, "payable": 0}
    assert (await dev_stack.http.get("/merchant/balance", headers=shop.owner)).json()["pending"] == []
    await clean(dev_stack)


async def test_a_refund_claws_back_from_pending_then_available_then_debt(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack, fee_bps=1000, hold_seconds=3600)
    first, second, third = await sold(dev_stack, shop, price_cents=2000, n=3)
    assert (await balance(dev_stack, shop))["pending"] == 3 * 1800

    await refund(dev_stack, first, shop)  # while held: from pending
    assert await balance(dev_stack, shop) == {"pending": 3600, "available": 0, "reserved": 0, "debt": 0, "payable": 0}
    await release(dev_stack, datetime.now(UTC) + timedelta(hours=2))  # other tests' holds may be due too
    await refund(dev_stack, second, shop)  # released: from available
    assert await balance(dev_stack, shop) == {"pending": 0, "available": 1800, "reserved": 0, "debt": 0, "payable": 0}
    async with dev_stack.sessionmaker.begin() as session:  # as a withdrawal does: available → reserved
        await reserve_for_withdrawal(session, shop.merchant_id, 1800, datetime.now(UTC))
    await refund(dev_stack, third, shop)  # nothing left to take: a debt
    assert await balance(dev_stack, shop) == {
        "pending": 0,
        "available": 0,
        "reserved": 1800,
        "debt": 1800,
        "payable": 0,
    }
    await clean(dev_stack)


async def test_a_fee_change_never_rewrites_a_posted_sale(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack, fee_bps=500, hold_seconds=0)
    fees_before = await platform(dev_stack, "fees")
    (order,) = await sold(dev_stack, shop, price_cents=1000)
    assert (await balance(dev_stack, shop))["available"] == 950  # no hold: available at once
    assert await platform(dev_stack, "fees") == fees_before + 50
    async with dev_stack.sessionmaker.begin() as session:
        await session.execute(update(Merchant).where(Merchant.id == shop.merchant_id).values(fee_bps=2000))
    await refund(dev_stack, order, shop)
    assert (await balance(dev_stack, shop))["available"] == 0
    assert await platform(dev_stack, "fees") == fees_before  # the 50 it took, not 200
    await clean(dev_stack)


async def test_a_direct_merchant_owes_its_fee_and_no_money_passes_the_platform(dev_stack: Stack) -> None:
    from tests.api.test_direct_settlement import sim_account

    shop = await money_shop(dev_stack, fee_bps=300, hold_seconds=0, settlement="direct")
    account = await sim_account(dev_stack)  # buyers pay the shop's own account
    saved = await dev_stack.http.put("/merchant/gateways/simulator", headers=shop.owner, json=account.fields)
    assert saved.status_code == 200, saved.text
    clearing_before = await platform(dev_stack, "gateway_clearing:simulator")
    await sold(dev_stack, shop, price_cents=1000)
    assert await balance(dev_stack, shop) == {"pending": 0, "available": 0, "reserved": 0, "debt": 0, "payable": 30}
    assert await platform(dev_stack, "gateway_clearing:simulator") == clearing_before
    await clean(dev_stack)


async def test_posting_twice_changes_nothing(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack, hold_seconds=3600)
    (order,) = await sold(dev_stack, shop)
    now = datetime.now(UTC)
    for _ in range(2):  # a retried activity, a replayed workflow
        async with dev_stack.sessionmaker.begin() as session:
            await order_money.post_sale(session, order["order_id"], now)
    later = now + timedelta(hours=2)
    assert await release(dev_stack, later) >= 1
    async with dev_stack.sessionmaker() as session:
        keys = list(
            await session.scalars(
                select(LedgerTransaction.idem_key).where(LedgerTransaction.order_id == order["order_id"])
            )
        )
    assert sorted(k.split(":")[0] for k in keys) == ["release", "sale"]
    assert await balance(dev_stack, shop) == {"pending": 0, "available": 975, "reserved": 0, "debt": 0, "payable": 0}
    await clean(dev_stack)


async def test_the_database_refuses_to_rewrite_or_unbalance_the_ledger(dev_stack: Stack) -> None:
    shop = await money_shop(dev_stack)
    await sold(dev_stack, shop)
    for statement in (
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_transactions SET memo = 'x'",
        "DELETE FROM ledger_transactions",
        "TRUNCATE ledger_entries CASCADE",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with dev_stack.sessionmaker.begin() as session:
                await session.execute(text(statement))
    with pytest.raises(DBAPIError, match="does not sum to zero"):
        async with dev_stack.sessionmaker.begin() as session:
            txn = await session.scalar(
                text(
                    "INSERT INTO ledger_transactions (idem_key, kind, memo, at) "
                    "VALUES ('forged:1', 'forged', '', now()) RETURNING id"
                )
            )
            account = await session.scalar(text("SELECT id FROM ledger_accounts LIMIT 1"))
            await session.execute(
                text(
                    "INSERT INTO ledger_entries (transaction_id, account_id, amount, currency, balance_after, "
                    "account_version) VALUES (:t, :a, 100, 'CNY', 0, 0)"
                ),
                {"t": txn, "a": account},
            )
    with pytest.raises(DBAPIError, match="ck_ledger_accounts_floor"):  # available below zero
        async with dev_stack.sessionmaker.begin() as session:
            await post(
                session,
                key=f"overdraw:{shop.merchant_id}",
                kind="payout_reserve",
                currency="CNY",
                lines=[debit(shop.merchant_id, "available", 1), credit(shop.merchant_id, "reserved", 1)],
                at=datetime.now(UTC),
            )
    await clean(dev_stack)


async def test_the_check_names_what_does_not_add_up(dev_stack: Stack) -> None:
    """The check is not a formality: a balance changed behind the ledger's back is found."""
    shop = await money_shop(dev_stack, hold_seconds=3600)
    await sold(dev_stack, shop)
    async with dev_stack.sessionmaker.begin() as session:
        await session.execute(
            text("UPDATE ledger_accounts SET balance = balance + 7 WHERE owner = :m AND kind = 'pending'"),
            {"m": shop.merchant_id},
        )
    try:
        async with dev_stack.sessionmaker() as session:
            found = {v.check for v in await check.run(session)}
        assert found == {"balance_differs_from_entries", "last_entry_disagrees", "pending_not_held"}
        answer = (await dev_stack.http.get("/admin/ledger/check", headers=dev_stack.admin)).json()
        assert answer["ok"] is False and len(answer["violations"]) == 3
    finally:
        async with dev_stack.sessionmaker.begin() as session:
            await session.execute(
                text("UPDATE ledger_accounts SET balance = balance - 7 WHERE owner = :m AND kind = 'pending'"),
                {"m": shop.merchant_id},
            )
    await clean(dev_stack)


async def test_three_shops_with_refunds_racing_deliveries_and_releases_add_up_to_the_cent(dev_stack: Stack) -> None:
    """200 orders across three shops, ordered and paid together (40 in flight at a time: the API,
    the worker and the test share one event loop on two cores); a third refunded the moment each is
    delivered, while other orders are still delivering and the hold release runs every 50 ms (a 1 s
    hold: a refund may find the shop's share still pending or already released to available)."""
    plans = ((250, 0, 67), (333, 1, 67), (0, 1, 66))  # fee, hold, orders
    shops = [await money_shop(dev_stack, fee_bps=fee, hold_seconds=hold) for fee, hold, _ in plans]
    price = 997
    skus = [await shop_product(dev_stack, shop, _keys(n)) for shop, (_, _, n) in zip(shops, plans, strict=True)]
    for shop, sku in zip(shops, skus, strict=True):
        edited = await dev_stack.http.patch(
            f"/merchant/products/{sku}", headers=shop.owner, json={"price_cents": price}
        )
        assert edited.status_code == 200
    # (shop, sku, refunded?): every third order, spread over the three shops
    steps = [(shop, sku) for shop, sku, (_, _, n) in zip(shops, skus, plans, strict=True) for _ in range(n)]
    plan = [(shop, sku, i % 3 == 0) for i, (shop, sku) in enumerate(steps)]
    assert len(plan) == 200
    stop = asyncio.Event()
    in_flight = asyncio.Semaphore(40)

    async def releasing() -> None:
        while not stop.is_set():
            await release(dev_stack, datetime.now(UTC))
            await asyncio.sleep(0.05)

    async def refund_now(order: dict[str, Any], shop: Shop) -> None:
        """As a client would: a 503 or a timeout (the order's workflow busy) is asked again with the
        same Idempotency-Key, so it is the same refund."""
        headers = {**shop.owner, "Idempotency-Key": f"race-{order['order_id']}"}
        answer: httpx.Response | None = None
        for _ in range(6):
            try:
                answer = await dev_stack.http.post(
                    f"/merchant/orders/{order['order_id']}/refund", headers=headers, json={"reason": "race"}
                )
            except httpx.TimeoutException:
                continue
            if answer.status_code != 503:
                break
        assert answer is not None and answer.status_code == 200, answer and answer.text
        await dev_stack.wait_status(order, "refunded", timeout=60)

    async def one(shop: Shop, sku: str, refunds: bool) -> tuple[Shop, bool]:
        async with in_flight:  # ordered and paid at once: the payment window is 30 s here
            order = await shop_order(dev_stack, shop, sku)
            await dev_stack.pay(order)
            await dev_stack.wait_status(order, "delivered", timeout=180)
            if refunds:
                await refund_now(order, shop)
            return shop, refunds

    releaser = asyncio.create_task(releasing())
    try:
        outcomes = await asyncio.gather(*(one(*step) for step in plan))
    finally:
        stop.set()
        await releaser
    await asyncio.sleep(1.1)
    await release(dev_stack, datetime.now(UTC))
    ids = [s.merchant_id for s in shops]
    async with dev_stack.sessionmaker() as session:
        counts = dict(
            (
                await session.execute(
                    select(LedgerTransaction.kind, func.count())
                    .where(LedgerTransaction.merchant_id.in_(ids))
                    .group_by(LedgerTransaction.kind)
                )
            ).all()
        )
        # What the platform took and what the gateway holds, from these shops' transactions alone.
        platform_moved = dict(
            (
                await session.execute(
                    text(
                        "SELECT a.kind, sum(e.amount) FROM ledger_entries e "
                        "JOIN ledger_accounts a ON a.id = e.account_id "
                        "JOIN ledger_transactions t ON t.id = e.transaction_id "
                        "WHERE a.owner = 'platform' AND t.merchant_id = ANY(:ids) GROUP BY a.kind"
                    ),
                    {"ids": ids},
                )
            ).all()
        )
    fees = 0
    for shop, (fee, _, _) in zip(shops, plans, strict=True):
        kept = sum(1 for s, refunds in outcomes if s is shop and not refunds)
        net = price - price * fee // 10_000
        fees += kept * (price * fee // 10_000)
        assert await balance(dev_stack, shop) == {
            "pending": 0,
            "available": kept * net,
            "reserved": 0,
            "debt": 0,
            "payable": 0,
        }
    refunded = sum(1 for _, refunds in outcomes if refunds)
    assert counts["sale"] == 200 and counts["refund"] == refunded == 67
    assert counts["release"] <= 67 + 66  # at most one per sale of the two shops with a hold
    assert platform_moved == {"gateway_clearing:simulator": (200 - refunded) * price, "fees": -fees}
    await clean(dev_stack)


async def test_a_payment_refunded_without_a_sale_leaves_the_shop_untouched(dev_stack: Stack) -> None:
    """A paid order that never became a sale (cancelled, its only key sold to another buyer, then
    paid all the same) is refunded; its payment passes through the clearing account and back
    (unsold:, refund:), no shop account moves, and the clearing account is balanced for it."""
    shop = await money_shop(dev_stack, fee_bps=500, hold_seconds=0)
    sku = await shop_product(dev_stack, shop, _keys(1))  # 500 a card
    await dev_stack.control(close_fail=True)  # the gateway keeps the payment open after the cancel
    late = await shop_order(dev_stack, shop, sku)
    cancelled = await dev_stack.http.post(
        f"/merchant/orders/{late['order_id']}/cancel", headers=shop.owner, json={"reason": "buyer asked"}
    )
    assert cancelled.status_code == 200, cancelled.text
    await dev_stack.control(close_fail=False)

    async def rival_order() -> dict[str, Any] | None:  # once the cancel has given the key back
        await dev_stack.refresh_stock()
        answer = await dev_stack.order(sku, merchant=shop.slug, email="rival@example.com")
        return answer.json() if answer.status_code == 201 else None

    rival = await eventually(rival_order, message="another buyer orders the released key")
    await dev_stack.pay(rival)
    await dev_stack.wait_status(rival, "delivered")
    assert (await dev_stack.pay(late)).status_code == 200
    view = await dev_stack.wait_status(late, "refunded", timeout=60)
    assert "paid_after_expiry" in stages(view) and "delivered" not in stages(view)

    async with dev_stack.sessionmaker() as session:
        moved = (
            await session.execute(
                text(
                    "SELECT t.idem_key, a.owner, a.kind, e.amount FROM ledger_entries e "
                    "JOIN ledger_accounts a ON a.id = e.account_id "
                    "JOIN ledger_transactions t ON t.id = e.transaction_id "
                    "WHERE t.order_id = :o ORDER BY e.id"
                ),
                {"o": late["order_id"]},
            )
        ).all()
    o = late["order_id"]
    assert [tuple(row) for row in moved] == [
        (f"unsold:{o}", "platform", "gateway_clearing:simulator", 500),
        (f"unsold:{o}", "platform", "world", -500),
        (f"refund:{o}", "platform", "world", 500),
        (f"refund:{o}", "platform", "gateway_clearing:simulator", -500),
    ]
    # The shop has the rival's sale and nothing else; its ledger never names the late order.
    assert await balance(dev_stack, shop) == {"pending": 0, "available": 475, "reserved": 0, "debt": 0, "payable": 0}
    lines = (await dev_stack.http.get("/merchant/ledger", headers=shop.owner)).json()["entries"]
    assert [(e["kind"], e["order_id"]) for e in lines] == [("sale", rival["order_id"])]
    await clean(dev_stack)


async def test_the_ledger_check_cli_exits_0_when_clean_and_1_naming_each_violation(dev_stack: Stack, tmp_path) -> None:
    from tests.cli.test_support_cli import cli, cli_env

    shop = await money_shop(dev_stack, hold_seconds=0)
    await sold(dev_stack, shop)
    ok = await asyncio.to_thread(cli, dev_stack, tmp_path, "ledger", "check")
    assert (ok.returncode, ok.stdout) == (0, ""), ok.stderr
    assert re.fullmatch(r"The ledger adds up \([0-9.]+ s\)\.\n", ok.stderr)

    # A balance changed behind the ledger's back (accounts are the one table that allows it).
    plant = "UPDATE ledger_accounts SET balance = balance + :d WHERE owner = :m AND kind = 'available'"
    async with dev_stack.sessionmaker.begin() as session:
        await session.execute(text(plant), {"d": 7, "m": shop.merchant_id})
        account = await session.scalar(
            text("SELECT id FROM ledger_accounts WHERE owner = :m AND kind = 'available'"), {"m": shop.merchant_id}
        )
    try:
        bad = await asyncio.to_thread(cli, dev_stack, tmp_path, "ledger", "check")
    finally:
        async with dev_stack.sessionmaker.begin() as session:
            await session.execute(text(plant), {"d": -7, "m": shop.merchant_id})
    assert bad.returncode == 1
    assert re.fullmatch(r"The ledger does not add up: 2 violations \([0-9.]+ s\)\.\n", bad.stderr), bad.stderr
    assert bad.stdout.splitlines() == [
        f"balance_differs_from_entries\taccount {account} says 982, its entries sum to 975",
        f"last_entry_disagrees\taccount {account} says 982, its last entry 975",
    ]
    env = {**cli_env(dev_stack, tmp_path), "MIAOFA_DATABASE_URL": "postgresql://miaofa@127.0.0.1:9/miaofa"}
    away = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "miaofa.cli", "ledger", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert away.returncode == 1 and away.stderr.startswith("Cannot reach the database"), away.stderr
    assert len(away.stderr.strip().splitlines()) == 1
    await clean(dev_stack)


async def test_a_late_delivery_coupon_is_paid_by_the_platform_not_the_shop(dev_stack: Stack) -> None:
    from miaofa import coupons

    shop = await money_shop(dev_stack, fee_bps=1000, hold_seconds=0)
    (late,) = await sold(dev_stack, shop, price_cents=2000)
    async with dev_stack.sessionmaker.begin() as session:  # as the workflow does when the SLA passes
        coupon = await coupons.issue_for_late_delivery(session, late["order_id"], "sla_timer", datetime.now(UTC))
    sku = (await dev_stack.http.get("/merchant/products", headers=shop.owner)).json()["products"][0]["sku"]
    await dev_stack.http.post(
        f"/merchant/products/{sku}/keys", headers={**shop.owner, "Content-Type": "text/plain"}, content="MORE-1"
    )
    compensation_before = await platform(dev_stack, "compensation")
    order = await shop_order(dev_stack, shop, sku, coupon_code=coupon.code)
    assert order["amount_cents"] < 2000
    discount = 2000 - order["amount_cents"]
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    assert (await balance(dev_stack, shop))["available"] == 1800 + 1800  # full price less the fee, twice
    assert await platform(dev_stack, "compensation") == compensation_before + discount
    await clean(dev_stack)


async def test_the_admin_api_changes_a_shops_terms_for_later_sales_only(dev_stack: Stack) -> None:
    """POST /admin/merchants/{slug}/terms (what `miaofa bench burst --shop-fee-bps` uses): a later sale
    pays the new fee and is held the new hold; bad terms change nothing."""
    shop = await money_shop(dev_stack, fee_bps=0, hold_seconds=0)
    await sold(dev_stack, shop, price_cents=1000)
    path = f"/admin/merchants/{shop.slug}/terms"
    for bad in ({"fee_bps": 10001, "hold_seconds": 0}, {"fee_bps": "250", "hold_seconds": 0}, {"fee_bps": 1}):
        assert (await dev_stack.http.post(path, headers=dev_stack.admin, json=bad)).status_code == 422, bad
    assert (await dev_stack.http.post(path, json={"fee_bps": 1, "hold_seconds": 0})).status_code == 401
    missing = await dev_stack.http.post(
        "/admin/merchants/nobody-here/terms", headers=dev_stack.admin, json={"fee_bps": 1, "hold_seconds": 0}
    )
    assert missing.status_code == 404
    changed = await dev_stack.http.post(path, headers=dev_stack.admin, json={"fee_bps": 250, "hold_seconds": 86400})
    assert changed.status_code == 200 and (changed.json()["fee_bps"], changed.json()["hold_seconds"]) == (250, 86400)
    fees_before = await platform(dev_stack, "fees")
    await sold(dev_stack, shop, price_cents=1000)
    assert await balance(dev_stack, shop) == {"pending": 975, "available": 1000, "reserved": 0, "debt": 0, "payable": 0}
    assert await platform(dev_stack, "fees") == fees_before + 25
    await clean(dev_stack)
