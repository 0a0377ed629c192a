"""Merchant webhooks: signed JSON events about orders, never a key or a buyer's email in clear.

Headers: `Miaofa-Event-Id` (the idempotency key, the same on every retry), `Miaofa-Timestamp`
(unix seconds of this attempt) and `Miaofa-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
README.md, "Webhooks", shows a receiver's check.

A webhook goes only to public addresses (miaofa.netaddr; MIAOFA_WEBHOOK_ALLOW_NETWORKS allows more):
the host is resolved at each send, every address it resolves to is checked, and the connection goes
to a checked address (TLS still verifies the name), so DNS cannot answer differently in between.
What the receiver answered is kept only as a coarse class, never an oracle of what listens there.
"""

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from miaofa.db.models import Coupon, Order
from miaofa.netaddr import literal_address, webhook_address_problem, webhook_host_problem

TIMEOUT_SECONDS = 5.0
TOLERANCE_SECONDS = 300  # a receiver refuses signatures older than this (replays)
# What a failed send is recorded as (outbox.last_error, logs): classes only.
REFUSED, UNREACHABLE, TIMEOUT = "destination_refused", "unreachable", "timeout"

Resolve = Callable[[str, int], Awaitable[list[str]]]


class WebhookFailed(Exception):
    """The receiver did not take the event (non-2xx, timeout, no connection); `reason` is safe to log.
    `final`: retrying cannot help (the destination is refused)."""

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.final = reason, final


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class Destinations:
    """Where a webhook may connect: a URL's host → the checked addresses to try, in order."""

    def __init__(self, allow: str = "", resolve: Resolve | None = None) -> None:
        self.allow = allow
        self._resolve = resolve or system_resolve

    async def addresses(self, host: str, port: int) -> list[str]:
        if webhook_host_problem(host, self.allow):
            raise WebhookFailed(REFUSED, final=True)
        literal = literal_address(host)
        if literal is not None:
            return [str(literal)]
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                found = await self._resolve(host, port)
        except (OSError, TimeoutError):
            raise WebhookFailed(UNREACHABLE) from None
        if not found:
            raise WebhookFailed(UNREACHABLE)
        if any(webhook_address_problem(ip.split("%", 1)[0], self.allow) for ip in found):
            raise WebhookFailed(REFUSED, final=True)  # every address: a name must not mix in an internal one
        return list(dict.fromkeys(ip.split("%", 1)[0] for ip in found))


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


def client() -> httpx.AsyncClient:
    """The dispatcher's client: no proxy from the environment (it would resolve the name itself), and
    no kept connection (one made for a name is never reused for another name at that address)."""
    return httpx.AsyncClient(timeout=TIMEOUT_SECONDS, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


async def post(
    http: httpx.AsyncClient, destinations: Destinations, url: str, secret: str, event_id: str, body: bytes
) -> None:
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        raise WebhookFailed(REFUSED, final=True) from None
    host = target.raw_host.decode("ascii")  # an IDN in its xn-- form, as DNS and TLS see it
    if target.scheme not in ("http", "https") or not host:
        raise WebhookFailed(REFUSED, final=True)
    port = target.port or (443 if target.scheme == "https" else 80)
    addresses = await destinations.addresses(host, port)
    timestamp = str(int(time.time()))
    headers = {
        "Host": target.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": "Miaofa-Webhooks/1",
        "Miaofa-Event-Id": event_id,
        "Miaofa-Timestamp": timestamp,
        "Miaofa-Signature": signature(secret, timestamp, body),
    }
    # TLS is verified against the URL's name while the socket goes to the checked address.
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    for address in addresses:
        try:
            answer = await http.post(
                target.copy_with(host=address),
                content=body,
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                follow_redirects=False,
                extensions=extensions,
            )
        except httpx.ConnectError:
            continue  # the next address of the name, if any
        except httpx.TimeoutException:
            raise WebhookFailed(TIMEOUT) from None
        except httpx.HTTPError:
            raise WebhookFailed(UNREACHABLE) from None
        if not 200 <= answer.status_code < 300:
            raise WebhookFailed(f"http_{answer.status_code // 100}xx")  # the class: 404 and 405 alike
        return
    raise WebhookFailed(UNREACHABLE)
