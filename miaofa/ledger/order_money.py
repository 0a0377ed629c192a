"""An order's money in the ledger: its sale, its refund, and the hold between.

A sale is posted when the keys are committed, in the same database transaction: a payment refunded
without a delivery never becomes the merchant's. The fee and the split are fixed then, from the
merchant's fee at that moment; a later change of the fee never rewrites a posted sale (the refund
reverses exactly what the sale posted). Keys: sale:<order>, refund:<order>, release:<hold>.

For a `platform` merchant (gross = what the buyer paid + a platform-paid discount):
    sale    gateway_clearing:<gw> Dr paid, compensation Dr discount / pending (or available) Cr net, fees Cr fee
    refund  the reverse, the merchant's share taken from pending while held, else available, else debt
For a `direct` merchant the buyer paid the merchant: only the fee posts (payable Dr / fees Cr).
A refunded order that never sold posts its payment passing through (unsold:, refund:) so the
clearing account shows it and stays balanced; no merchant account is touched."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.ledger_tables import LedgerAccount, LedgerEntry, LedgerHold, LedgerTransaction
from miaofa.db.models import Coupon, Merchant, Order
from miaofa.ledger.posting import PLATFORM, begin, credit, debit, lock, post, write


@dataclass(frozen=True)
class Split:
    paid: int  # through the gateway
    discount: int  # a late-delivery coupon the platform pays for
    fee: int
    net: int  # the merchant's share


def split(paid: int, list_cents: int | None, fee_bps: int, platform_pays_discount: bool) -> Split:
    """Integer cents; the fee is rounded down (in the merchant's favour)."""
    discount = max(0, (list_cents or paid) - paid) if platform_pays_discount else 0
    gross = paid + discount
    fee = gross * fee_bps // 10_000
    return Split(paid, discount, fee, gross - fee)


async def post_sale(session: AsyncSession, order_id: str, at: datetime, *, coupon_payer: str = "platform") -> None:
    """The order's sale, once; nothing for a free order. Two round trips: what it needs, the posting."""
    row = (
        await session.execute(
            select(
                Order.amount_cents,
                Order.list_cents,
                Order.currency,
                Order.gateway,
                Merchant.id,
                Merchant.settlement,
                Merchant.fee_bps,
                Merchant.hold_seconds,
                Coupon.issued_for_order_id,
            )
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Coupon, Coupon.id == Order.coupon_id)
            .where(Order.id == order_id)
        )
    ).one()
    # A coupon issued for another order's late delivery: the platform's promise, the platform's cost.
    platform_pays = row.issued_for_order_id is not None and coupon_payer == "platform"
    money = split(row.amount_cents, row.list_cents, row.fee_bps, platform_pays)
    if money.paid + money.discount == 0:
        return
    key, m = f"sale:{order_id}", row.id
    if row.settlement == "direct":
        await post(
            session,
            key=key,
            kind="fee",
            currency=row.currency,
            lines=[debit(m, "payable", money.fee), credit(PLATFORM, "fees", money.fee)],
            at=at,
            merchant_id=m,
            order_id=order_id,
            memo=f"fee {row.fee_bps} bps on {money.paid + money.discount}",
        )
        return
    held = row.hold_seconds > 0
    transaction_id = await post(
        session,
        key=key,
        kind="sale",
        currency=row.currency,
        lines=[
            debit(PLATFORM, f"gateway_clearing:{row.gateway}", money.paid),
            debit(PLATFORM, "compensation", money.discount),
            credit(m, "pending" if held else "available", money.net),
            credit(PLATFORM, "fees", money.fee),
        ],
        at=at,
        merchant_id=m,
        order_id=order_id,
        memo=f"fee {row.fee_bps} bps",
    )
    if transaction_id is not None and held and money.net > 0:
        await session.execute(
            insert(LedgerHold).values(
                merchant_id=m,
                order_id=order_id,
                currency=row.currency,
                amount=money.net,
                remaining=money.net,
                reason=f"the platform's hold of {row.hold_seconds} s after a sale",
                release_at=at + timedelta(seconds=row.hold_seconds),
            )
        )


async def post_refund(session: AsyncSession, order_id: str, at: datetime) -> None:
    """The order's refund, once: the exact reverse of its sale, or its payment passing through."""
    order = await session.get(Order, order_id)
    assert order is not None
    sale = await _entries_of(session, f"sale:{order_id}")
    if sale is None:
        if order.amount_cents > 0 and order.gateway:
            await _passed_through(session, order, at)
        return
    key, m = f"refund:{order_id}", order.merchant_id
    transaction_id = await begin(session, key=key, kind="refund", at=at, merchant_id=m, order_id=order_id)
    if transaction_id is None:
        return
    by_account = {(owner, kind): amount for owner, kind, amount in sale}
    net = -sum(a for (o, k), a in by_account.items() if o == m and k in ("pending", "available"))
    reversal = [debit(o, k, -a) for (o, k), a in by_account.items() if o != m or k not in ("pending", "available")]
    if (m, "payable") in by_account:  # a direct merchant's fee
        accounts = await lock(session, order.currency, list(by_account))
        await write(session, transaction_id, order.currency, accounts, reversal)
        return
    hold = await session.scalar(select(LedgerHold).where(LedgerHold.order_id == order_id).with_for_update())
    accounts = await lock(session, order.currency, [*by_account, (m, "pending"), (m, "available"), (m, "debt")])
    from_pending = min(net, hold.remaining if hold is not None else 0, accounts[(m, "pending")].balance)
    from_available = min(net - from_pending, max(0, accounts[(m, "available")].balance))
    into_debt = net - from_pending - from_available
    if hold is not None:
        hold.remaining -= from_pending
    await write(
        session,
        transaction_id,
        order.currency,
        accounts,
        [
            *reversal,
            debit(m, "pending", from_pending),
            debit(m, "available", from_available),
            debit(m, "debt", into_debt),
        ],
    )


async def _passed_through(session: AsyncSession, order: Order, at: datetime) -> None:
    await passed_through(
        session,
        order.gateway,
        (f"unsold:{order.id}", f"refund:{order.id}"),
        order.amount_cents,
        order.currency,
        at,
        merchant_id=order.merchant_id,
        order_id=order.id,
    )


async def passed_through(
    session: AsyncSession,
    gateway: str,
    keys: tuple[str, str],
    amount: int,
    currency: str,
    at: datetime,
    merchant_id: str | None = None,
    order_id: str | None = None,
) -> None:
    """A payment in and out again (refunded without a sale, or a stray): the clearing account sees
    both, no merchant account anything."""
    if amount <= 0:
        return
    clearing = f"gateway_clearing:{gateway}"
    for key, kind, lines in (
        (keys[0], "unsold", [debit(PLATFORM, clearing, amount), credit(PLATFORM, "world", amount)]),
        (keys[1], "refund", [debit(PLATFORM, "world", amount), credit(PLATFORM, clearing, amount)]),
    ):
        await post(
            session,
            key=key[:120],
            kind=kind,
            currency=currency,
            lines=lines,
            at=at,
            merchant_id=merchant_id,
            order_id=order_id,
            memo="a payment refunded without a sale",
        )


async def _entries_of(session: AsyncSession, key: str) -> list[tuple[str, str, int]] | None:
    """The (owner, kind, amount) of a posted transaction's entries; None when it was never posted."""
    transaction_id = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.idem_key == key))
    if transaction_id is None:
        return None
    rows = await session.execute(
        select(LedgerAccount.owner, LedgerAccount.kind, LedgerEntry.amount)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id == transaction_id)
    )
    return [(o, k, a) for o, k, a in rows.all()]


async def release_due(session: AsyncSession, now: datetime, batch: int = 500) -> int:
    """Move what is due from pending to available, hold by hold (release:<hold>); skips holds a
    refund is changing right now (the next run takes them). The number released."""
    holds = list(
        await session.scalars(
            select(LedgerHold)
            .where(LedgerHold.released_at.is_(None), LedgerHold.release_at <= now)
            .order_by(LedgerHold.release_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    for hold in holds:
        amount, hold.remaining, hold.released_at = hold.remaining, 0, now
        if not amount:  # all of it clawed back by a refund: nothing to move
            continue
        await post(
            session,
            key=f"release:{hold.id}",
            kind="release",
            currency=hold.currency,
            lines=[debit(hold.merchant_id, "pending", amount), credit(hold.merchant_id, "available", amount)],
            at=now,
            merchant_id=hold.merchant_id,
            order_id=hold.order_id,
            memo=hold.reason,
        )
    return len(holds)
