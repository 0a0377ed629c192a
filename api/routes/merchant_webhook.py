"""A shop's webhook: where its order events go, signed with a secret of its own (shown once)."""

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api import shop_settings
from api.deps import MerchantDep, OwnerDep, SessionDep, StateDep
from api.routes.admin import WebhookUrl
from miaofa.merchants import accounts

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
    secret = await shop_settings.set_webhook(session, state, holder, body.url)
    return {"url": body.url, "secret": secret}


@router.delete("/webhook")
async def clear_webhook(holder: OwnerDep, session: SessionDep) -> dict[str, Any]:
    """No webhook: the shop's events are not sent anywhere (never to the platform's URL)."""
    await shop_settings.clear_webhook(session, holder)
    return {"url": None, "secret_set": False}
