"""Issue 17, N8: the support audit log names who really did what, and a reveal is deliberate and
uncached. One Idempotency-Key typed by two people, a reveal without a reason, a revoked name
re-issued with another role, and searches by email all left the log ambiguous or silent."""

import uuid
from typing import Any

from sqlalchemy import select

from miaofa import staff
from miaofa.db.models import AuditLog
from tests.helpers.stack import Stack


async def _named(stack: Stack, role: str = "support") -> tuple[str, dict[str, str]]:
    name = f"{role[:3]}-{uuid.uuid4().hex[:8]}"
    async with stack.sessionmaker.begin() as session:
        token = await staff.add(session, stack.vault, role=role, name=name, created_by="test")
    return name, {"Authorization": f"Bearer {token}"}


async def _delivered(stack: Stack, email: str | None = None) -> dict[str, Any]:
    order = await stack.ordered(await stack.product(1), email=email or f"audit-{uuid.uuid4().hex[:8]}@example.com")
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    return order


async def _audit(stack: Stack, target: str, prefix: str = "") -> list[tuple[str, str, dict]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditLog).where(AuditLog.target == target, AuditLog.action.startswith(prefix)).order_by(AuditLog.id)
        )
        return [(row.actor, row.action, row.detail) for row in rows]


async def test_an_idempotency_key_reused_by_someone_else_is_not_their_refund(dev_stack: Stack) -> None:
    ann, as_ann = await _named(dev_stack)
    carl, as_carl = await _named(dev_stack)
    order = await _delivered(dev_stack)
    url = f"/support/orders/{order['order_id']}/refund"
    key = {"Idempotency-Key": f"refund-{uuid.uuid4().hex[:6]}"}

    first = await dev_stack.http.post(url, headers={**as_ann, **key}, json={"reason": "key invalid"})
    assert (first.status_code, first.json()["status"]) == (200, "refunded")
    # ann's own retried click is the same Update, answered again.
    retried = await dev_stack.http.post(url, headers={**as_ann, **key}, json={"reason": "key invalid"})
    assert (retried.status_code, retried.json()["status"]) == (200, "refunded")
    # carl typing the same key is carl's own request: the order is already refunded, and says so.
    second = await dev_stack.http.post(url, headers={**as_carl, **key}, json={"reason": "me too"})
    assert (second.status_code, second.json()) == (
        409,
        {"error": "already_refunded", "detail": "the order is already refunded"},
    )
    assert await _audit(dev_stack, order["order_id"], "support.") == [
        (ann, "support.refund", {"outcome": "done", "status": "refunded", "reason": "key invalid"}),
        (ann, "support.refund", {"outcome": "done", "status": "refunded", "reason": "key invalid"}),
        (carl, "support.refund", {"outcome": "already_refunded", "reason": "me too"}),
    ]
    assert (await dev_stack.sim_payment(order["payment"]["payment_id"]))["status"] == "refunded"


async def test_a_reveal_needs_a_reason_and_is_never_cached(dev_stack: Stack) -> None:
    name, as_ann = await _named(dev_stack)
    order = await _delivered(dev_stack)
    [key] = (await dev_stack.view(order))["keys"]
    url = f"/support/orders/{order['order_id']}/reveal"

    said = "reason: say why (the buyer's request, a ticket): it is kept in the audit log"
    for body, detail in (
        (None, "body: Field required"),
        ({}, "reason: Field required"),
        ({"reason": ""}, said),
        ({"reason": "   "}, said),
        ({"reason": "\u3000"}, said),  # an ideographic space is no reason either
    ):
        refused = await dev_stack.http.post(url, headers=as_ann, json=body)
        assert (refused.status_code, refused.json()) == (422, {"error": "invalid_input", "detail": detail}), body
    assert await _audit(dev_stack, order["order_id"], "order.keys_revealed") == []

    revealed = await dev_stack.http.post(url, headers=as_ann, json={"reason": "buyer lost the email"})
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["keys"][0]["key"] == key
    assert revealed.headers["cache-control"] == "no-store"
    assert await _audit(dev_stack, order["order_id"], "order.keys_revealed") == [
        (name, "order.keys_revealed", {"keys": 1, "reason": "buyer lost the email"})
    ]


async def test_a_search_by_email_is_audited_without_the_email(dev_stack: Stack) -> None:
    name, as_ann = await _named(dev_stack)
    email = f"Searched-{uuid.uuid4().hex[:8]}@Example.com"
    order = await _delivered(dev_stack, email=email)
    found = await dev_stack.http.get("/support/orders", params={"email": email, "status": "delivered"}, headers=as_ann)
    assert [row["order_id"] for row in found.json()] == [order["order_id"]]
    buyer = f"buyer:{dev_stack.vault.buyer_hash(email)}"
    assert await _audit(dev_stack, buyer) == [(name, "support.search", {"found": 1, "status": "delivered", "sku": ""})]
    async with dev_stack.sessionmaker() as session:
        logged = (await session.scalars(select(AuditLog).where(AuditLog.actor == name))).all()
    assert email.lower() not in str([(row.target, row.detail) for row in logged]).lower()
