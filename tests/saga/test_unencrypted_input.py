"""Issue 17, N5 (b): a payload that did not come through the codec is nobody's word.

The attack: a DNS-rebinding page wrote through the dev Temporal UI a refund Update whose input was
plain JSON (`{"reason":"rebinding","actor":"evil-page"}`): the codec passed it through, the order
was refunded, and no support audit row was written. Any Temporal client without the codec (the UI,
`temporal` without --codec-endpoint, a local user on the frontend port) could do the same. Now a
payload in clear decodes to null: a support Update without input is refused by its validator, and a
signal in clear is a bare hint that cannot fail or wedge the order.
"""

import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from miaofa import contract as c
from tests.helpers.stack import Stack


async def _clear_client(stack: Stack) -> Client:
    """A Temporal client with the SDK's default converter: JSON in clear, as the UI and a bare CLI send it."""
    return await Client.connect(
        stack.env.client.service_client.config.target_host, namespace=stack.env.client.namespace
    )


async def _delivered(stack: Stack) -> dict:
    order = await stack.ordered(await stack.product(1), email=f"clear-{uuid.uuid4().hex[:8]}@example.com")
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    return order


async def _task_failures(stack: Stack, order: dict) -> int:
    history = await stack.handle(order).fetch_history()
    return sum(event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for event in history.events)


async def test_a_support_update_in_clear_is_refused_and_moves_no_money(dev_stack: Stack) -> None:
    order = await _delivered(dev_stack)
    clear = (await _clear_client(dev_stack)).get_workflow_handle(f"order-{order['order_id']}")
    for update in (c.REFUND_UPDATE, c.RESEND_UPDATE, c.CANCEL_UPDATE):
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await clear.execute_update(update, {"reason": "rebinding", "actor": "evil-page"})
        cause = failed.value.cause
        # The message is encrypted (the failure converter encodes it); the code is in clear.
        assert isinstance(cause, ApplicationError) and (cause.type, cause.non_retryable) == ("missing_input", True)
    view = await dev_stack.view(order)
    assert view["status"] == "delivered" and len(view["keys"]) == 1
    assert "refunded" not in [event["stage"] for event in view["timeline"]]
    assert "resent" not in [event["stage"] for event in view["timeline"]]
    assert (await dev_stack.sim_payment(order["payment"]["payment_id"]))["status"] == "paid"

    # Through the codec (the API's client), the same request says what it needs, in words.
    with pytest.raises(WorkflowUpdateFailedError) as bare:
        await dev_stack.handle(order).execute_update(c.REFUND_UPDATE, result_type=c.SupportResult)
    assert isinstance(bare.value.cause, ApplicationError)
    assert bare.value.cause.message == (
        "refund needs its input, encrypted through the codec (--codec-endpoint), "
        'e.g. {"reason": "…", "actor": "your name"}'
    )
    assert await _task_failures(dev_stack, order) == 0


async def test_a_signal_in_clear_neither_fails_nor_wedges_the_order(dev_stack: Stack) -> None:
    order = await dev_stack.ordered(await dev_stack.product(1), email=f"clear-{uuid.uuid4().hex[:8]}@example.com")
    clear = (await _clear_client(dev_stack)).get_workflow_handle(f"order-{order['order_id']}")
    for payload in ({"notify_id": 1}, {"notify_id": "x"}, "garbage", None):
        await clear.signal(c.PAYMENT_SIGNAL, payload)
    # At most a look at the gateway: nothing was paid, so the order still waits …
    await dev_stack.settled(order, signals=4)
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"
    # … and goes on as ever once the buyer pays.
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    assert await _task_failures(dev_stack, order) == 0
