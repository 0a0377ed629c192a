"""Gateway side effects: create, query, close and refund payments."""

from collections.abc import Awaitable

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from miaofa import orders
from miaofa import steps as s
from miaofa import contract as c
from miaofa.db.models import Payment
from miaofa.gateways.base import Gateway, GatewayError, PaymentRequest, PaymentState


def _unreachable(exc: GatewayError) -> ApplicationError:
    # Gateways fail often and recover; retries are expected, not alarming.
    return ApplicationError(str(exc), type="GatewayError", category=ApplicationErrorCategory.BENIGN)


class PaymentActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], gateways: dict[str, Gateway],
                 notify_base_url: str) -> None:
        self.sessionmaker = sessionmaker
        self.gateways = gateways
        self.notify_base_url = notify_base_url.rstrip("/")

    def _gateway(self, name: str) -> Gateway:
        gateway = self.gateways.get(name)
        if gateway is None:
            raise ApplicationError(f"gateway {name!r} is not configured", type="UnknownGateway", non_retryable=True)
        return gateway

    @activity.defn(name=s.CREATE_PAYMENT)
    async def create_payment(self, step: s.CreatePaymentStep) -> c.PaymentLink:
        """Idempotent on the order id at the gateway and here."""
        gateway = self._gateway(step.gateway)
        try:
            created = await gateway.create_payment(PaymentRequest(
                order_id=step.order_id, amount_cents=step.amount_cents, currency=step.currency,
                subject=step.subject, notify_url=f"{self.notify_base_url}/payments/{step.gateway}/notify",
                expires_at=step.expires_at))
        except GatewayError as exc:
            raise _unreachable(exc) from exc
        async with self.sessionmaker.begin() as session:
            await session.execute(insert(Payment).values(
                order_id=step.order_id, gateway=step.gateway, payment_id=created.payment_id,
                pay_url=created.pay_url, amount_cents=step.amount_cents, currency=step.currency,
            ).on_conflict_do_nothing(index_elements=["order_id"]))
            await orders.add_event(session, step.order_id, "payment_created", step.at, {"gateway": step.gateway})
        return c.PaymentLink(step.gateway, created.payment_id, created.pay_url)

    @activity.defn(name=s.QUERY_PAYMENT)
    async def query_payment(self, step: s.GatewayStep) -> s.PaymentSnapshot:
        return await _answer(self._gateway(step.gateway).query(step.payment_id, step.order_id, step.channel))  # type: ignore[arg-type]

    @activity.defn(name=s.CLOSE_PAYMENT)
    async def close_payment(self, step: s.GatewayStep) -> s.PaymentSnapshot:
        return await _answer(self._gateway(step.gateway).close(step.payment_id, step.order_id))

    @activity.defn(name=s.REFUND_PAYMENT)
    async def refund_payment(self, step: s.RefundStep) -> s.PaymentSnapshot:
        return await _answer(self._gateway(step.gateway).refund(step.payment_id, step.order_id, step.amount_cents,
                                                                step.refund_id))


async def _answer(call: Awaitable[PaymentState]) -> s.PaymentSnapshot:
    try:
        state = await call
    except GatewayError as exc:
        raise _unreachable(exc) from exc
    return s.PaymentSnapshot(state.status, state.amount_cents, state.currency, state.paid_at)
