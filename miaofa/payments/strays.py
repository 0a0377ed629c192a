"""A payment no open order took (a stray): whose it is, and what becomes of it.

An open order's own payment goes back to that order (it asks its gateway again); anything else that
is paid is refunded. The review workflow (workflows/stray.py) runs it; the activity asks the gateway
and nudges the order, this module decides.
"""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa import steps as s
from miaofa.gateways.base import PaymentState
from miaofa.payments.proof import Proof, judge
from miaofa.payments.records import order_and_payment


@dataclass(frozen=True)
class StrayDecision:
    outcome: s.StrayReview  # what becomes of the payment, unless `order_id` takes it
    order_id: str | None = None  # the order it is the payment of: nudge it first; it may still be open


def as_notified(stray: c.StrayPayment) -> PaymentState:
    """The payment as its verified notify told it: the proof when the gateway's query proves nothing."""
    return PaymentState(stray.payment_id, stray.order_id, "paid", stray.amount_cents, stray.currency)


async def review(session: AsyncSession, stray: c.StrayPayment, state: PaymentState) -> StrayDecision:
    """Judge the gateway's answer about a stray with the one payment rule."""
    if state.status != "paid":
        return StrayDecision(s.StrayReview("nothing", detail=f"the gateway says {state.status}"))
    proof = Proof(state.payment_id, state.order_id, "paid", state.amount_cents, state.currency, state.paid_at)
    order, payment = await order_and_payment(session, state.order_id)
    judgement = judge(order, payment, proof, gateway=stray.gateway)
    if order is not None and judgement.verdict in (s.ACCEPTED, s.DUPLICATE):
        if judgement.verdict == s.DUPLICATE and order.status == c.DELIVERED:
            return StrayDecision(s.StrayReview("nothing", detail="its order took it and was delivered"), order.id)
        return StrayDecision(s.StrayReview("refund", state.amount_cents, "its order has closed"), order.id)
    return StrayDecision(s.StrayReview("refund", state.amount_cents, judgement.reason))
