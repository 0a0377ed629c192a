"""A deploy while orders are open: runs started on the released workflow finish on today's code.

The released order workflow (tests/helpers/released/order_v1, as production ran it before versioning)
opens orders; its worker stops; today's worker takes over with an empty cache, so it replays each
open run's history and carries on. The guarded fixes of this release are tested here too.
"""

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError

from miaofa import contract as c
from miaofa import steps as s
from tests.conftest import stack_settings
from tests.helpers.released.order_v1.order import OrderWorkflow as ReleasedOrderWorkflow
from tests.helpers.stack import Stack, running_stack, stages
from tests.helpers.waiting import eventually
from workflows.reconcile import ReconcileWorkflow
from workflows.stray import StrayPaymentWorkflow

RELEASED = (ReleasedOrderWorkflow, StrayPaymentWorkflow, ReconcileWorkflow)


async def _support(stack: Stack, order: dict, action: str) -> dict:
    answer = await stack.http.post(
        f"/support/orders/{order['order_id']}/{action}",
        headers=stack.support,
        json={"reason": f"upgrade test {action}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
async def upgrade_stack(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        start_worker=False,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=300,
            callback_grace_seconds=60,
            poll_interval_seconds=30,
            late_payment_watch_seconds=600,
        ),
    ) as stack:
        yield stack


async def test_orders_started_on_the_released_workflow_finish_on_todays(upgrade_stack: Stack) -> None:
    stack = upgrade_stack
    two, one = await stack.product(2), await stack.product(1)
    async with stack.worker(workflows=RELEASED):
        delivered = await stack.ordered(two, email="before-deploy@example.com")
        await stack.pay(delivered)
        await stack.wait_status(delivered, "delivered")
        awaiting = await stack.ordered(two, email="pays-during-deploy@example.com")
        await stack.control(close_fail=True)  # the gateway keeps the payment open after the cancel
        cancelled = await stack.ordered(one, email="pays-after-cancel@example.com")
        assert (await _support(stack, cancelled, "cancel"))["status"] == "cancelled"
        await stack.control(close_fail=False)
        rival = await stack.rival_buys(one)

    # The deploy: no worker runs while the buyers pay; the notifies wait in their workflows.
    assert (await stack.pay(awaiting)).status_code == 200
    assert (await stack.pay(cancelled)).status_code == 200
    async with stack.worker():
        view = await stack.wait_status(awaiting, "delivered", timeout=40)
        assert len(view["keys"]) == 1
        view = await stack.wait_status(cancelled, "refunded", timeout=40)
        assert stages(view)[-2:] == ["paid_after_expiry", "refunded"]
        assert (await stack.sim_payment(cancelled["payment"]["payment_id"]))["status"] == "refunded"
        assert (await _support(stack, delivered, "refund"))["status"] == "refunded"
        assert (await stack.sim_payment(delivered["payment"]["payment_id"]))["status"] == "refunded"
        for order in (delivered, awaiting, cancelled, rival):
            description = await stack.handle(order).describe()
            assert description.status == WorkflowExecutionStatus.RUNNING, order["order_id"]
    assert await stack.stock(two) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 1}
    assert await stack.stock(one) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}


@activity.defn(name=s.REFUND_PAYMENT)
async def refusing_refund(step: s.RefundStep) -> s.PaymentSnapshot:
    raise ApplicationError(
        "refund refused (simulated): the merchant account is frozen", type="GatewayRefused", non_retryable=True
    )


async def test_a_late_payment_whose_refund_is_refused_is_left_for_a_person(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        replace_activities=[refusing_refund],
        **stack_settings(database_url, smtp[0], payment_window_seconds=300, late_payment_watch_seconds=600),
    ) as stack:
        sku = await stack.product(1)
        await stack.control(close_fail=True)
        late = await stack.ordered(sku, email=f"late-{uuid.uuid4().hex[:8]}@example.com")
        await _support(stack, late, "cancel")
        await stack.control(close_fail=False)
        await stack.rival_buys(sku)
        await stack.pay(late)

        view = await stack.wait_stage(late, c.REFUND_REFUSED_STAGE, timeout=40)
        assert view["status"] == "paid"  # paid, not delivered: the paid-undelivered alert finds it
        refused = next(event for event in view["timeline"] if event["stage"] == c.REFUND_REFUSED_STAGE)
        assert refused["detail"] == {"reason": "paid after expiry and out of stock", "refusal": "GatewayRefused"}
        # The money is still the buyer's to get back.
        assert (await stack.sim_payment(late["payment"]["payment_id"]))["status"] == "paid"
        description = await stack.handle(late).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING  # not a failed run
        await _assert_audited(stack, late, "paid after expiry and out of stock")
        state = await stack.handle(late).query(c.STATUS_QUERY, result_type=c.OrderState)
        assert (state.status, state.paid, state.delivered_key_count) == ("paid", True, 0)
        await stack.record_history(late, "late_payment_refund_refused")


async def test_a_failed_delivery_whose_refund_is_refused_is_left_for_a_person(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    from sqlalchemy import text

    async with running_stack(
        dev_env, sessionmaker, sim_url, replace_activities=[refusing_refund], **stack_settings(database_url, smtp[0])
    ) as stack:
        sku = await stack.product(1)
        order = await stack.ordered(sku, email=f"broken-{uuid.uuid4().hex[:8]}@example.com")
        async with stack.sessionmaker.begin() as session:  # the reservation vanishes behind the saga's back
            await session.execute(
                text(
                    "UPDATE card_keys SET status = 'available', order_id = NULL, "
                    "reserved_at = NULL WHERE order_id = :id"
                ),
                {"id": order["order_id"]},
            )
        await stack.pay(order)
        view = await stack.wait_stage(order, c.REFUND_REFUSED_STAGE, timeout=40)
        assert view["status"] == "delivery_failed"
        assert stages(view)[-2:] == ["delivery_failed", c.REFUND_REFUSED_STAGE]
        description = await stack.handle(order).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        await _assert_audited(stack, order, "delivery failed (NoReservedKeys)")
        await stack.record_history(order, "delivery_failed_refund_refused")


async def test_a_sold_out_order_ends_with_one_result_type(dev_stack: Stack) -> None:
    from sqlalchemy import text

    sku = await dev_stack.product(1)
    async with dev_stack.sessionmaker.begin() as session:  # the key goes behind the stock hint's back
        await session.execute(
            text(
                "UPDATE card_keys SET status = 'refunded' WHERE product_id = (SELECT id FROM products WHERE sku = :sku)"
            ),
            {"sku": sku},
        )
    answer = await dev_stack.order(sku)
    assert (answer.status_code, answer.json()["error"]) == (409, "sold_out")

    async def started() -> list:
        return [execution async for execution in dev_stack.env.client.list_workflows(f'ProductSku = "{sku}"')]

    executions = await eventually(started, message="no workflow started for the order")
    assert len(executions) == 1  # the reservation in the workflow, not the hint, said sold out
    handle = dev_stack.env.client.get_workflow_handle(executions[0].id, result_type=c.OrderResult)
    result = await handle.result()
    assert (result.outcome, result.status) == (c.SOLD_OUT, "")


async def _assert_audited(stack: Stack, order: dict, reason: str) -> None:
    from sqlalchemy import select

    from miaofa.db.models import AuditLog

    async with stack.sessionmaker() as session:
        rows = (
            await session.scalars(
                select(AuditLog).where(AuditLog.target == order["order_id"], AuditLog.action == "order.refund_refused")
            )
        ).all()
    assert [(row.actor, row.detail) for row in rows] == [("system", {"reason": reason})]
