"""The platform's gateway clearing account against the gateway's statement, payment by payment.

`gateway_clearing:<gateway>` holds, as a debit, what the gateway keeps for the platform: each sale
puts its payment in, each refund takes it out, a stray payment passes through and back. So for every
payment in a statement whose order has settled, the clearing entries of that payment's transactions
must net to what the gateway says it still holds: the amount if paid, nothing if refunded. A payment
still on its way (its order not delivered or refunded yet) is left to the next run.
"""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.db.ledger_tables import LedgerAccount, LedgerEntry, LedgerTransaction
from miaofa.db.models import Merchant, Order, Payment
from miaofa.gateways.base import PaymentState
from miaofa.ledger.posting import PLATFORM
from miaofa.payments.reconcile import FLAG, Finding

SETTLED = (c.DELIVERED, c.REFUNDED)


async def differences(session: AsyncSession, gateway: str, entries: list[PaymentState]) -> list[Finding]:
    """The platform account's statement only (a direct merchant's money never passes the platform)."""
    order_ids = {entry.order_id for entry in entries if len(entry.order_id) <= 40}
    orders = {
        o.id: o
        for o in await session.scalars(
            select(Order)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .where(Order.id.in_(order_ids), Merchant.settlement == "platform")
        )
    }
    accepted = {
        p.order_id: p.payment_id for p in await session.scalars(select(Payment).where(Payment.order_id.in_(orders)))
    }
    findings = []
    for entry in entries:
        if entry.status not in ("paid", "refunded"):
            continue
        order = orders.get(entry.order_id)
        if accepted.get(entry.order_id) == entry.payment_id:  # the order's own payment
            if order is None or order.status not in SETTLED:
                continue
            keys = [f"sale:{order.id}", f"refund:{order.id}", f"unsold:{order.id}"]
        else:  # a stray: it passes through the clearing account and back, under its own keys
            keys = [f"stray:{gateway}:{entry.payment_id}", f"stray_refund:{gateway}:{entry.payment_id}"]
        held = await _clearing_net(session, gateway, entry.currency, keys)
        expected = entry.amount_cents if entry.status == "paid" else 0
        if held is None and order is None:
            continue  # a stray still being reviewed: its workflow posts it
        if (held or 0) != expected:
            findings.append(
                Finding(
                    "clearing_differs",
                    FLAG,
                    gateway,
                    entry.payment_id,
                    entry.order_id,
                    expected - (held or 0),
                    entry.currency,
                )
            )
    return findings


async def _clearing_net(session: AsyncSession, gateway: str, currency: str, keys: list[str]) -> int | None:
    """What these transactions left in the clearing account (None: none of them was posted)."""
    row = (
        await session.execute(
            select(func.count(LedgerTransaction.id.distinct()), func.coalesce(func.sum(LedgerEntry.amount), 0))
            .select_from(LedgerTransaction)
            .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
            .where(
                LedgerTransaction.idem_key.in_(keys),
                LedgerAccount.owner == PLATFORM,
                LedgerAccount.kind == f"gateway_clearing:{gateway}",
                LedgerAccount.currency == currency,
            )
        )
    ).one()
    return None if row[0] == 0 else int(row[1])
