"""Stripe's wire format: the Stripe-Signature header and its check, a webhook event read into a
Notice, and the fields of sessions and events. No I/O: the adapter (miaofa/gateways/stripe.py) calls it.
"""

import hmac
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any
from urllib.parse import quote

from miaofa.gateways.base import InvalidNotify, Notice, PaymentStatus

SIGNATURE_HEADER = "stripe-signature"
MAX_AMOUNT = 10**12  # Stripe's own limit is 8 digits; anything near this is garbage, not money
ID_RE = re.compile(r"[A-Za-z0-9_]{1,255}")  # cs_…, evt_…, pi_…, ch_…, re_…
ORDER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
CURRENCY_RE = re.compile(r"[a-z]{3}")
ERROR_WORD_RE = re.compile(r"[a-z_]{1,64}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
V1_RE = re.compile(r"[0-9a-f]{64}")
MAX_SIGNATURE_HEADER = 2048
PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
CLOSED_EVENTS = frozenset({"checkout.session.expired", "checkout.session.async_payment_failed"})


def check_signature(header: str | None, body: bytes, secret: bytes, tolerance: int, clock: Callable[[], float]) -> None:
    """The webhook's Stripe-Signature: any v1 HMAC of `t.body` under the endpoint's secret, t within ±tolerance."""
    timestamp, signatures = signature_header(header)
    if not secret:
        raise InvalidNotify("no webhook secret")
    # Over the raw bytes, as they came: the body is parsed only once this has passed.
    expected = hmac.new(secret, timestamp.encode() + b"." + body, sha256).hexdigest()
    if not any([hmac.compare_digest(expected, signature) for signature in signatures]):
        raise InvalidNotify("bad signature")
    age = clock() - int(timestamp)
    if age > tolerance:
        raise InvalidNotify("stale timestamp")
    # Stricter than Stripe's libraries, which accept any future t: a signature dated ahead would
    # stay replayable for that long, and Stripe's clock is never minutes ahead of ours.
    if age < -tolerance:
        raise InvalidNotify("timestamp in the future")


def signature_header(header: str | None) -> tuple[str, list[str]]:
    """t and the v1 signatures of `t=…,v1=…[,v1=…][,v0=…]`; other schemes are ignored, as Stripe's libraries do."""
    if not header:
        raise InvalidNotify("missing Stripe-Signature")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise InvalidNotify("malformed Stripe-Signature")
    timestamps, signatures = [], []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1" and V1_RE.fullmatch(value):
            signatures.append(value)
    if len(timestamps) != 1 or not TIMESTAMP_RE.fullmatch(timestamps[0]):
        raise InvalidNotify("malformed Stripe-Signature timestamp")
    if not signatures:
        raise InvalidNotify("no v1 signature")
    return timestamps[0], signatures


def event_json(body: bytes) -> Any:
    """The (signed) body as JSON; InvalidNotify if it is not."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; "[[[[…" recurses
        raise InvalidNotify("body is not JSON") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def notice_of(event: Any, livemode: bool) -> Notice:
    """The Notice a verified event says; ValueError with a short reason if it is malformed."""
    if not isinstance(event, dict) or event.get("object") != "event":
        raise ValueError("not an event")
    event_id = stripe_id(event.get("id"), "id")
    if event.get("livemode") is not livemode:
        raise ValueError("livemode does not match the key")
    kind, created = event.get("type"), event.get("created")
    if not isinstance(kind, str) or len(kind) > 128:
        raise ValueError("bad type")
    if type(created) is not int or not 0 < created < 10**11:
        raise ValueError("bad created")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise ValueError("bad data.object")
    at = datetime.fromtimestamp(created, UTC)
    if kind in PAID_EVENTS or kind in CLOSED_EVENTS:
        if obj.get("object") != "checkout.session":
            raise ValueError("not a checkout session")
        status: PaymentStatus = (
            "closed" if kind in CLOSED_EVENTS else ("paid" if obj.get("payment_status") == "paid" else "pending")
        )  # an async method still running
        return Notice(
            payment_id=stripe_id(obj.get("id"), "session id"),
            order_id=order_of(obj),
            merchant_id=None,
            status=status,
            amount_cents=amount_field(obj.get("amount_total")),
            currency=currency_field(obj.get("currency")),
            paid_at=at if status == "paid" else None,
            event_id=event_id,
        )
    if kind == "charge.refunded":
        if obj.get("object") != "charge":
            raise ValueError("not a charge")
        # Logged against its order (from the metadata the payment intent handed on); never proof of payment.
        metadata = obj.get("metadata")
        order_id = metadata.get("order_id") if isinstance(metadata, dict) else None
        return Notice(
            payment_id=stripe_id(obj.get("payment_intent") or obj.get("id"), "payment_intent"),
            order_id=order_id_field(order_id) if order_id is not None else "",
            merchant_id=None,
            status="refunded",
            amount_cents=amount_field(obj.get("amount_refunded")),
            currency=currency_field(obj.get("currency")),
            paid_at=at,
            event_id=event_id,
        )
    # Any other event is acknowledged and changes nothing: judge ignores an "unknown" status.
    return Notice(
        payment_id=event_id,
        order_id="",
        merchant_id=None,
        status="unknown",
        amount_cents=0,
        currency="",
        paid_at=None,
        event_id=event_id,
    )


# Field readers for sessions and events; each raises ValueError with a short reason.


def path_id(payment_id: str) -> str:
    return quote(payment_id, safe="")


def stripe_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ValueError(f"bad {what}")
    return value


def order_id_field(value: Any) -> str:
    if not isinstance(value, str) or not ORDER_ID_RE.fullmatch(value):
        raise ValueError("bad order id")
    return value


def order_of(session: Mapping[str, Any]) -> str:
    """Our order id, from client_reference_id and metadata[order_id]; both are ours, so they must agree."""
    reference = session.get("client_reference_id")
    metadata = session.get("metadata")
    meta = metadata.get("order_id") if isinstance(metadata, dict) else None
    if reference is None and meta is None:
        raise ValueError("no order id")
    ids = {order_id_field(value) for value in (reference, meta) if value is not None}
    if len(ids) != 1:
        raise ValueError("client_reference_id and metadata disagree")
    return ids.pop()


def session_status(session: Mapping[str, Any]) -> PaymentStatus:
    status, payment_status = session.get("status"), session.get("payment_status")
    if status not in ("open", "complete", "expired") or payment_status not in ("paid", "unpaid", "no_payment_required"):
        raise ValueError("bad status")
    if payment_status == "paid":
        return "paid"
    return "closed" if status == "expired" else "pending"


def amount_field(value: Any) -> int:
    # type() rather than isinstance(): bool is an int subclass, and True is not one cent.
    if type(value) is not int or not 0 < value < MAX_AMOUNT:
        raise ValueError("bad amount")
    return value


def currency_field(value: Any) -> str:
    # Stripe writes currencies in lower case; we keep ISO upper case.
    if not isinstance(value, str) or not CURRENCY_RE.fullmatch(value):
        raise ValueError("bad currency")
    return value.upper()
