"""Gateway side effects: create, query, close and refund payments; review stray payments."""

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.db import transaction
from miaofa import contract as c
from miaofa import steps as s
from miaofa.crypto.vault import Vault
from miaofa.direct.book import GatewayBook
from miaofa.gateways.base import (
    Gateway,
    GatewayError,
    GatewayRefused,
    PaymentRequest,
    PaymentState,
    QueryChannel,
    Unsupported,
)
from miaofa.ledger import order_money
from miaofa.payments import records, strays
from miaofa.telemetry.metrics import WorkerMetrics
from miaofa.temporal.signals import signal_payment

# How long after the payment window the gateway's return link still shows the order's status.
RETURN_TICKET_GRACE = timedelta(hours=1)

GATEWAY_UNAVAILABLE = "GatewayUnavailable"


def _gateway_failed(exc: GatewayError) -> ApplicationError:
    if isinstance(exc, Unsupported):  # no such operation at this gateway: asking again changes nothing
        return ApplicationError(str(exc), type="Unsupported", non_retryable=True)
    if isinstance(exc, GatewayRefused):  # the gateway said no: asking again changes nothing
        return ApplicationError(str(exc), type="GatewayRefused", non_retryable=True)
    # Gateways fail often and recover; retries are expected, not alarming.
    return ApplicationError(str(exc), type="GatewayError", category=ApplicationErrorCategory.BENIGN)


class PaymentActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateways: dict[str, Gateway],
        notify_base_url: str,
        shop_url: str,
        vault: Vault,
        temporal: Client | None = None,
        metrics: WorkerMetrics | None = None,
        book: GatewayBook | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.metrics = metrics or WorkerMetrics()
        self.gateways = gateways
        self.notify_base_url = notify_base_url.rstrip("/")
        self.shop_url = shop_url.rstrip("/")
        self.vault = vault
        self.temporal = temporal
        self.book = book  # None: every order is the platform's (no direct merchants, no database)

    async def _account(self, order_id: str) -> str | None:
        return await self.book.account(order_id) if self.book is not None else None

    async def _gateway(self, name: str, order_id: str) -> Gateway:
        """The adapter of the account that holds this order's payment."""
        return await self._adapter(name, await self._account(order_id))

    async def _adapter(self, name: str, account: str | None) -> Gateway:
        """The platform's adapter (account None), or a direct merchant's own."""
        if self.book is None:
            gateway = self.gateways.get(name)
        else:
            gateway = await self.book.for_account(name, account)
        if gateway is None:
            raise ApplicationError(f"gateway {name!r} is not configured", type="UnknownGateway", non_retryable=True)
        return gateway

    @activity.defn(name=s.CREATE_PAYMENT)
    async def create_payment(self, step: s.CreatePaymentStep) -> c.PaymentLink:
        """Idempotent on the order id at the gateway and here."""
        account = await self._account(step.order_id)
        gateway = await self._adapter(step.gateway, account)
        # A direct merchant's notifies come to a URL that names it, and are verified with its keys only.
        notify_url = f"{self.notify_base_url}/payments/{step.gateway}/notify"
        if account is not None:
            notify_url += f"/m/{account}"
        # The buyer's browser comes back with a return ticket, never the order token: the pay link (and
        # so this URL) is in every Idempotency-Key replay, and email + key are no proof of being the buyer.
        # The ticket depends only on the step, so a retried create asks the gateway for the same URL.
        ticket = self.vault.return_ticket(step.order_id, step.expires_at + RETURN_TICKET_GRACE)
        return_url = f"{self.shop_url}/o/{step.order_id}/return?ticket={ticket}"
        try:
            created = await gateway.create_payment(
                PaymentRequest(
                    order_id=step.order_id,
                    amount_cents=step.amount_cents,
                    currency=step.currency,
                    subject=step.subject,
                    notify_url=notify_url,
                    expires_at=step.expires_at,
                    return_url=return_url,
                )
            )
        except GatewayError as exc:
            failed = _gateway_failed(exc)
            if step.retry_until is not None and datetime.now(UTC) >= step.retry_until and not failed.non_retryable:
                # The workflow's retry budget is spent: an outage, not a blip (the order is cancelled).
                raise ApplicationError(str(exc), type=GATEWAY_UNAVAILABLE, non_retryable=True) from exc
            raise failed from exc
        async with transaction(self.sessionmaker) as session:
            await records.record_created(
                session,
                order_id=step.order_id,
                gateway=step.gateway,
                payment_id=created.payment_id,
                pay_url=created.pay_url,
                amount_cents=step.amount_cents,
                currency=step.currency,
                at=step.at,
            )
        return c.PaymentLink(step.gateway, created.payment_id, created.pay_url)

    @activity.defn(name=s.QUERY_PAYMENT)
    async def query_payment(self, step: s.GatewayStep) -> s.PaymentSnapshot:
        gateway = await self._gateway(step.gateway, step.order_id)
        if step.channel not in getattr(gateway, "query_channels", ("primary",)):
            raise _gateway_failed(Unsupported(f"{step.gateway} has no {step.channel} query host"))
        if step.channel != "primary" and activity.info().attempt == 1:
            self.metrics.failover(step.gateway)  # the workflow asks the backup only when the primary failed
        channel = cast(QueryChannel, step.channel)  # one of the gateway's query_channels, checked above
        return await _answer(gateway.query(step.payment_id, step.order_id, channel))

    @activity.defn(name=s.CLOSE_PAYMENT)
    async def close_payment(self, step: s.GatewayStep) -> s.PaymentSnapshot:
        gateway = await self._gateway(step.gateway, step.order_id)
        try:
            state = await gateway.close(step.payment_id, step.order_id)
        except Unsupported:
            # No close API (epay, epusdt): an answer, not a failure (no retry, no traceback). The saga
            # watches for a late payment, by query only where a query can prove one.
            proves = getattr(gateway, "query_proves_payment", True)
            return s.PaymentSnapshot(s.CLOSE_UNSUPPORTED, 0, "", None, step.payment_id, query_proves_payment=proves)
        except GatewayError as exc:
            raise _gateway_failed(exc) from exc
        return s.PaymentSnapshot(state.status, state.amount_cents, state.currency, state.paid_at, state.payment_id)

    @activity.defn(name=s.REFUND_PAYMENT)
    async def refund_payment(self, step: s.RefundStep) -> s.PaymentSnapshot:
        gateway = await self._gateway(step.gateway, step.order_id)
        try:
            return await _answer(gateway.refund(step.payment_id, step.order_id, step.amount_cents, step.refund_id))
        except ApplicationError as exc:
            if exc.type != "Unsupported":
                raise
        # The gateway has no refund API (epusdt): a person sends the money back; the timeline and the
        # audit log say so, and the saga goes on (the keys go back).
        async with transaction(self.sessionmaker) as session:
            await records.record_refund_by_hand(session, step, datetime.now(UTC))
        return s.PaymentSnapshot(s.REFUND_BY_HAND, step.amount_cents, "", None, step.payment_id)

    @activity.defn(name=s.REVIEW_STRAY)
    async def review_stray(self, stray: c.StrayPayment) -> s.StrayReview:
        """Ask the gateway about the payment; miaofa/payments/strays.py judges it. A stray is only ever
        started for a payment in its order's own account (a notify or statement of another account is
        foreign, never a stray), so the order names the account here too."""
        gateway = await self._gateway(stray.gateway, stray.order_id)
        if not getattr(gateway, "query_proves_payment", True):
            # Its query is unsigned: the verified notify that found this payment is the proof, and
            # nothing else is (a poll or a statement of such a gateway proves nothing).
            if stray.found_by != "notify":
                return s.StrayReview("nothing", detail=f"{stray.gateway} cannot prove a payment by query")
            state = strays.as_notified(stray)
        else:
            try:
                state = await gateway.query(stray.payment_id, "", "primary")
            except GatewayError as exc:
                raise _gateway_failed(exc) from exc
        async with transaction(self.sessionmaker) as session:
            decision = await strays.review(session, stray, state)
        if decision.order_id is not None:
            assert self.temporal is not None
            if await signal_payment(self.temporal, decision.order_id, source=stray.found_by):
                return s.StrayReview("handed_to_order", state.amount_cents, "its order is open and looks again")
        return decision.outcome

    @activity.defn(name=s.RECORD_STRAY_REFUND)
    async def record_stray_refund(self, step: s.StrayRefunded) -> None:
        async with transaction(self.sessionmaker) as session:
            await records.record_stray_outcome(session, step.stray, step.outcome, step.refund_id, step.at, step.detail)
            if step.outcome == "refunded":
                stray = step.stray
                await order_money.passed_through(
                    session,
                    stray.gateway,
                    (f"stray:{stray.gateway}:{stray.payment_id}", f"stray_refund:{stray.gateway}:{stray.payment_id}"),
                    stray.amount_cents,
                    stray.currency,
                    step.at,
                )
        if step.outcome == "refunded":
            self.metrics.refunded("stray")


async def _answer(call: Awaitable[PaymentState]) -> s.PaymentSnapshot:
    try:
        state = await call
    except GatewayError as exc:
        raise _gateway_failed(exc) from exc
    return s.PaymentSnapshot(state.status, state.amount_cents, state.currency, state.paid_at, state.payment_id)
