"""WeChat Pay v3's wire format: the fields of an answer or a decrypted notify, each read and checked.
No I/O: the adapter (miaofa/gateways/wechat.py) calls it. Each reader raises ValueError with a short
reason of our own, never the value it refused.
"""

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from miaofa.gateways.base import GatewayRefused, PaymentStatus

CHINA = timezone(timedelta(hours=8))
MAX_FEN = 10**12
# WeChat allows 6–32 of [0-9A-Za-z_-|*]; ours are 20 hex characters, and "|" or "*" would not survive a URL path.
OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_\-]{6,32}")
ID_RE = re.compile(r"[0-9A-Za-z_\-]{1,64}")
CODE_RE = re.compile(r"[A-Z_]{1,32}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
TRADE_STATES: dict[str, PaymentStatus] = {
    "SUCCESS": "paid",
    "REFUND": "refunded",
    "NOTPAY": "pending",
    "USERPAYING": "pending",
    "CLOSED": "closed",
    "REVOKED": "closed",
    "PAYERROR": "closed",
}
REFUND_EVENTS = ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED")


def loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep, a 5,000-digit number
        raise ValueError("malformed JSON") from None


def trade_no(value: str, op: str) -> str:
    if not OUT_TRADE_NO_RE.fullmatch(value):
        raise GatewayRefused(f"wechat {op}: malformed out_trade_no")
    return value


def error_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) and CODE_RE.fullmatch(code) else ""


def text(data: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"bad {key}")
    return value


def object_field(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"bad {key}")
    return value


def trade_state(data: Mapping[str, Any]) -> PaymentStatus:
    value = data.get("trade_state")
    if not isinstance(value, str) or value not in TRADE_STATES:
        raise ValueError("bad trade_state")
    return TRADE_STATES[value]


def fen(amount: Mapping[str, Any], key: str) -> int:
    value = amount.get(key)
    # type() rather than isinstance(): bool is an int subclass, and True is not one fen.
    if type(value) is not int or not 0 < value <= MAX_FEN:
        raise ValueError(f"bad amount.{key}")
    return value


def currency(amount: Mapping[str, Any]) -> str:
    value = amount.get("currency")
    if not isinstance(value, str) or not CURRENCY_RE.fullmatch(value):
        raise ValueError("bad amount.currency")
    return value


def when(data: Mapping[str, Any], required: bool) -> datetime | None:
    value = data.get("success_time")
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("bad success_time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("bad success_time") from None
    if parsed.tzinfo is None:  # RFC 3339 always names its offset
        raise ValueError("bad success_time")
    return parsed.astimezone(UTC)
