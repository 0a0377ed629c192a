"""Withdrawals over HTTP: destinations, the request's checks, the race, idempotency, the review."""

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from miaofa import audit, staff
from miaofa import contract as c
from miaofa.ledger import check
from miaofa.payouts import withdrawals
from tests.api.test_merchants import Shop
from tests.helpers import payouts as p
from tests.helpers.stack import Stack
from tests.helpers.waiting import eventually


async def test_destinations_are_added_by_the_owner_only_and_shown_masked(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 0)
    made = await payout_stack.http.post(
        "/merchant/tokens", headers=shop.owner, json={"name": f"staff-{uuid.uuid4().hex[:6]}"}
    )
    assert made.status_code == 201, made.text
    staff_token = {"Authorization": f"Bearer {made.json()['token']}"}
    body = {"rail": "simulator", "account": p.ACCOUNT, "name": p.NAME}
    refused = await payout_stack.http.post("/merchant/payout-destinations", headers=staff_token, json=body)
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    for bad in ({**body, "rail": "paypal"}, {**body, "account": ""}, {**body, "account": "12\x003456"}):
        answer = await payout_stack.http.post("/merchant/payout-destinations", headers=shop.owner, json=bad)
        assert answer.status_code == 422 and set(answer.json()) >= {"error", "detail"}, answer.text
    dest = await p.destination(payout_stack, shop)
    listed = (await payout_stack.http.get("/merchant/payout-destinations", headers=staff_token)).json()
    assert [(d["destination_id"], d["account"]) for d in listed["destinations"]] == [(dest, "****0123 (张*)")]


async def test_a_new_destination_cools_off_before_its_first_payout(dev_stack: Stack) -> None:
    shop = await p.funded_shop(dev_stack, 5000)  # dev_stack: the default cooling-off of a day
    dest = await p.destination(dev_stack, shop)
    answer = await p.withdraw(dev_stack, shop, 1000, dest)
    assert (answer.status_code, answer.json()["error"]) == (409, "destination_cooling_off"), answer.text
    assert (await p.balance(dev_stack, shop))["available"] == 5000
    await p.clean(dev_stack)


async def test_fifty_withdrawals_at_once_never_reserve_more_than_the_balance(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 10_000)
    dest = await p.destination(payout_stack, shop)
    answers = await asyncio.gather(*(p.withdraw(payout_stack, shop, 300, dest) for _ in range(50)))
    made = [a.json()["withdrawal_id"] for a in answers if a.status_code == 201]
    refused = [a.json()["error"] for a in answers if a.status_code != 201]
    assert len(made) == 33 and refused == ["insufficient_funds"] * 17
    left = await p.balance(payout_stack, shop)
    assert left["available"] == 100 and left["available"] + left["reserved"] <= 10_000
    await asyncio.gather(*(p.wait_status(payout_stack, shop, w, c.WITHDRAWAL_PAID, timeout=60) for w in made))
    assert await p.balance(payout_stack, shop) == {
        "pending": 0,
        "available": 100,
        "reserved": 0,
        "debt": 0,
        "payable": 0,
    }
    await p.clean(payout_stack)


async def test_the_same_idempotency_key_is_the_same_withdrawal(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    key = uuid.uuid4().hex
    first, again = await asyncio.gather(
        p.withdraw(payout_stack, shop, 1000, dest, key), p.withdraw(payout_stack, shop, 1000, dest, key)
    )
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json()["withdrawal_id"] == again.json()["withdrawal_id"]
    other = await p.withdraw(payout_stack, shop, 2000, dest, key)
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_key_reused")
    keyless = await payout_stack.http.post(
        "/merchant/withdrawals",
        headers=shop.owner,
        json={"amount_cents": 1000, "currency": "CNY", "destination_id": dest},
    )
    assert (keyless.status_code, keyless.json()["error"]) == (422, "missing_input")
    await p.wait_status(payout_stack, shop, first.json()["withdrawal_id"], c.WITHDRAWAL_PAID)
    assert (await p.balance(payout_stack, shop))["available"] == 4000
    listed = (await payout_stack.http.get("/merchant/withdrawals", headers=shop.owner)).json()["withdrawals"]
    assert [w["withdrawal_id"] for w in listed] == [first.json()["withdrawal_id"]]
    async with payout_stack.sessionmaker() as session:
        logged = await audit.entries(session, merchant_id=shop.merchant_id, action_prefix="withdrawal.")
    assert [(e.action, e.target) for e in logged] == [("withdrawal.request", first.json()["withdrawal_id"])]
    await p.clean(payout_stack)


async def test_refusals_debt_insufficient_too_small_and_bad_input(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    cases = [(6000, 409, "insufficient_funds"), (50, 422, "invalid_input")]  # 50: below PAYOUT_MIN_CENTS
    for amount, status, error in cases:
        answer = await p.withdraw(payout_stack, shop, amount, dest)
        assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    for body in (
        {"amount_cents": "1000", "currency": "CNY", "destination_id": dest},
        {"amount_cents": 1000, "currency": "cny", "destination_id": dest},
        {"amount_cents": 1000, "currency": "CNY", "destination_id": "pd_" + "0" * 20},
    ):
        answer = await payout_stack.http.post(
            "/merchant/withdrawals", headers={**shop.owner, "Idempotency-Key": uuid.uuid4().hex}, json=body
        )
        assert answer.status_code in (404, 422) and set(answer.json()) == {"error", "detail"}, answer.text
    await p.fund(payout_stack, shop, 10, kind="debt")
    answer = await p.withdraw(payout_stack, shop, 1000, dest)
    assert (answer.status_code, answer.json()["error"]) == (409, "debt_outstanding"), answer.text
    assert await p.balance(payout_stack, shop) == {
        "pending": 0,
        "available": 5000,
        "reserved": 0,
        "debt": 10,
        "payable": 0,
    }
    await p.clean(payout_stack)


async def test_another_shops_withdrawal_is_not_found(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    wid = await p.withdrawn(payout_stack, shop, 1000, await p.destination(payout_stack, shop))
    other = await p.funded_shop(payout_stack, 0)
    for path in (f"/merchant/withdrawals/{wid}", "/merchant/withdrawals/wd_nothing"):
        answer = await payout_stack.http.get(path, headers=other.owner)
        assert (answer.status_code, answer.json()["error"]) == (404, "withdrawal_not_found")
    foreign = await p.withdraw(payout_stack, other, 1000, await p.destination(payout_stack, shop))
    assert (foreign.status_code, foreign.json()["error"]) == (404, "destination_not_found")
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.clean(payout_stack)


async def _finance(stack: Stack, name: str) -> dict[str, str]:
    async with stack.sessionmaker.begin() as session:
        token = await staff.add(session, stack.vault, role="admin", name=name, created_by="test")
    return {"Authorization": f"Bearer {token}"}


async def _in_review(stack: Stack, amount: int) -> tuple[Shop, str]:
    shop = await p.funded_shop(stack, 3_000_000)
    wid = await p.withdrawn(stack, shop, amount, await p.destination(stack, shop))
    await p.wait_status(stack, shop, wid, c.WITHDRAWAL_IN_REVIEW)
    return shop, wid


async def test_above_the_threshold_finance_approves(payout_stack: Stack) -> None:
    shop, wid = await _in_review(payout_stack, 200_000)
    seen = await p.view(payout_stack, shop, wid)
    assert p.stages(seen) == ["requested", "in_review"]
    queue = (await payout_stack.http.get("/admin/withdrawals", headers=payout_stack.admin)).json()["withdrawals"]
    assert [(w["merchant_id"], w["amount_cents"]) for w in queue if w["withdrawal_id"] == wid] == [
        (shop.merchant_id, 200_000)
    ]
    approve = f"/admin/withdrawals/{wid}/approve"
    assert (await payout_stack.http.post(approve, headers=shop.owner, json={})).status_code == 401
    answer = await payout_stack.http.post(approve, headers=payout_stack.admin, json={"reason": "known shop"})
    assert answer.status_code == 200, answer.text
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "in_review", "review_approved", "approved", "submitted", "paid"]
    assert seen["timeline"][2]["note"] == "Approved by admin: known shop"
    again = await payout_stack.http.post(approve, headers=payout_stack.admin, json={})
    assert (again.status_code, again.json()["error"]) == (409, "not_in_review")
    await p.record_history(payout_stack, wid, "review_approved")
    await p.clean(payout_stack)


async def test_above_the_threshold_finance_rejects_with_a_reason_and_the_money_returns(payout_stack: Stack) -> None:
    shop, wid = await _in_review(payout_stack, 200_000)
    reject = f"/admin/withdrawals/{wid}/reject"
    bare = await payout_stack.http.post(reject, headers=payout_stack.admin, json={})
    assert (bare.status_code, bare.json()["error"]) == (422, "missing_input")
    answer = await payout_stack.http.post(reject, headers=payout_stack.admin, json={"reason": "documents missing"})
    assert answer.status_code == 200, answer.text
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_REJECTED)
    assert "documents missing" in seen["timeline"][-1]["note"]
    assert (await p.balance(payout_stack, shop))["available"] == 3_000_000
    assert await p.transfers(payout_stack, wid) == []
    await p.record_history(payout_stack, wid, "review_rejected")
    await p.clean(payout_stack)


async def test_above_the_second_threshold_two_different_people_approve(payout_stack: Stack) -> None:
    shop, wid = await _in_review(payout_stack, 2_000_000)
    first = await _finance(payout_stack, f"fin-a-{uuid.uuid4().hex[:6]}")
    second = await _finance(payout_stack, f"fin-b-{uuid.uuid4().hex[:6]}")
    approve = f"/admin/withdrawals/{wid}/approve"
    assert (await payout_stack.http.post(approve, headers=first, json={"reason": "ok"})).status_code == 200
    twice = await payout_stack.http.post(approve, headers=first, json={"reason": "ok again"})
    assert (twice.status_code, twice.json()["error"]) == (409, "same_approver")
    assert (await p.view(payout_stack, shop, wid))["status"] == c.WITHDRAWAL_IN_REVIEW
    support = await payout_stack.http.post(approve, headers=payout_stack.support, json={"reason": "ok"})
    assert support.status_code == 401  # a support token is not finance
    assert (await payout_stack.http.post(approve, headers=second, json={"reason": "ok"})).status_code == 200
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    await p.record_history(payout_stack, wid, "two_person_approved")
    await p.clean(payout_stack)


async def test_a_withdrawal_whose_workflow_never_started_is_started_by_its_next_read(payout_stack: Stack) -> None:
    """Temporal did not answer after the commit: the withdrawal waits, reserved, and the next GET starts it."""
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    async with payout_stack.sessionmaker.begin() as session:  # what the API commits before it starts the workflow
        made, fresh = await withdrawals.request(
            session,
            payout_stack.settings,
            shop.merchant_id,
            withdrawals.Asked(1000, "CNY", dest, uuid.uuid4().hex, "owner"),
            datetime.now(UTC),
        )
    assert fresh and (await p.balance(payout_stack, shop))["reserved"] == 1000
    await p.clean(payout_stack)
    await p.wait_status(payout_stack, shop, made.id, c.WITHDRAWAL_PAID)
    assert (await p.balance(payout_stack, shop))["available"] == 4000
    await p.clean(payout_stack)


async def test_the_check_names_a_withdrawal_whose_money_did_not_move_as_its_status_says(payout_stack: Stack) -> None:
    """The payout checks are not a formality: tampering is named (in a transaction rolled back)."""
    shop = await p.funded_shop(payout_stack, 5000)
    wid = await p.withdrawn(payout_stack, shop, 1000, await p.destination(payout_stack, shop))
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    async with payout_stack.sessionmaker() as session:
        await session.execute(text("UPDATE withdrawals SET status = 'failed' WHERE id = :w"), {"w": wid})
        found = {(v.check, v.detail) for v in await check.run(session)}
        await session.rollback()
    assert ("withdrawal_money_disagrees", f"withdrawal {wid} is failed but its ledger shows [reserved,paid]") in found
    assert any(name == "payout_clearing_differs" for name, _ in found)
    async with payout_stack.sessionmaker() as session:  # open again: it would need money reserved for it
        await session.execute(text("UPDATE withdrawals SET status = 'submitted' WHERE id = :w"), {"w": wid})
        found = {(v.check, v.detail) for v in await check.run(session)}
        await session.rollback()
    reserved = f"{shop.merchant_id} has 0 reserved in CNY, its open withdrawals 1000"
    assert ("reserved_differs_from_withdrawals", reserved) in found
    await p.clean(payout_stack)


async def test_reconciliation_starts_the_workflow_of_a_withdrawal_left_requested(payout_stack: Stack) -> None:
    shop = await p.funded_shop(payout_stack, 5000)
    dest = await p.destination(payout_stack, shop)
    async with payout_stack.sessionmaker.begin() as session:  # committed, and Temporal never heard of it
        made, _ = await withdrawals.request(
            session,
            payout_stack.settings,
            shop.merchant_id,
            withdrawals.Asked(1000, "CNY", dest, uuid.uuid4().hex, "owner"),
            datetime.now(UTC),
        )
    report = await payout_stack.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=60, grace_seconds=0, payout_start_grace_seconds=0),
        id=f"reconcile-{uuid.uuid4().hex[:8]}",
        task_queue=payout_stack.task_queue,
        result_type=c.ReconcileReport,
    )
    assert report.payouts_started >= 1

    async def paid() -> bool:  # read from the database: a GET would start it itself
        async with payout_stack.sessionmaker() as session:
            return (await withdrawals.by_id(session, made.id)).status == c.WITHDRAWAL_PAID  # type: ignore[union-attr]

    await eventually(paid, 20, "the swept withdrawal to be paid")
    await p.clean(payout_stack)
