"""A shop's webhook: where its order events go, signed with a secret of its own (shown once)."""

import secrets
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import MerchantDep, OwnerDep, SessionDep, StateDep
from api.routes.admin import WebhookUrl
from miaofa import audit
from miaofa.errors import InvalidInput
from miaofa.merchants import accounts
from miaofa.netaddr import webhook_host_problem

router = APIRouter(prefix="/merchant", tags=["merchant"])


class WebhookBody(BaseModel):
    url: WebhookUrl = Field(description="http(s); the shop's order events are posted here, signed")


@router.get("/webhook")
async def read_webhook(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    merchant = await accounts.by_id(session, holder.merchant_id)
    return {"url": merchant.webhook_url, "secret_set": merchant.webhook_secret is not None}


@router.put("/webhook")
async def set_webhook(body: WebhookBody, holder: OwnerDep, session: SessionDep, state: StateDep) -> dict[str, Any]:
    """Set the URL and make a new signing secret, shown in this answer only (the old one stops)."""
    host = urlparse(body.url).hostname or ""
    if problem := webhook_host_problem(host, state.settings.webhook_allow_networks):
        raise InvalidInput(f"url: {problem}")
    secret = "whsec_" + secrets.token_urlsafe(32)
    merchant = await accounts.by_id(session, holder.merchant_id)
    merchant.webhook_url, merchant.webhook_secret = body.url, state.vault.encrypt(secret)
    audit.record(session, holder.actor, "webhook.set", merchant.slug, merchant_id=merchant.id, host=host[:100])
    return {"url": body.url, "secret": secret}


@router.delete("/webhook")
async def clear_webhook(holder: OwnerDep, session: SessionDep) -> dict[str, Any]:
    """No webhook: the shop's events are not sent anywhere (never to the platform's URL)."""
    merchant = await accounts.by_id(session, holder.merchant_id)
    merchant.webhook_url, merchant.webhook_secret = None, None
    audit.record(session, holder.actor, "webhook.clear", merchant.slug, merchant_id=merchant.id)
    return {"url": None, "secret_set": False}
