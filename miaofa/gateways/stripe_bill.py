"""Stripe's record of money: balance transactions (GET /v1/balance_transactions) of a time window,
paged, with each one's charge or refund expanded, tied to our Checkout Sessions.

A balance transaction is made when money moves, so there is no "bill not ready": a window is
complete once Stripe answers. Its own amount is in the account's settlement currency; the charge's
or refund's amount is what the buyer paid or got back, and that is what is compared.
Format and sources: docs/gateway-bills.md.
"""

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from miaofa.gateways.base import GatewayError, GatewayRefused
from miaofa.gateways.bills import BillLine
from miaofa.gateways.stripe_wire import ID_RE, ORDER_ID_RE, amount_field, currency_field

PAGE = 100  # Stripe's largest page
MAX_PAGES = 1000  # 100,000 objects a window: past this, something is wrong, not busy
# A Checkout Session lives at most 24 h, so one paid in a window was created at most this much before it.
SESSION_LIFETIME = timedelta(hours=24)
PAYMENTS = frozenset({"charge", "payment"})
REFUNDS = frozenset({"refund", "payment_refund"})
Send = Callable[[str, str, str, dict[str, str]], Awaitable[httpx.Response]]


async def bill_lines(send: Send, start: datetime, end: datetime) -> tuple[list[BillLine], int]:
    """Our payments and refunds of [start, end), and how many charges belonged to no session of ours
    (another integration on the same account: not ours to judge)."""
    sessions = await _sessions(send, start - SESSION_LIFETIME, end)
    lines, foreign = [], 0
    created = window(start, end)
    async for item in pages(send, "/v1/balance_transactions", {**created, "expand[]": "data.source"}):
        kind = item.get("type")
        if kind not in PAYMENTS and kind not in REFUNDS:
            continue  # payouts, fees, adjustments: money of the account, not of an order
        source = item.get("source")
        if not isinstance(source, dict):
            raise GatewayError("stripe statement: a balance transaction without its source")
        intent = source.get("payment_intent")
        session = sessions.get(intent) if isinstance(intent, str) else None
        if session is None and isinstance(intent, str) and ID_RE.fullmatch(intent):
            session = await _session_of(send, intent)  # a session older than the window allows for
        if session is None:
            foreign += 1
            continue
        try:
            at = datetime.fromtimestamp(_int(item.get("created")), UTC)
            amount, currency = amount_field(source.get("amount")), currency_field(source.get("currency"))
            fee = _int(item.get("fee"))
        except ValueError as exc:
            raise GatewayError(f"stripe statement: malformed balance transaction ({exc})") from None
        session_id, order_id = session
        if kind in PAYMENTS:
            lines.append(BillLine("payment", session_id, order_id, amount, currency, at, fee))
        else:
            refund_id = source.get("id")
            refund_id = refund_id if isinstance(refund_id, str) else ""
            lines.append(BillLine("refund", session_id, order_id, amount, currency, at, -fee, refund_id))
    return lines, foreign


async def _sessions(send: Send, start: datetime, end: datetime) -> dict[str, tuple[str, str]]:
    """payment_intent → (session id, order id) of the completed sessions created in [start, end)."""
    created = window(start, end)
    found = {}
    async for session in pages(send, "/v1/checkout/sessions", {**created, "status": "complete"}):
        mapped = _mapped(session)
        if mapped is not None:
            found[mapped[0]] = mapped[1]
    return found


async def _session_of(send: Send, intent: str) -> tuple[str, str] | None:
    async for session in pages(send, "/v1/checkout/sessions", {"payment_intent": intent}):
        mapped = _mapped(session)
        if mapped is not None:
            return mapped[1]
    return None


def _mapped(session: dict[str, Any]) -> tuple[str, tuple[str, str]] | None:
    intent, session_id, metadata = session.get("payment_intent"), session.get("id"), session.get("metadata")
    order_id = session.get("client_reference_id") or (metadata.get("order_id") if isinstance(metadata, dict) else None)
    if not isinstance(intent, str) or not isinstance(session_id, str):
        return None
    if not ID_RE.fullmatch(intent) or not ID_RE.fullmatch(session_id):
        return None
    if not isinstance(order_id, str) or not ORDER_ID_RE.fullmatch(order_id):
        return None  # a session of another integration on this account
    return intent, (session_id, order_id)


async def pages(send: Send, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    after = None
    for _ in range(MAX_PAGES):
        query = {**params, "limit": str(PAGE), **({"starting_after": after} if after else {})}
        response = await send("statement", "GET", path, query)
        if response.status_code != 200:
            retry = response.status_code in (401, 409, 429) or response.status_code >= 500
            raise (GatewayError if retry else GatewayRefused)(f"stripe statement: HTTP {response.status_code}")
        try:
            page = response.json()
        except ValueError:
            raise GatewayError("stripe statement: response is not JSON") from None
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise GatewayError("stripe statement: malformed list")
        for item in data:
            yield item
        if page.get("has_more") is not True or not data:
            return
        last = data[-1].get("id")
        if not isinstance(last, str) or not ID_RE.fullmatch(last):
            raise GatewayError("stripe statement: malformed list (id)")
        after = last
    raise GatewayError("stripe statement: more pages than any window should have")


def window(start: datetime, end: datetime) -> dict[str, str]:
    # Stripe's times are whole seconds: ask for every second the window touches; states() cuts exactly.
    return {"created[gte]": str(math.floor(start.timestamp())), "created[lt]": str(math.ceil(end.timestamp()))}


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value
