"""Payout operations: a suspended shop's withdrawals wait for a person and its destinations stay put;
the finance role reviews withdrawals and nothing else; every review is audited under its person's
name; the review SLA's note reaches the merchant's timeline."""

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text

from miaofa import audit, staff
from miaofa import contract as c
from miaofa.db.models import AuditLog, Merchant
from miaofa.merchants import accounts
from miaofa.payouts import withdrawals
from miaofa.temporal.payouts import start_payout
from tests.api.test_merchants import Shop
from tests.helpers import payouts as p
from tests.helpers.stack import Stack
from tests.helpers.waiting import eventually

# payout_stack: auto-approved up to 100000, two people above 1000000, a fee of 50.
SUSPENDED_NOTE = (
    "Waiting for review by platform finance: your shop is suspended ({reason}), so a person checks every "
    "withdrawal before it is sent."
)


async def _suspend(stack: Stack, shop: Shop, reason: str) -> None:
    answer = await stack.http.post(
        f"/admin/merchants/{shop.slug}/suspend", headers=stack.admin, json={"reason": reason}
    )
    assert answer.json()["status"] == "suspended", answer.text


async def _resume(stack: Stack, shop: Shop) -> None:
    answer = await stack.http.post(f"/admin/merchants/{shop.slug}/resume", headers=stack.admin)
    assert answer.json()["status"] == "active", answer.text


async def _staff(stack: Stack, role: str, prefix: str = "") -> tuple[str, dict[str, str]]:
    name = f"{prefix or role[:3]}-{uuid.uuid4().hex[:8]}"
    async with stack.sessionmaker.begin() as session:
        token = await staff.add(session, stack.vault, role=role, name=name, created_by="test")
    return name, {"Authorization": f"Bearer {token}"}


async def _audited(stack: Stack, target: str, prefix: str) -> list[tuple[str, str, dict]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditLog).where(AuditLog.target == target, AuditLog.action.startswith(prefix)).order_by(AuditLog.id)
        )
        return [(row.actor, row.action, row.detail) for row in rows]


# ---- a suspended shop -------------------------------------------------------------------------------


async def test_a_suspended_shops_small_withdrawal_waits_for_review_and_is_paid_after_an_approve(
    payout_stack: Stack,
) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    await _suspend(payout_stack, shop, "chargebacks under investigation")
    wid = await p.withdrawn(payout_stack, shop, 1000, dest)  # far under the auto-approve threshold
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_IN_REVIEW)
    assert p.stages(seen) == ["requested", "in_review"]
    assert seen["timeline"][1]["note"] == SUSPENDED_NOTE.format(reason="chargebacks under investigation")
    assert (await p.balance(payout_stack, shop))["reserved"] == 1000  # set aside, not frozen: it waits for a person
    async with payout_stack.sessionmaker() as session:
        logged = await audit.entries(session, merchant_id=shop.merchant_id, action_prefix="withdrawal.")
    assert [(e.actor, e.action, e.detail["review"]) for e in logged] == [
        (f"{shop.slug}/owner", "withdrawal.request", "merchant_suspended")
    ]

    name, finance = await _staff(payout_stack, "finance")
    queue = await payout_stack.http.get(f"/admin/withdrawals?merchant={shop.slug}", headers=finance)
    assert queue.status_code == 200, queue.text
    assert [
        (w["withdrawal_id"], w["merchant"], w["destination"], w["review_reason"]) for w in queue.json()["withdrawals"]
    ] == [
        (
            wid,
            shop.slug,
            "****0123 (张*)",
            "your shop is suspended (chargebacks under investigation), so a person checks every withdrawal "
            "before it is sent",
        )
    ]
    approved = await payout_stack.http.post(
        f"/admin/withdrawals/{wid}/approve", headers=finance, json={"reason": "payee account verified"}
    )
    assert approved.status_code == 200, approved.text
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "in_review", "review_approved", "approved", "submitted", "paid"]
    assert seen["timeline"][2]["note"] == f"Approved by {name}: payee account verified"
    (transfer,) = await p.transfers(payout_stack, wid)
    assert (transfer["status"], transfer["amount_cents"], transfer["submits"]) == ("paid", 950, 1)
    assert (await p.balance(payout_stack, shop))["available"] == 4000
    await p.record_history(payout_stack, wid, "suspended_approved")

    # Resumed, the shop's small withdrawals pass at once again.
    await _resume(payout_stack, shop)
    again = await p.withdrawn(payout_stack, shop, 1000, dest)
    assert p.stages(await p.wait_status(payout_stack, shop, again, c.WITHDRAWAL_PAID))[:2] == ["requested", "approved"]
    await p.clean(payout_stack)


async def test_a_suspended_shop_cannot_add_a_destination_and_nothing_changes(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    first = await p.destination(payout_stack, shop)
    await _suspend(payout_stack, shop, "ID documents expired")
    refused = await payout_stack.http.post(
        "/merchant/payout-destinations",
        headers=shop.owner,
        json={"rail": "simulator", "account": "6222029999999999", "name": "李四"},
    )
    assert refused.status_code == 409, refused.text
    assert refused.json() == {
        "error": "merchant_suspended",
        "detail": "the shop is suspended (ID documents expired); its payout destinations cannot be added or "
        "changed until the platform resumes it",
    }
    listed = (await payout_stack.http.get("/merchant/payout-destinations", headers=shop.owner)).json()
    assert [d["destination_id"] for d in listed["destinations"]] == [first]
    async with payout_stack.sessionmaker() as session:
        logged = await audit.entries(session, merchant_id=shop.merchant_id, action_prefix="payout_destination.")
    assert [(e.action, e.target) for e in logged] == [("payout_destination.add", first)]
    assert "6222029999999999" not in refused.text and "李四" not in refused.text

    await _resume(payout_stack, shop)
    assert (await p.destination(payout_stack, shop, account="6222029999999999", name="李四")) != first


async def _blocked_on_the_shop(stack: Stack) -> int:
    """Requests waiting for the shop's row (accounts.suspension's FOR SHARE) behind an open suspension."""
    async with stack.sessionmaker() as session:
        return (
            await session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%merchants.status_reason%FOR SHARE%'"
                )
            )
        ).scalar_one()


async def test_a_suspension_committed_while_a_withdrawal_and_a_destination_are_asked_for_is_never_missed(
    payout_stack: Stack,
) -> None:
    """The race: the suspension is written but not committed when the requests read the shop. They wait
    for it (the shop's row is read FOR SHARE) and see it: the withdrawal goes to review, the destination
    is refused. Read without the lock, both would have seen an active shop."""
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    async with payout_stack.sessionmaker() as suspending:
        await accounts.set_status(suspending, shop.slug, status="suspended", reason="fraud report", actor="test")
        asked = asyncio.create_task(p.withdraw(payout_stack, shop, 1000, dest))
        added = asyncio.create_task(
            payout_stack.http.post(
                "/merchant/payout-destinations",
                headers=shop.owner,
                json={"rail": "simulator", "account": "6222028888888888", "name": "王五"},
            )
        )

        async def both_waiting() -> bool:
            return await _blocked_on_the_shop(payout_stack) == 2

        await eventually(both_waiting, 10, "both requests to wait for the suspension")
        assert not asked.done() and not added.done()
        await suspending.commit()
    answer, refused = await asked, await added
    assert answer.status_code == 201, answer.text
    assert (refused.status_code, refused.json()["error"]) == (409, "merchant_suspended")
    wid = answer.json()["withdrawal_id"]
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_IN_REVIEW)
    assert seen["timeline"][1]["note"] == SUSPENDED_NOTE.format(reason="fraud report")
    listed = (await payout_stack.http.get("/merchant/payout-destinations", headers=shop.owner)).json()
    assert [d["destination_id"] for d in listed["destinations"]] == [dest]
    rejected = await payout_stack.http.post(
        f"/admin/withdrawals/{wid}/reject", headers=payout_stack.admin, json={"reason": "fraud report open"}
    )
    assert rejected.status_code == 200, rejected.text
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_REJECTED)
    assert (await p.balance(payout_stack, shop))["available"] == 5000
    await p.clean(payout_stack)


# ---- the finance role --------------------------------------------------------------------------------


async def _in_review(stack: Stack, amount: int) -> tuple[Shop, str]:
    shop = await p.funded_shop(stack, 3_000_000)
    wid = await p.withdrawn(stack, shop, amount, await p.destination(stack, shop))
    await p.wait_status(stack, shop, wid, c.WITHDRAWAL_IN_REVIEW)
    return shop, wid


async def test_finance_reviews_withdrawals_and_reads_the_ledger_check_and_nothing_else(payout_stack: Stack) -> None:
    shop, wid = await _in_review(payout_stack, 200_000)
    name, finance = await _staff(payout_stack, "finance")

    queue = await payout_stack.http.get("/admin/withdrawals", headers=finance)
    assert queue.status_code == 200, queue.text
    assert wid in [w["withdrawal_id"] for w in queue.json()["withdrawals"]]
    one = await payout_stack.http.get(f"/admin/withdrawals/{wid}", headers=finance)
    assert one.status_code == 200, one.text
    shown = one.json()
    assert (shown["merchant"], shown["destination"], shown["status"], shown["review_reason"]) == (
        shop.slug,
        "****0123 (张*)",
        c.WITHDRAWAL_IN_REVIEW,
        "",
    )
    assert [e["stage"] for e in shown["timeline"]] == ["requested", "in_review"]
    assert p.ACCOUNT not in one.text and p.NAME not in one.text
    unknown = await payout_stack.http.get("/admin/withdrawals?merchant=no-such-shop", headers=finance)
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "unknown_merchant", "detail": "no merchant 'no-such-shop'"},
    )
    odd = await payout_stack.http.get("/admin/withdrawals", params={"merchant": "a'b"}, headers=finance)
    assert odd.status_code == 422 and set(odd.json()) == {"error", "detail"}, odd.text
    check = await payout_stack.http.get("/admin/ledger/check", headers=finance)
    assert check.status_code == 200 and check.json()["ok"] is True, check.text

    # Everything else an admin does, and support's work: 403, and nothing changes.
    sku = "fin-" + uuid.uuid4().hex[:8]
    order_id = "o" + uuid.uuid4().hex[:19]
    refused = [
        ("POST", "/admin/products", {"json": {"sku": sku, "name": "x", "price_cents": 100, "currency": "CNY"}}),
        ("GET", f"/admin/products/{sku}/stock", {}),
        ("POST", f"/admin/products/{sku}/keys", {"content": b"K-1", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/admin/merchants", {"json": {"slug": "fin-" + uuid.uuid4().hex[:6], "name": "Nope"}}),
        ("GET", "/admin/merchants", {}),
        ("POST", f"/admin/merchants/{shop.slug}/suspend", {"json": {"reason": "finance may not"}}),
        ("POST", f"/admin/merchants/{shop.slug}/resume", {}),
        ("GET", "/admin/key-flags", {}),
        ("GET", f"/support/orders/{order_id}", {}),
        ("POST", f"/support/orders/{order_id}/refund", {"json": {"reason": "finance may not"}}),
    ]
    for method, path, kwargs in refused:
        headers = {**finance, **kwargs.pop("headers", {})}
        answer = await payout_stack.http.request(method, path, headers=headers, **kwargs)
        assert (answer.status_code, answer.json()) == (
            403,
            {
                "error": "forbidden",
                "detail": "a finance token may list, approve and reject withdrawals and read the ledger check; "
                "this needs another role",
            },
        ), (method, path, answer.text)
    async with payout_stack.sessionmaker() as session:
        merchant = await session.get(Merchant, shop.merchant_id)
        assert merchant is not None and merchant.status == "active"
        assert (
            await session.scalar(
                select(AuditLog.id).where(AuditLog.actor == name, AuditLog.action.notlike("withdrawal.%"))
            )
            is None
        )
    assert (await payout_stack.http.get(f"/admin/products/{sku}/stock", headers=payout_stack.admin)).status_code == 404

    approved = await payout_stack.http.post(f"/admin/withdrawals/{wid}/approve", headers=finance, json={"reason": "ok"})
    assert approved.status_code == 200, approved.text
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.clean(payout_stack)


async def test_support_and_merchant_tokens_may_not_review(payout_stack: Stack) -> None:
    shop, wid = await _in_review(payout_stack, 200_000)
    _, support = await _staff(payout_stack, "support")
    for headers in (support, payout_stack.support, shop.owner):
        for method, path in (
            ("GET", "/admin/withdrawals"),
            ("GET", f"/admin/withdrawals/{wid}"),
            ("POST", f"/admin/withdrawals/{wid}/approve"),
            ("POST", f"/admin/withdrawals/{wid}/reject"),
            ("GET", "/admin/ledger/check"),
        ):
            answer = await payout_stack.http.request(method, path, headers=headers, json={"reason": "no"})
            assert (answer.status_code, answer.json()["error"]) == (401, "invalid_token"), (method, path)
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW
    assert [action for _, action, _ in await _audited(payout_stack, wid, "withdrawal.")] == ["withdrawal.request"]
    rejected = await payout_stack.http.post(
        f"/admin/withdrawals/{wid}/reject", headers=payout_stack.admin, json={"reason": "tidy up"}
    )
    assert rejected.status_code == 200, rejected.text
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_REJECTED)
    await p.clean(payout_stack)


async def test_two_finance_people_approve_and_each_review_is_audited_by_name(payout_stack: Stack) -> None:
    shop, wid = await _in_review(payout_stack, 2_000_000)
    first, first_token = await _staff(payout_stack, "finance", "fin-a")
    second, second_token = await _staff(payout_stack, "finance", "fin-b")
    approve = f"/admin/withdrawals/{wid}/approve"
    assert (
        await payout_stack.http.post(approve, headers=first_token, json={"reason": "known shop"})
    ).status_code == 200
    twice = await payout_stack.http.post(approve, headers=first_token, json={"reason": "again"})
    assert (twice.status_code, twice.json()["error"]) == (409, "same_approver")
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW
    done = await payout_stack.http.post(approve, headers=second_token, json={"reason": "documents seen"})
    assert done.status_code == 200, done.text
    assert sorted(done.json()["approvals"]) == sorted([first, second])
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert [e["note"] for e in seen["timeline"] if e["stage"] == "review_approved"] == [
        f"Approved by {first}: known shop",
        f"Approved by {second}: documents seen",
    ]
    # One row per review that was taken, naming its person; the refused second approval wrote none.
    assert await _audited(payout_stack, wid, "withdrawal.approve") == [
        (first, "withdrawal.approve", {"reason": "known shop"}),
        (second, "withdrawal.approve", {"reason": "documents seen"}),
    ]

    shop, rejected = await _in_review(payout_stack, 200_000)
    answer = await payout_stack.http.post(
        f"/admin/withdrawals/{rejected}/reject", headers=second_token, json={"reason": "payee name unclear"}
    )
    assert answer.status_code == 200, answer.text
    await p.wait_status(payout_stack, shop, rejected, c.WITHDRAWAL_REJECTED)
    assert [(actor, action) for actor, action, _ in await _audited(payout_stack, rejected, "withdrawal.")] == [
        (f"{shop.slug}/owner", "withdrawal.request"),
        (second, "withdrawal.reject"),
    ]
    assert await _audited(payout_stack, rejected, "withdrawal.reject") == [
        (second, "withdrawal.reject", {"reason": "payee name unclear"})
    ]
    await p.clean(payout_stack)


async def test_one_person_approving_twice_at_once_counts_once(payout_stack: Stack) -> None:
    """The two-person rule under a race: the same person's two approvals sent together. Temporal runs
    the workflow's Update validators one after the other, so the second sees the first."""
    shop, wid = await _in_review(payout_stack, 2_000_000)
    name, finance = await _staff(payout_stack, "finance")
    approve = f"/admin/withdrawals/{wid}/approve"
    answers = await asyncio.gather(
        *(payout_stack.http.post(approve, headers=finance, json={"reason": f"try {i}"}) for i in range(5))
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409], [a.text for a in answers]
    assert {a.json()["error"] for a in answers if a.status_code == 409} == {"same_approver"}
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW
    assert [actor for actor, _, _ in await _audited(payout_stack, wid, "withdrawal.approve")] == [name]
    _, other = await _staff(payout_stack, "finance")
    assert (await payout_stack.http.post(approve, headers=other, json={"reason": "second"})).status_code == 200
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.clean(payout_stack)


# ---- the review SLA -----------------------------------------------------------------------------------


async def test_a_review_past_its_sla_writes_the_note_the_merchant_reads(payout_stack: Stack, caplog) -> None:
    """The SLA timer (PAYOUT_REVIEW_SLA_SECONDS, here 1 s) writes one line on the timeline and warns."""
    caplog.set_level(logging.WARNING)
    shop = await p.funded_shop(payout_stack, 500_000)
    dest = await p.destination(payout_stack, shop)
    async with payout_stack.sessionmaker.begin() as session:  # made as the API makes it; started by us below
        made, _ = await withdrawals.request(
            session,
            payout_stack.settings,
            shop.merchant_id,
            withdrawals.Asked(200_000, "CNY", dest, uuid.uuid4().hex, f"{shop.slug}/owner"),
            datetime.now(UTC),
        )
        payout = withdrawals.payout_input(made, payout_stack.settings)
    payout.timing.review_sla_seconds = 1
    assert await start_payout(payout_stack.env.client, payout_stack.task_queue, payout)

    async def late() -> dict:
        seen = await p.view(payout_stack, shop, made.id)
        assert "review_late" in p.stages(seen), p.stages(seen)
        return seen

    seen = await eventually(late, 15, "the review-late note")
    assert seen["status"] == c.WITHDRAWAL_IN_REVIEW
    assert seen["timeline"][-1]["note"] == "The review is taking longer than usual; finance has been reminded."
    assert any(made.id in r.getMessage() and "past its review SLA" in r.getMessage() for r in caplog.records), (
        "the worker's warning"
    )
    approved = await payout_stack.http.post(
        f"/admin/withdrawals/{made.id}/approve", headers=payout_stack.admin, json={"reason": "late but fine"}
    )
    assert approved.status_code == 200, approved.text
    seen = await p.wait_status(payout_stack, shop, made.id, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == [
        "requested",
        "in_review",
        "review_late",  # once: the timer is not set again after it fired
        "review_approved",
        "approved",
        "submitted",
        "paid",
    ]
    await p.clean(payout_stack)
