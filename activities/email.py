"""Telling the buyer: the delivery email (text and HTML, in the order's language), with the keys
decrypted only here. The other emails go through the outbox (miaofa.messaging.dispatcher)."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from miaofa import catalog, inventory, orders
from miaofa import steps as s
from miaofa.crypto.vault import Vault
from miaofa.messaging import emails
from miaofa.messaging.mailer import Mailer

log = logging.getLogger("miaofa.activities.notify")


class EmailActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], vault: Vault, mailer: Mailer, shop_url: str
    ) -> None:
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.mailer = mailer
        self.shop_url = shop_url.rstrip("/")

    @activity.defn(name=s.SEND_DELIVERY_EMAIL)
    async def send_delivery_email(self, step: s.DeliverStep) -> None:
        async with self.sessionmaker() as session:
            order = await orders.get_order(session, step.order_id)
            keys = await inventory.delivered_keys(session, self.vault, step.order_id)
            product = await catalog.product_by_id(session, order.product_id)
        if not self.mailer.configured:
            stage = "email_skipped"
        else:
            link = emails.order_link(self.shop_url, order.id, self.vault.order_token(order.id))
            info = emails.OrderInfo(order.id, link, product.name, order.quantity, order.amount_cents, order.currency)
            mail = emails.delivery(info, keys, order.lang)
            await self.mailer.send(order.email, mail.subject, mail.text, mail.html)
            stage = "email_sent"
        log.info("delivery email %s for order %s", stage.removeprefix("email_"), order.id)
        async with self.sessionmaker.begin() as session:
            await orders.add_event(session, step.order_id, stage, step.at, once=False)
