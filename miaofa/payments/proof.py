"""The one rule that says whether a proof of payment belongs to an order: gateway, merchant, payment
id, amount, currency (`judge`).

Every way money is seen — a verified notify, a poll, the buyer's check, a close that lost the race,
a stray's review, a reconciliation statement — is judged here, so they can never disagree.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from miaofa import steps as s
from miaofa.db.models import Order, Payment


@dataclass(frozen=True)
class Proof:
    """What a gateway says about one payment."""

    payment_id: str
    order_id: str
    status: str  # pending | paid | closed | refunded | unknown
    amount_cents: int
    currency: str
    paid_at: datetime | None
    merchant_id: str | None = None  # None: from our own authenticated call to the gateway

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["paid_at"] = self.paid_at.isoformat() if self.paid_at else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Proof":
        paid_at = data.get("paid_at")
        return cls(**{**data, "paid_at": datetime.fromisoformat(paid_at) if paid_at else None})


@dataclass(frozen=True)
class Judgement:
    verdict: str  # steps.ACCEPTED | DUPLICATE | STRAY | NOT_PAID, or FOREIGN
    reason: str = ""


FOREIGN = "foreign"  # another merchant's payment: not our money, nothing to refund
OTHER_ACCOUNT = "another account's order"  # one account's keys spoke for an order of another
NO_ORDER_HERE = "no order of this merchant"


@dataclass(frozen=True)
class Accounts:
    """Whose gateway account a notify was verified for, and whose the order it names is: the
    platform's (None) or a direct merchant's (its id)."""

    route: str | None
    order: str | None


def order_at(order: Order | None, gateway: str | None) -> Order | None:
    """The order, when a payment at `gateway` can be its: payment ids are unique per gateway only, so
    an order placed through another gateway is no order of this payment's.

    gateway is None for a proof that came through the order's own gateway (its poll, its logged notify).
    """
    return order if order is not None and gateway in (None, order.gateway) else None


def judge(
    order: Order | None,
    payment: Payment | None,
    proof: Proof,
    *,
    gateway: str | None,
    merchant_id: str | None = None,
    accounts: Accounts | None = None,
) -> Judgement:
    """The rule: a paid proof is the order's payment when gateway, merchant, payment id, amount and
    currency match.

    merchant_id is None for a proof whose merchant was already checked (a logged notify) or that came
    from our own authenticated call to the gateway. accounts (a notify): the keys of one account
    never speak for an order of another, and a direct merchant's account has no strays of ours (its
    money is its own; it refunds it there).
    """
    if merchant_id is not None and proof.merchant_id is not None and proof.merchant_id != merchant_id:
        return Judgement(FOREIGN, "another merchant")
    if accounts is not None:
        if order is not None and accounts.order != accounts.route:
            return Judgement(FOREIGN, OTHER_ACCOUNT)
        if order is None and accounts.route is not None:
            return Judgement(FOREIGN, NO_ORDER_HERE)
    if proof.status != "paid":
        return Judgement(s.NOT_PAID, proof.status)
    order = order_at(order, gateway)
    if order is None:
        return Judgement(s.STRAY, "unknown_order")
    if payment is None or proof.payment_id != payment.payment_id or proof.order_id != order.id:
        return Judgement(s.STRAY, "other_payment")
    if proof.amount_cents != order.amount_cents or proof.currency != order.currency:
        return Judgement(s.STRAY, "wrong_amount")
    if payment.status in ("paid", "refunded"):
        return Judgement(s.DUPLICATE)
    return Judgement(s.ACCEPTED)
