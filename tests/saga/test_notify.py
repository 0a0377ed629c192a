"""Notify handling: lost, duplicated and forged notifies, over HTTP from the simulator."""

import asyncio
import json
import time
from functools import partial

from sqlalchemy import select

from miaofa.db.models import NotifyLog, OrderEvent
from miaofa.gateways.sim_protocol import SIGNATURE_HEADER, TIMESTAMP_HEADER, make_signature
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually


async def test_every_paid_order_is_delivered_when_all_notifies_are_dropped(dev_stack: Stack) -> None:
    sku = await dev_stack.product(5)
    orders = [await dev_stack.ordered(sku, email=f"d{i}@example.com") for i in range(5)]
    await dev_stack.control(notify="drop")
    await asyncio.gather(*(dev_stack.pay(order) for order in orders))
    views = await asyncio.gather(*(dev_stack.wait_status(order, "delivered", timeout=30) for order in orders))
    assert all(len(view["keys"]) == 1 for view in views)
    assert all("notified" not in [e["stage"] for e in view["timeline"]] for view in views)


async def test_duplicated_notifies_deliver_once(dev_stack: Stack) -> None:
    sku = await dev_stack.product(6)
    orders = [await dev_stack.ordered(sku, email=f"dup{i}@example.com", quantity=2) for i in range(3)]
    await dev_stack.control(duplicate=True)
    await asyncio.gather(*(dev_stack.pay(order) for order in orders))
    views = await asyncio.gather(*(dev_stack.wait_status(order, "delivered") for order in orders))
    for order, view in zip(orders, views, strict=True):
        outcomes = await eventually(
            partial(_both_copies_logged, dev_stack, order), message=f"both copies of {order['order_id']}'s notify"
        )
        assert outcomes[0] == "accepted" and outcomes[1] in ("accepted", "duplicate")
        # Each accepted copy signalled the workflow before it was answered: let it act on them all.
        await dev_stack.settled(order, signals=outcomes.count("accepted"))
        async with dev_stack.sessionmaker() as session:
            delivered = await session.scalars(
                select(OrderEvent.stage).where(
                    OrderEvent.order_id == order["order_id"], OrderEvent.stage == "delivered"
                )
            )
            assert list(delivered) == ["delivered"]
        assert len(view["keys"]) == 2
    all_keys = [key for view in views for key in view["keys"]]
    assert len(set(all_keys)) == 6
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 6, "refunded": 0}


async def _both_copies_logged(stack: Stack, order: dict) -> list[str]:
    async with stack.sessionmaker() as session:
        outcomes = list(
            await session.scalars(
                select(NotifyLog.outcome).where(NotifyLog.order_id == order["order_id"]).order_by(NotifyLog.id)
            )
        )
    return outcomes if len(outcomes) >= 2 else []


def _signed(stack: Stack, payload: dict, secret: str | None = None, ts: int | None = None) -> tuple[bytes, dict]:
    body = json.dumps(payload).encode()
    ts = ts or int(time.time())
    signature = make_signature(secret or stack.settings.sim_secret, ts, body)
    return body, {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature, "Content-Type": "application/json"}


def _notice(stack: Stack, order: dict, **changes) -> dict:
    return {
        "payment_id": order["payment"]["payment_id"],
        "order_id": order["order_id"],
        "merchant_id": stack.settings.sim_merchant_id,
        "status": "paid",
        "amount_cents": order["amount_cents"],
        "currency": order["currency"],
        "paid_at": "2026-01-01T00:00:00+00:00",
        **changes,
    }


async def test_forged_or_wrong_notifies_change_nothing(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    url = "/payments/simulator/notify"
    refused = {
        "bad signature": _signed(dev_stack, _notice(dev_stack, order), secret="not-the-secret"),
        "stale timestamp": _signed(dev_stack, _notice(dev_stack, order), ts=int(time.time()) - 3600),
        "other merchant": _signed(dev_stack, _notice(dev_stack, order, merchant_id="someone-else")),
        "NUL in the order id": _signed(dev_stack, _notice(dev_stack, order, order_id="a\u0000b")),
    }
    for name, (body, headers) in refused.items():
        answer = await dev_stack.http.post(url, content=body, headers=headers)
        assert (name, answer.status_code, answer.text) == (name, 400, "fail")
    # Signed by the gateway but not matching the order: taken in hand (acknowledged) and reviewed
    # with the gateway, which says the payment is still pending: nothing to refund, nothing changes.
    reviewed = {
        "wrong amount": _signed(dev_stack, _notice(dev_stack, order, amount_cents=1)),
        "wrong currency": _signed(dev_stack, _notice(dev_stack, order, currency="USD")),
        "unknown order": _signed(dev_stack, _notice(dev_stack, order, order_id="nosuchorder00")),
    }
    for name, (body, headers) in reviewed.items():
        answer = await dev_stack.http.post(url, content=body, headers=headers)
        assert (name, answer.status_code, answer.text) == (name, 200, "success")
    tampered_body, headers = _signed(dev_stack, _notice(dev_stack, order))
    tampered = tampered_body.replace(b'"paid"', b'"paid" ')
    assert (await dev_stack.http.post(url, content=tampered, headers=headers)).status_code == 400
    unknown_gateway = await dev_stack.http.post("/payments/nosuchpay/notify", content=b"{}")
    assert unknown_gateway.status_code == 404

    review = dev_stack.env.client.get_workflow_handle(f"stray-simulator-{order['payment']['payment_id']}")
    assert await review.result() == "nothing"
    view = await dev_stack.view(order)
    assert view["status"] == "awaiting_payment"
    assert [e["stage"] for e in view["timeline"]][:4] == ["created", "risk", "reserved", "payment_created"]
    assert "paid" not in [e["stage"] for e in view["timeline"]]
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
    async with dev_stack.sessionmaker() as session:
        outcomes = list(
            await session.scalars(
                select(NotifyLog.outcome).where(NotifyLog.order_id == order["order_id"]).order_by(NotifyLog.id)
            )
        )
    assert outcomes == ["foreign", "stray", "stray"]  # the rest never got as far as naming a real order


async def test_check_payment_asks_the_gateway_at_once(dev_env, sessionmaker, sim_url, database_url, smtp) -> None:
    # A long callback grace, so only the buyer's check can find the payment this soon.
    async with running_stack(
        dev_env, sessionmaker, sim_url, **stack_settings(database_url, smtp[0], callback_grace_seconds=600)
    ) as stack:
        sku = await stack.product(1)
        order = await stack.ordered(sku)
        await stack.control(notify="drop")
        await stack.pay(order)
        answer = await stack.http.post(
            f"/orders/{order['order_id']}/check-payment", headers={"X-Order-Token": order["access_token"]}
        )
        assert answer.status_code == 200
        assert answer.json()["paid"] is True
        view = await stack.wait_status(order, "delivered")
        stages = [e["stage"] for e in view["timeline"]]
        assert "checked" in stages and "polled" not in stages
        wrong = await stack.http.post(f"/orders/{order['order_id']}/check-payment", headers={"X-Order-Token": "x"})
        assert (wrong.status_code, wrong.json()["error"]) == (404, "order_not_found")
