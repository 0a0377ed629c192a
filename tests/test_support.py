"""Support Updates on the dev server: refund, resend, cancel, and each refusal with its reason."""

import asyncio

from sqlalchemy import select

from miaofa.db.models import AuditLog
from tests.stack import Stack


async def _delivered(stack: Stack, keys: list[str] | int = 1) -> tuple[str, dict]:
    sku = await stack.product(keys)
    order = await stack.ordered(sku)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    return sku, order


async def test_refund_a_delivered_order(dev_stack: Stack) -> None:
    sku, order = await _delivered(dev_stack)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support,
                                       json={"reason": "buyer says the key was invalid"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "refunded"
    view = await dev_stack.view(order)
    assert (view["status"], view["keys"]) == ("refunded", [])
    assert "refunded" in [event["stage"] for event in view["timeline"]]
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 0, "refunded": 1}
    payment = (await dev_stack.sim.get(f"/api/payments/{order['payment']['payment_id']}",
                                       headers={"Authorization": f"Bearer {dev_stack.settings.sim_secret}"})).json()
    assert payment["status"] == "refunded"
    async with dev_stack.sessionmaker() as session:
        audit = await session.scalar(select(AuditLog).where(AuditLog.target == order["order_id"]))
    assert (audit.actor, audit.action) == ("support", "order.refund")

    again = await dev_stack.http.post(f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support)
    assert again.status_code == 409
    assert again.json() == {"error": "already_refunded", "detail": "the order is already refunded"}
    await dev_stack.record_history(order, "support_refund")


async def test_refund_of_an_unpaid_order_is_refused(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support)
    assert answer.status_code == 409
    assert answer.json() == {"error": "not_refundable",
                             "detail": "only delivered orders can be refunded; this one is awaiting_payment"}
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"


async def _mails(mailbox, order: dict, expected: int) -> list:
    """The order's emails, once `expected` have arrived (delivery email goes out just after delivery)."""
    for _ in range(100):
        mails = [m for m in mailbox.messages if order["order_id"] in m["Subject"]]
        if len(mails) >= expected:
            return mails
        await asyncio.sleep(0.05)
    return mails


async def test_resend_emails_the_keys_again(dev_stack: Stack, smtp) -> None:
    _, mailbox = smtp
    sku, order = await _delivered(dev_stack, ["RESEND-KEY-0001"])
    assert len(await _mails(mailbox, order, 1)) == 1
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/resend", headers=dev_stack.support)
    assert answer.status_code == 200, answer.text
    assert answer.json()["detail"] == "delivery email sent again"
    sent = await _mails(mailbox, order, 2)
    assert len(sent) == 2
    assert "RESEND-KEY-0001" in sent[1].get_payload()
    assert sent[1]["To"] == "buyer@example.com"
    await dev_stack.record_history(order, "support_resend")


async def test_resend_of_an_undelivered_order_is_refused(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/resend", headers=dev_stack.support)
    assert answer.status_code == 409
    assert answer.json()["error"] == "not_delivered"


async def test_cancel_an_unpaid_order_releases_stock(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel", headers=dev_stack.support)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert (await dev_stack.view(order))["status"] == "cancelled"
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    paid = await dev_stack.pay(order)
    assert (paid.status_code, paid.json()["error"]) == (409, "payment_closed")
    await dev_stack.record_history(order, "support_cancel")


async def test_cancel_of_a_delivered_order_is_refused(dev_stack: Stack) -> None:
    _, order = await _delivered(dev_stack)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel", headers=dev_stack.support)
    assert answer.status_code == 409
    assert answer.json() == {"error": "not_cancellable",
                             "detail": "only unpaid orders can be cancelled; this one is delivered"}


async def test_support_needs_the_support_token(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    missing = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel")
    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"
    wrong = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel",
                                      headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_token")
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"


async def test_support_on_an_unknown_order_is_404(dev_stack: Stack) -> None:
    answer = await dev_stack.http.post("/support/orders/nosuchorder/refund", headers=dev_stack.support)
    assert answer.status_code == 404
    assert answer.json()["error"] == "order_not_found"
