"""What the merchant API and the console both do to a shop's settings, written once: its webhook
(URL and a new secret) and a direct shop's own gateway credentials (checked, sealed, cached)."""

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.ext.asyncio import AsyncSession

from api.state import State
from miaofa import audit
from miaofa.db.models import MerchantGatewayCredential
from miaofa.direct import credentials, probe
from miaofa.direct.book import trial
from miaofa.errors import InvalidInput
from miaofa.gateways.config import EpaySettings
from miaofa.merchants import accounts
from miaofa.merchants.tokens import MerchantHolder
from miaofa.netaddr import webhook_host_problem
from miaofa.text import url_problem

MAX_FIELDS = 16


async def set_webhook(session: AsyncSession, state: State, holder: MerchantHolder, url: str) -> str:
    """Point the shop's events at `url` with a new signing secret, returned to be shown once (the old
    one stops). The caller commits."""
    if problem := url_problem(url):
        raise InvalidInput(f"url: {problem}")
    host = urlparse(url).hostname or ""
    if problem := webhook_host_problem(host, state.settings.webhook_allow_networks):
        raise InvalidInput(f"url: {problem}")
    secret = "whsec_" + secrets.token_urlsafe(32)
    merchant = await accounts.by_id(session, holder.merchant_id)
    merchant.webhook_url, merchant.webhook_secret = url, state.vault.encrypt(secret)
    audit.record(session, holder.actor, "webhook.set", merchant.slug, merchant_id=merchant.id, host=host[:100])
    return secret


async def clear_webhook(session: AsyncSession, holder: MerchantHolder) -> None:
    """No webhook: the shop's events are not sent anywhere (never to the platform's URL)."""
    merchant = await accounts.by_id(session, holder.merchant_id)
    merchant.webhook_url, merchant.webhook_secret = None, None
    audit.record(session, holder.actor, "webhook.clear", merchant.slug, merchant_id=merchant.id)


async def save_gateway(
    state: State, holder: MerchantHolder, gateway: str, fields: Mapping[str, Any]
) -> tuple[MerchantGatewayCredential, bool]:
    """Check the credentials with a harmless call, then seal and save them; (the row, whether the
    gateway could confirm them). Nothing is saved when the check fails."""
    if gateway not in credentials.SPECS:
        raise InvalidInput(
            f"no gateway {gateway[:32]!r}; one of {', '.join(credentials.SPECS)}", error="unknown_gateway"
        )
    if len(fields) > MAX_FIELDS:
        raise InvalidInput(f"at most {MAX_FIELDS} fields")
    async with state.sessionmaker() as session:
        await credentials.ensure_direct(session, holder.merchant_id)
    platform = next((s for s in state.settings.gateway_settings() if s.name == gateway), None)
    creds = credentials.check(gateway, fields, platform, state.settings.webhook_allow_networks)
    async with trial(state.settings, gateway, creds) as adapter:
        epay = None
        if isinstance(creds, EpaySettings):
            epay = (creds.api_url, creds.pid, creds.key.get_secret_value())
        checked = await probe.probe(gateway, adapter, epay)
    async with state.sessionmaker.begin() as session:
        row = await credentials.save(session, state.vault, holder.merchant_id, gateway, creds, holder.actor)
    state.book.forget(holder.merchant_id, gateway)
    return row, checked == "checked"


async def remove_gateway(state: State, holder: MerchantHolder, gateway: str) -> None:
    async with state.sessionmaker.begin() as session:
        await credentials.remove(session, holder.merchant_id, gateway, holder.actor)
    state.book.forget(holder.merchant_id, gateway)


def notify_url(state: State, merchant_id: str, gateway: str) -> str:
    """Where the gateway must send this account's notifies (Stripe's webhook endpoint is set by hand)."""
    return f"{state.settings.notify_url_base.rstrip('/')}/payments/{gateway}/notify/m/{merchant_id}"
