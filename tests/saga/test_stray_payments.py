"""Money the saga cannot take goes back: closed orders, wrong amounts, second payments."""

from sqlalchemy import select, text
from temporalio.service import RPCError

from miaofa.db.models import AuditLog, NotifyLog
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually


async def _review(stack: Stack, payment_id: str) -> str:
    """The outcome of the payment's review, once a notify or an order has started it."""
    handle = stack.env.client.get_workflow_handle(f"stray-simulator-{payment_id}")

    async def started() -> bool:
        try:
            await handle.describe()
        except RPCError as missing:
            raise AssertionError(str(missing)) from None
        return True

    await eventually(started, message=f"the review of payment {payment_id} to start")
    return await handle.result()


async def _audit(stack: Stack, payment_id: str) -> list[tuple[str, dict]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditLog).where(AuditLog.target == f"simulator:{payment_id}").order_by(AuditLog.id)
        )
        return [(row.action, row.detail) for row in rows]


async def test_a_payment_for_a_closed_order_is_refunded(dev_env, sessionmaker, sim_url, database_url, smtp) -> None:
    # Short clocks: the order expires, and its workflow closes, within seconds.
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=2,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=1,
            support_window_seconds=1,
        ),
    ) as stack:
        sku = await stack.product(1)
        order = await stack.ordered(sku)
        await stack.control(close_fail=True)  # so the buyer can still pay after the order is gone
        await stack.wait_status(order, "expired")
        await stack.handle(order).result()  # the order's workflow has closed
        payment_id = order["payment"]["payment_id"]
        assert (await stack.pay(order)).status_code == 200

        async def notify_logged() -> list[NotifyLog]:  # it finds no open order, and hands the money to a review
            async with stack.sessionmaker() as session:
                rows = select(NotifyLog).where(NotifyLog.order_id == order["order_id"]).order_by(NotifyLog.id)
                return list(await session.scalars(rows))

        logged = await eventually(notify_logged, message="the late notify to be logged")
        # The payment's notify; the refund's own notify may already follow it (the review is quick).
        assert [(row.outcome, row.detail) for row in logged[:1]] == [("stray", "order_closed")]
        assert [(row.outcome, row.detail) for row in logged[1:]] in ([], [("ignored", "refunded")])
        assert await _review(stack, payment_id) == "refunded"
        assert (await stack.sim_payment(payment_id))["status"] == "refunded"
        actions = await _audit(stack, payment_id)
        assert [action for action, _ in actions] == ["payment.stray_refunded"]
        assert actions[0][1]["reason"] == "order_closed" and actions[0][1]["found_by"] == "notify"
        view = await stack.view(order)
        assert view["status"] == "expired" and view["keys"] == []
        assert "stray_payment_refunded" in [e["stage"] for e in view["timeline"]]
        assert await stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}


async def test_a_payment_of_the_wrong_amount_is_refunded(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1, price_cents=990)
    order = await dev_stack.ordered(sku)
    payment_id = order["payment"]["payment_id"]
    paid = await dev_stack.sim.post(f"/pay/{payment_id}", json={"amount_cents": 900})  # the buyer sends too little
    assert paid.status_code == 200
    assert await _review(dev_stack, payment_id) == "refunded"
    payment = await dev_stack.sim_payment(payment_id)
    assert (payment["status"], payment["amount_cents"]) == ("refunded", 900)
    actions = await _audit(dev_stack, payment_id)
    assert [(action, detail["reason"]) for action, detail in actions] == [("payment.stray_refunded", "wrong_amount")]
    view = await dev_stack.view(order)
    assert view["status"] == "awaiting_payment" and view["keys"] == []
    assert "paid" not in [e["stage"] for e in view["timeline"]]
    # In the ledger: in and out of the gateway's clearing account; no merchant's account touched.
    async with dev_stack.sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT t.idem_key, a.owner, a.kind, e.amount FROM ledger_entries e "
                "JOIN ledger_transactions t ON t.id = e.transaction_id JOIN ledger_accounts a ON a.id = e.account_id "
                "WHERE t.idem_key LIKE :k ORDER BY e.id"
            ),
            {"k": f"%:simulator:{payment_id}"},
        )
        assert [tuple(r) for r in rows.all()] == [
            (f"stray:simulator:{payment_id}", "platform", "gateway_clearing:simulator", 900),
            (f"stray:simulator:{payment_id}", "platform", "world", -900),
            (f"stray_refund:simulator:{payment_id}", "platform", "world", 900),
            (f"stray_refund:simulator:{payment_id}", "platform", "gateway_clearing:simulator", -900),
        ]


async def test_a_wrong_amount_found_by_polling_is_refunded_by_the_order(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1, price_cents=990)
    order = await dev_stack.ordered(sku)
    payment_id = order["payment"]["payment_id"]
    await dev_stack.control(notify="drop")  # only the order's own poll can see it
    assert (await dev_stack.sim.post(f"/pay/{payment_id}", json={"amount_cents": 1990})).status_code == 200
    view = await dev_stack.wait_stage(order, "stray_payment")
    stray = next(e for e in view["timeline"] if e["stage"] == "stray_payment")
    assert stray["detail"] == {"payment_id": payment_id, "reason": "wrong_amount"}
    assert await _review(dev_stack, payment_id) == "refunded"
    assert (await dev_stack.sim_payment(payment_id))["status"] == "refunded"
    actions = await _audit(dev_stack, payment_id)
    assert [(action, detail["found_by"]) for action, detail in actions] == [("payment.stray_refunded", "poll")]
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"
    await dev_stack.record_history(order, "wrong_amount_polled_stray")


async def test_a_second_payment_for_a_paid_order_is_refunded(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    await dev_stack.pay(order)
    delivered = await dev_stack.wait_status(order, "delivered")
    again = await dev_stack.sim.post(f"/pay/{order['payment']['payment_id']}/again")  # the buyer pays twice
    second_id = again.json()["payment_id"]
    assert await _review(dev_stack, second_id) == "refunded"
    assert (await dev_stack.sim_payment(second_id))["status"] == "refunded"
    assert (await dev_stack.sim_payment(order["payment"]["payment_id"]))["status"] == "paid"
    actions = await _audit(dev_stack, second_id)
    assert [(action, detail["reason"]) for action, detail in actions] == [("payment.stray_refunded", "other_payment")]
    view = await dev_stack.view(order)
    assert (view["status"], view["keys"]) == ("delivered", delivered["keys"])
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}
