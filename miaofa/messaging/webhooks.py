"""Merchant webhooks: signed JSON events about orders, never a key or a buyer's email in clear.

Headers: `Miaofa-Event-Id` (the idempotency key, the same on every retry), `Miaofa-Timestamp`
(unix seconds of this attempt) and `Miaofa-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
README.md, "Webhooks", shows a receiver's check.
"""

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from miaofa.db.models import Coupon, Order

TIMEOUT_SECONDS = 5.0
TOLERANCE_SECONDS = 300  # a receiver refuses signatures older than this (replays)


class WebhookFailed(Exception):
    """The receiver did not take the event (non-2xx, timeout, no connection); `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """The receiver's check, as README.md shows it: signature over timestamp and raw body, fresh timestamp."""
    timestamp = headers.get("miaofa-timestamp", "")
    given = headers.get("miaofa-signature", "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), given)


def event_body(event_id: str, topic: str, at: str, order: Order, coupon: Coupon | None) -> bytes:
    """The event's JSON: ids, amounts and times; the buyer by their hash only."""
    data: dict[str, Any] = {
        "order_id": order.id,
        "sku": order.sku,
        "quantity": order.quantity,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "gateway": order.gateway,
        "buyer_hash": order.buyer_hash,
    }
    if topic == "order.paid":
        data["paid_at"] = order.paid_at.isoformat() if order.paid_at else at
    elif topic == "order.delivered":
        data["delivered_at"] = order.delivered_at.isoformat() if order.delivered_at else at
    elif topic == "order.refunded":
        data["refunded_at"] = at
    elif topic == "order.coupon_issued" and coupon is not None:
        # The code is the buyer's (sent to them); the merchant sees what it is worth.
        data["coupon"] = {
            "percent_off": coupon.percent_off,
            "amount_off_cents": coupon.amount_off_cents,
            "expires_at": coupon.expires_at.isoformat(),
        }
    event = {"id": event_id, "type": topic, "created_at": at, "data": data}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


async def post(http: httpx.AsyncClient, url: str, secret: str, event_id: str, body: bytes) -> None:
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Miaofa-Webhooks/1",
        "Miaofa-Event-Id": event_id,
        "Miaofa-Timestamp": timestamp,
        "Miaofa-Signature": signature(secret, timestamp, body),
    }
    try:
        answer = await http.post(url, content=body, headers=headers, timeout=TIMEOUT_SECONDS, follow_redirects=False)
    except httpx.TimeoutException:
        raise WebhookFailed("timeout") from None
    except httpx.HTTPError as exc:
        raise WebhookFailed(type(exc).__name__) from None
    if not 200 <= answer.status_code < 300:
        raise WebhookFailed(f"http_{answer.status_code}")
