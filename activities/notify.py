"""Telling the buyer: the delivery email, with the keys decrypted only here."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from miaofa import inventory, orders
from miaofa import steps as s
from miaofa.mailer import Mailer
from miaofa.vault import Vault

log = logging.getLogger("miaofa.activities.notify")


class NotifyActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], vault: Vault, mailer: Mailer,
                 shop_url: str) -> None:
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.mailer = mailer
        self.shop_url = shop_url.rstrip("/")

    @activity.defn(name=s.SEND_DELIVERY_EMAIL)
    async def send_delivery_email(self, step: s.DeliverStep) -> None:
        async with self.sessionmaker() as session:
            order = await orders.get_order(session, step.order_id)
            keys = await inventory.delivered_keys(session, self.vault, step.order_id)
        if not self.mailer.configured:
            stage = "email_skipped"
        else:
            token = self.vault.order_token(order.id)
            body = "\n".join([
                f"Thank you for your order {order.id}.", "", "Your keys:", *keys, "",
                f"Order page: {self.shop_url}/orders/{order.id}?token={token}",
            ])
            await self.mailer.send(order.email, f"Your order {order.id}", body)
            stage = "email_sent"
        log.info("delivery email %s for order %s", stage.removeprefix("email_"), order.id)
        async with self.sessionmaker.begin() as session:
            await orders.add_event(session, step.order_id, stage, step.at, once=False)
