"""The outbox dispatcher: an asyncio task in each worker process that sends what miaofa.messaging.outbox queued.

Each round claims up to `batch` due rows (FOR UPDATE SKIP LOCKED, due time pushed forward by a
lease, committed at once), sends them concurrently — each within SEND_TIMEOUT_SECONDS, far inside
the lease — then marks each sent, or due again after an exponential backoff, or failed for good
once it is a day old. Any number of workers may run one: a row is held by one of them at a time.
Data is read at send time: keys never sit in the outbox, coupon codes and addresses are read here.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.common import MetricMeter

from miaofa.crypto.vault import Vault
from miaofa.db.models import DEFAULT_MERCHANT, Coupon, Merchant, Order, Product
from miaofa.messaging import emails, outbox, webhooks
from miaofa.messaging.mailer import Mailer

log = logging.getLogger("miaofa.outbox")

SEND_TIMEOUT_SECONDS = 30.0
LOOKUP_LIMIT = 20
PRUNE_EVERY_SECONDS = 3600
KEEP_SENT = timedelta(days=7)


class SendFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        vault: Vault,
        mailer: Mailer,
        *,
        shop_url: str,
        webhook_url: str = "",
        webhook_secret: str = "",
        webhook_allow_networks: str = "",
        resolve: webhooks.Resolve | None = None,
        backoff: outbox.Backoff = outbox.Backoff(),
        batch: int = 10,
        poll_seconds: float = 1.0,
        lease_seconds: float = 120.0,
        meter: MetricMeter | None = None,
    ) -> None:
        self.sessionmaker, self.vault, self.mailer = sessionmaker, vault, mailer
        self.shop_url = shop_url.rstrip("/")
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.backoff, self.batch, self.poll_seconds, self.lease_seconds = backoff, batch, poll_seconds, lease_seconds
        meter = meter or MetricMeter.noop
        self._sent = meter.create_counter("miaofa_outbox_sent", "Outbox messages sent (or skipped: nowhere to send)")
        self._retried = meter.create_counter("miaofa_outbox_retried", "Outbox sends that failed and will be retried")
        self._failed = meter.create_counter(
            "miaofa_outbox_failed", "Outbox messages given up after a day of failed sends"
        )
        self._http = webhooks.client()
        self._destinations = webhooks.Destinations(webhook_allow_networks, resolve)
        self._pruned_at = 0.0
        self._senders: dict[str, Callable[[outbox.Claimed], Awaitable[str]]] = {
            "email.refunded": self._refund_email,
            "email.coupon": self._coupon_email,
            outbox.LOOKUP_TOPIC: self._lookup_email,
        }

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: send due rows, then wait a poll interval when there were few."""
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception as exc:  # the database is away: the rows wait for us
                log.warning("outbox round failed (%s); trying again", type(exc).__name__)
                handled = 0
            if handled < self.batch:
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """One round: claim, send, mark. Returns how many rows it handled."""
        async with self.sessionmaker.begin() as session:
            await outbox.skip_unsendable(
                session,
                no_webhook_url=not (self.webhook_url and self.webhook_secret),
                no_mail=not self.mailer.configured,
            )
            claimed = await outbox.claim(session, self.batch, self.lease_seconds)
        if claimed:
            await asyncio.gather(*(self._deliver(message) for message in claimed))
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            async with self.sessionmaker.begin() as session:
                await outbox.prune(session, KEEP_SENT)
        return len(claimed)

    async def _deliver(self, message: outbox.Claimed) -> None:
        labels = {"channel": message.channel, "topic": message.topic}
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                status = await self._send(message)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, (SendFailed, webhooks.WebhookFailed)) else type(exc).__name__
            final = isinstance(exc, webhooks.WebhookFailed) and exc.final
            async with self.sessionmaker.begin() as session:
                outcome = await outbox.retry_or_fail(session, message, reason, self.backoff, final=final)
            if outcome == outbox.FAILED:
                self._failed.add(1, labels)
                log.error(
                    "outbox %s %s (order %s) failed for good after %d attempts: %s",
                    message.topic,
                    message.event_id,
                    message.order_id,
                    message.attempts,
                    reason,
                )
            elif outcome is not None:
                self._retried.add(1, labels)
                log.warning(
                    "outbox %s %s (order %s) attempt %d failed: %s",
                    message.topic,
                    message.event_id,
                    message.order_id,
                    message.attempts,
                    reason,
                )
            return
        async with self.sessionmaker.begin() as session:
            await outbox.finish(session, message, status)
        self._sent.add(1, labels)
        log.info("outbox %s %s (order %s) %s", message.topic, message.event_id, message.order_id, status)

    async def _send(self, message: outbox.Claimed) -> str:
        if message.channel == outbox.WEBHOOK:
            return await self._webhook(message)
        if not self.mailer.configured:
            return outbox.SKIPPED
        return await self._senders[message.topic](message)

    # ---- webhooks --------------------------------------------------------------------------

    async def _webhook(self, message: outbox.Claimed) -> str:
        async with self.sessionmaker() as session:
            order, product, merchant = (
                await session.execute(
                    select(Order, Product, Merchant)
                    .join(Product, Product.id == Order.product_id)
                    .join(Merchant, Merchant.id == Order.merchant_id)
                    .where(Order.id == message.order_id)
                )
            ).one()
            coupon = await session.scalar(select(Coupon).where(Coupon.issued_for_order_id == order.id))
        # The URL as it was when the event was queued (a retry keeps it); rows queued before URLs were
        # kept on the row read the product's URL now.
        queued_for = message.detail["url"] if "url" in message.detail else product.webhook_url
        if merchant.id == DEFAULT_MERCHANT:
            url, secret = queued_for or self.webhook_url, self.webhook_secret
        else:  # a shop's events go to its own URL, signed with its own secret: never the platform's
            url = queued_for
            secret = self.vault.decrypt(merchant.webhook_secret) if merchant.webhook_secret else ""
        if not url or not secret:
            return outbox.SKIPPED
        body = webhooks.event_body(message.event_id, message.topic, message.detail.get("at", ""), order, coupon)
        await webhooks.post(self._http, self._destinations, url, secret, message.event_id, body)
        return outbox.SENT

    # ---- emails ----------------------------------------------------------------------------

    def _info(self, order: Order, product: Product) -> emails.OrderInfo:
        link = emails.order_link(self.shop_url, order.id, self.vault.order_token(order.id))
        return emails.OrderInfo(
            order.id,
            link,
            product.name,
            order.quantity,
            order.amount_cents,
            order.currency,
            order.status,
            order.created_at,
        )

    async def _order(self, order_id: str | None) -> tuple[Order, Product, Coupon | None]:
        async with self.sessionmaker() as session:
            order, product = (
                await session.execute(
                    select(Order, Product).join(Product, Product.id == Order.product_id).where(Order.id == order_id)
                )
            ).one()
            coupon = await session.scalar(select(Coupon).where(Coupon.issued_for_order_id == order_id))
        return order, product, coupon

    async def _refund_email(self, message: outbox.Claimed) -> str:
        order, product, _ = await self._order(message.order_id)
        mail = emails.refund(self._info(order, product), order.lang)
        await self._mail(order.email, mail)
        return outbox.SENT

    async def _coupon_email(self, message: outbox.Claimed) -> str:
        order, product, coupon = await self._order(message.order_id)
        if coupon is None:
            return outbox.SKIPPED
        off = (
            f"{coupon.percent_off}%"
            if coupon.percent_off is not None
            else f"{coupon.amount_off_cents} {coupon.currency} (minor units)"
        )
        mail = emails.coupon(self._info(order, product), coupon.code, off, coupon.expires_at, order.lang)
        await self._mail(order.email, mail)
        return outbox.SENT

    async def _lookup_email(self, message: outbox.Claimed) -> str:
        async with self.sessionmaker() as session:
            found = (
                await session.execute(
                    select(Order, Product)
                    .join(Product, Product.id == Order.product_id)
                    .where(Order.buyer_hash == message.buyer_hash)
                    .order_by(Order.created_at.desc(), Order.id)
                    .limit(LOOKUP_LIMIT)
                )
            ).all()
        if not found:
            return outbox.SKIPPED  # an address with no orders gets nothing (the API said the same either way)
        mail = emails.lookup([self._info(order, product) for order, product in found], message.detail.get("lang"))
        await self._mail(found[0][0].email, mail)  # the address the buyer last ordered with
        return outbox.SENT

    async def _mail(self, to: str, mail: emails.Email) -> None:
        try:
            await self.mailer.send(to, mail.subject, mail.text, mail.html)
        except (OSError, EOFError) as exc:  # smtplib's errors are OSErrors; no message (it may hold the address)
            raise SendFailed(type(exc).__name__) from None
