"""Order, inventory and coupon side effects of the saga, each one PostgreSQL transaction."""

import logging
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.db import transaction
from miaofa import audit, catalog, coupons, inventory, orders
from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.models import Order
from miaofa.errors import InvalidInput
from miaofa.ledger import order_money
from miaofa.messaging import outbox
from miaofa.payments import records as payments
from miaofa.telemetry import backlog as stages
from miaofa.telemetry.metrics import WorkerMetrics

log = logging.getLogger("miaofa.activities.orders")
# The refund's reason on the order's timeline, which the buyer reads.
OUT_OF_STOCK_REASON = "paid after expiry and out of stock"
COUPON_ELSEWHERE_REASON = "paid after expiry; its coupon was used by another order"
ORDERS = cast(Table, Order.__table__)


class SoldOut(Exception):
    """Not enough stock: roll the whole opening back."""


class OrderActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: WorkerMetrics | None = None,
        coupon_payer: str = "platform",
    ) -> None:
        self.sessionmaker = sessionmaker
        self.metrics = metrics or WorkerMetrics()
        self.coupon_payer = coupon_payer  # who pays for a late-delivery coupon's discount

    @activity.defn(name=s.OPEN_ORDER)
    async def open_order(self, step: s.OpenOrderStep) -> s.OpenedOrder:
        """Insert the order, redeem its coupon and reserve its keys — all or nothing."""
        try:
            async with transaction(self.sessionmaker) as session:
                existing = await session.scalar(select(Order.amount_cents).where(Order.id == step.order_id))
                if existing is not None:  # a retried step after a commit we never heard back from
                    return s.OpenedOrder(c.OPENED, existing)
                amount = step.unit_price_cents * step.quantity
                # The product names the shop: the order, its coupon and its keys are that merchant's
                # (composite foreign keys refuse anything else).
                merchant_id = await catalog.merchant_of(session, step.product_id)
                coupon = None
                if step.coupon_code:
                    coupon = await coupons.redeem(
                        session, step.coupon_code, step.order_id, step.at, step.currency, merchant_id
                    )
                    amount = coupons.discounted(amount, coupon)
                # Core statements, not the ORM's unit of work: this is the hot path of a sale.
                await session.execute(
                    insert(ORDERS).values(
                        id=step.order_id,
                        merchant_id=merchant_id,
                        product_id=step.product_id,
                        sku=step.sku,
                        quantity=step.quantity,
                        email=step.email,
                        buyer_hash=step.buyer_hash,
                        amount_cents=amount,
                        list_cents=step.unit_price_cents * step.quantity,
                        currency=step.currency,
                        gateway=step.gateway,
                        status=step.status,
                        coupon_id=coupon.id if coupon else None,
                        expires_at=step.expires_at,
                        created_at=step.at,
                        lang=step.lang,
                    )
                )
                key_ids = await inventory.reserve(
                    session,
                    product_id=step.product_id,
                    order_id=step.order_id,
                    quantity=step.quantity,
                    at=step.at,
                    new_order=True,
                )
                if len(key_ids) < step.quantity:
                    raise SoldOut
                # A new order: its stages are written once, in one statement.
                stages = [("created", {}), *([(c.RISK_STAGE, step.risk)] if step.risk else [])]
                stages.append(("reserved", {"keys": str(len(key_ids))}))
                if coupon:
                    stages.append(("coupon_redeemed", {}))
                await orders.add_new_events(session, step.order_id, step.at, stages)
            self.metrics.reserved(step.at)
            return s.OpenedOrder(c.OPENED, amount)
        except SoldOut:
            return s.OpenedOrder(c.SOLD_OUT, detail="not enough stock for this quantity")
        except InvalidInput as exc:
            return s.OpenedOrder(c.COUPON_INVALID, detail=exc.detail, error=exc.error)

    @activity.defn(name=s.RECORD_STAGE)
    async def record_stage(self, step: s.StageStep) -> None:
        async with transaction(self.sessionmaker) as session:
            await orders.add_event(session, step.order_id, step.stage, step.at, step.detail, once=False)
            if step.status:
                values = {"expires_at": step.expires_at} if step.expires_at else {}
                await orders.move(session, step.order_id, step.status, step.at, **values)
            if step.audit_actor:
                audit.record(
                    session,
                    step.audit_actor,
                    f"order.{step.stage}",
                    step.order_id,
                    reason=step.detail.get("reason", ""),
                )

    @activity.defn(name=s.ACCEPT_PAYMENT)
    async def accept_payment(self, step: s.AcceptPaymentStep) -> s.PaymentVerdict:
        async with transaction(self.sessionmaker) as session:
            verdict = await payments.accept_proof(session, step)
            # The order accept_proof locked is in the session already: no second query for its gateway.
            order = await session.get(Order, step.order_id) if verdict.verdict == s.ACCEPTED else None
            gateway = order.gateway if order is not None else ""
        if verdict.verdict == s.ACCEPTED:
            self.metrics.paid(gateway, step.source)
        return verdict

    @activity.defn(name=s.DELIVER_KEYS)
    async def deliver_keys(self, step: s.DeliverStep) -> s.Delivered:
        async with transaction(self.sessionmaker) as session:
            key_ids, times = await self._commit_sale(session, step.order_id, step.at)
        if times is not None:
            self.metrics.delivered(times)
        return s.Delivered(key_ids)

    @activity.defn(name=s.ACCEPT_AND_DELIVER)
    async def accept_and_deliver(self, step: s.AcceptAndDeliverStep) -> s.AcceptedAndDelivered:
        """ACCEPT_PAYMENT and, for the order's payment, DELIVER_KEYS in one transaction. A delivery that
        cannot be made rolls the acceptance back too: the workflow then takes the two steps apart."""
        key_ids: list[int] = []
        times = None
        async with transaction(self.sessionmaker) as session:
            verdict = await payments.accept_proof(session, step.proof)
            # DUPLICATE: a retry of this step whose first attempt committed (its answer was lost).
            if verdict.verdict in (s.ACCEPTED, s.DUPLICATE):
                key_ids, times = await self._commit_sale(session, step.proof.order_id, step.at)
            order = await session.get(Order, step.proof.order_id) if verdict.verdict == s.ACCEPTED else None
            gateway = order.gateway if order is not None else ""
        if verdict.verdict == s.ACCEPTED:
            self.metrics.paid(gateway, step.proof.source)
        if times is not None:
            self.metrics.delivered(times)
        return s.AcceptedAndDelivered(verdict, key_ids)

    async def _commit_sale(
        self, session: AsyncSession, order_id: str, at: datetime
    ) -> tuple[list[int], stages.DeliveryTimes | None]:
        """The delivery's writes: the coupon spent, the keys sold, the order delivered, the sale booked."""
        # The coupon is spent in the transaction that commits the keys: one delivered order per coupon.
        if not await coupons.spend(session, order_id, at):
            raise ApplicationError(
                "the order's coupon is held by another order", type=s.COUPON_SPENT, non_retryable=True
            )
        key_ids = await inventory.commit_sold(session, order_id, at)
        if not key_ids:
            # A broken invariant, not an outage: retrying cannot conjure keys.
            raise ApplicationError(
                "the order holds no reserved keys to deliver", type=s.NO_RESERVED_KEYS, non_retryable=True
            )
        await orders.move(session, order_id, c.DELIVERED, at, delivered_at=at)
        first = await orders.add_event(session, order_id, "delivered", at, {"keys": str(len(key_ids))})
        times = await stages.delivery_times(session, order_id) if first else None
        # Last: it locks the shared accounts, held until this commit.
        await order_money.post_sale(session, order_id, at, coupon_payer=self.coupon_payer)
        return key_ids, times

    @activity.defn(name=s.RELEASE_STOCK)
    async def release_stock(self, step: s.ReleaseStep) -> None:
        async with transaction(self.sessionmaker) as session:
            released = await inventory.release(session, step.order_id)
            await coupons.give_back(session, step.order_id)
            await orders.move(session, step.order_id, step.status, step.at)
            detail = {"released": str(released), **({"actor": step.actor} if step.actor != "system" else {})}
            if step.reason:
                detail["reason"] = step.reason
            first = await orders.add_event(session, step.order_id, step.status, step.at, detail)
        if first:
            self.metrics.outcome(step.status)

    @activity.defn(name=s.RESERVE_AGAIN)
    async def reserve_again(self, step: s.DeliverStep) -> s.ReservedAgain:
        """A payment after the window: the keys and the order's coupon again, both or neither.

        The price was discounted by a coupon the expired order gave back: if another order holds it
        now, this payment is refunded, never delivered below the price."""
        try:
            async with transaction(self.sessionmaker) as session:
                order = await orders.get_order(session, step.order_id)
                if order.coupon_id is not None and not await coupons.claim(session, order.coupon_id, order.id, step.at):
                    return s.ReservedAgain(s.COUPON_ELSEWHERE, COUPON_ELSEWHERE_REASON)
                key_ids = await inventory.reserve(
                    session, product_id=order.product_id, order_id=order.id, quantity=order.quantity, at=step.at
                )
                if len(key_ids) < order.quantity:
                    raise SoldOut  # rolls the coupon's claim back too
                await orders.add_event(session, step.order_id, "reserved_again", step.at)
                return s.ReservedAgain(s.RESERVED)
        except SoldOut:
            return s.ReservedAgain(s.OUT_OF_STOCK, OUT_OF_STOCK_REASON)

    @activity.defn(name=s.REFUND_KEYS)
    async def refund_keys(self, step: s.RefundKeysStep) -> None:
        async with transaction(self.sessionmaker) as session:
            await inventory.mark_refunded(session, step.order_id)
            await inventory.release(session, step.order_id)
            await orders.move(session, step.order_id, c.REFUNDED, step.at)
            await payments.mark_refunded(session, step.order_id, step.at)
            await order_money.post_refund(session, step.order_id, step.at)
            first = await orders.add_event(
                session, step.order_id, "refunded", step.at, {"reason": step.reason[:200], "actor": step.actor[:40]}
            )
            audit.record(session, step.actor, "order.refund", step.order_id, reason=step.reason)
        if first:
            self.metrics.outcome(c.REFUNDED)
            self.metrics.refunded("order")

    @activity.defn(name=s.ISSUE_COUPON)
    async def issue_coupon(self, step: s.CouponStep) -> s.IssuedCoupon:
        async with transaction(self.sessionmaker) as session:
            coupon = await coupons.issue_for_late_delivery(session, step.order_id, step.reason, step.at)
            first = await orders.add_event(session, step.order_id, "coupon", step.at, {"reason": step.reason})
            if first:
                outbox.emit(session, outbox.Event.COUPON_ISSUED, step.order_id, step.at)
        if first:
            self.metrics.coupon_issued()
        return s.IssuedCoupon(coupon.id)
