"""The one payment rule (miaofa.payments.proof.judge), and a payment signal that proves nothing."""

from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowHandle

from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.models import Order, Payment
from miaofa.payments.proof import FOREIGN, Judgement, Proof, judge
from tests.helpers.stack import Stack

PAID_AT = datetime(2026, 11, 25, tzinfo=UTC)


def _order(status: str = "awaiting_payment") -> tuple[Order, Payment]:
    order = Order(id="o1", amount_cents=990, currency="CNY", gateway="simulator", status=status)
    return order, Payment(order_id="o1", payment_id="p1", amount_cents=990, currency="CNY", status="pending")


def _proof(**changes) -> Proof:
    fields = dict(
        payment_id="p1",
        order_id="o1",
        status="paid",
        amount_cents=990,
        currency="CNY",
        paid_at=PAID_AT,
        merchant_id="m1",
    )
    return Proof(**{**fields, **changes})


@pytest.mark.parametrize(
    ("proof", "expected"),
    [
        (_proof(), Judgement(s.ACCEPTED)),
        (_proof(merchant_id=None), Judgement(s.ACCEPTED)),  # from our own authenticated query
        (_proof(merchant_id="m2"), Judgement(FOREIGN, "another merchant")),
        (_proof(status="pending"), Judgement(s.NOT_PAID, "pending")),
        (_proof(status="refunded"), Judgement(s.NOT_PAID, "refunded")),
        (_proof(amount_cents=989), Judgement(s.STRAY, "wrong_amount")),
        (_proof(currency="USD"), Judgement(s.STRAY, "wrong_amount")),
        (_proof(payment_id="p2"), Judgement(s.STRAY, "other_payment")),
    ],
)
def test_judge(proof: Proof, expected: Judgement) -> None:
    order, payment = _order()
    assert judge(order, payment, proof, gateway="simulator", merchant_id="m1") == expected


def test_judge_unknown_order_and_repeats() -> None:
    assert judge(None, None, _proof(), gateway="simulator", merchant_id="m1") == Judgement(s.STRAY, "unknown_order")
    order, payment = _order()
    payment.status = "paid"
    assert judge(order, payment, _proof(), gateway="simulator", merchant_id="m1") == Judgement(s.DUPLICATE)
    payment.status = "refunded"  # a replayed paid notify after a refund changes nothing
    assert judge(order, payment, _proof(), gateway="simulator", merchant_id="m1") == Judgement(s.DUPLICATE)


def test_judge_another_gateways_order() -> None:
    # Payment ids are unique per gateway only: the same ids at another gateway pay no order of ours.
    order, payment = _order()
    assert judge(order, payment, _proof(), gateway="epay") == Judgement(s.STRAY, "unknown_order")
    assert judge(order, payment, _proof(status="pending"), gateway="epay") == Judgement(s.NOT_PAID, "pending")
    # Without a gateway the proof came through the order's own (its poll, its logged notify).
    assert judge(order, payment, _proof(), gateway=None) == Judgement(s.ACCEPTED)


async def _stays_unpaid(handle: WorkflowHandle, stack: Stack, order: dict, signals: int) -> None:
    await stack.settled(order, signals=signals)  # the workflow has judged everything it was sent
    state = await handle.query(c.STATUS_QUERY, result_type=c.OrderState)
    assert (state.status, state.paid) == ("awaiting_payment", False)
    view = await stack.view(order)
    assert view["status"] == "awaiting_payment" and "paid" not in [e["stage"] for e in view["timeline"]]


async def test_a_payment_signal_is_not_proof_of_payment(dev_stack: Stack) -> None:
    sku = await dev_stack.product(2)
    victim = await dev_stack.ordered(sku, email="victim@example.com")
    other = await dev_stack.ordered(sku, email="other@example.com")
    await dev_stack.pay(other)  # a real, verified notify — for another order
    await dev_stack.wait_status(other, "delivered")
    from sqlalchemy import select

    from miaofa.db.models import NotifyLog

    async with dev_stack.sessionmaker() as session:
        others_notify = await session.scalar(select(NotifyLog.id).where(NotifyLog.order_id == other["order_id"]))
    handle = dev_stack.handle(victim)
    # Whoever reaches Temporal can send the signal; none of these makes the order paid.
    for forged in (
        c.PaymentNotified(notify_id=others_notify),
        c.PaymentNotified(notify_id=2**62),
        c.PaymentNotified(notify_id=None, source="reconcile"),
    ):
        await handle.signal(c.PAYMENT_SIGNAL, forged)
    await _stays_unpaid(handle, dev_stack, victim, signals=3)
    await dev_stack.pay(victim)  # and the real payment still goes through
    view = await dev_stack.wait_status(victim, "delivered")
    assert len(view["keys"]) == 1
