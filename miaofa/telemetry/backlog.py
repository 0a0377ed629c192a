"""What ops watch of orders, read from the rows the saga commits: one order's stage times (for
the stage histograms) and the backlogs that must stay empty (for the gauges the alerts read), the
withdrawals waiting for platform finance's review among them."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import contract as c
from miaofa.db.models import NotifyLog, Order, OrderEvent, ReconcileFinding
from miaofa.db.payout_tables import Withdrawal


@dataclass(frozen=True)
class DeliveryTimes:
    gateway: str
    paid_at: datetime | None  # the gateway's own time of payment
    notified_at: datetime | None  # when its verified notify reached us, if a notify made the order paid


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest: datetime | None


async def delivery_times(session: AsyncSession, order_id: str) -> DeliveryTimes | None:
    """One round trip: the order's gateway and paid_at, and the notify that made it paid."""
    notified = (
        select(func.min(NotifyLog.received_at))
        .where(NotifyLog.order_id == order_id, NotifyLog.outcome == "accepted")
        .scalar_subquery()
    )
    source = (
        select(OrderEvent.detail["source"].astext)
        .where(OrderEvent.order_id == order_id, OrderEvent.stage == "paid")
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await session.execute(select(Order.gateway, Order.paid_at, notified, source).where(Order.id == order_id))
    ).one_or_none()
    if row is None:
        return None
    gateway, paid_at, notified_at, paid_by = row
    return DeliveryTimes(gateway, paid_at, notified_at if paid_by == "notify" else None)


async def paid_not_delivered(session: AsyncSession) -> Backlog:
    """Orders the gateway says are paid whose keys have not gone out (status stays `paid` only while
    delivery runs: for milliseconds, unless something is stuck)."""
    count, oldest = (
        await session.execute(select(func.count(), func.min(Order.paid_at)).where(Order.status == c.PAID))
    ).one()
    return Backlog(count, oldest)


async def unrepaired_findings(session: AsyncSession, seen_since: datetime) -> Backlog:
    """Reconcile findings still reported by a recent run: a repaired mismatch is no longer seen."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(ReconcileFinding.first_seen_at)).where(
                ReconcileFinding.last_seen_at >= seen_since
            )
        )
    ).one()
    return Backlog(count, oldest)


async def withdrawals_in_review(session: AsyncSession) -> Backlog:
    """Withdrawals waiting for a person of platform finance, and since when they were asked for (a
    review starts within a second of the request)."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(Withdrawal.created_at)).where(Withdrawal.status == c.WITHDRAWAL_IN_REVIEW)
        )
    ).one()
    return Backlog(count, oldest)


async def withdrawals_unsettled(session: AsyncSession) -> Backlog:
    """Withdrawals approved or sent to a rail whose outcome is not final yet (the rail has not said,
    or the payee has not confirmed), and since when they were asked for."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(Withdrawal.created_at)).where(
                Withdrawal.status.in_((c.WITHDRAWAL_APPROVED, c.WITHDRAWAL_SUBMITTED))
            )
        )
    ).one()
    return Backlog(count, oldest)
