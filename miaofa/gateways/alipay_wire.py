"""Alipay's wire format: the string to sign, RSA keys, the raw members of a signed answer, a notify's
form fields, and Alipay's amounts and times. No I/O: the adapter (miaofa/gateways/alipay.py) calls it.
"""

import base64
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes
from zoneinfo import ZoneInfo

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from miaofa.gateways.base import InvalidNotify, Notice, PaymentStatus
from miaofa.gateways.config import read_key_text
from miaofa.gateways.money import MoneyError, check_currency, to_minor

SHANGHAI = ZoneInfo("Asia/Shanghai")  # Alipay's clock: timestamps, time_expire, gmt_payment, send_pay_date
CURRENCY = "CNY"
MAX_NOTIFY_FIELDS = 64
MAX_NOTIFY_VALUE = 4096
NOTIFY_STATUSES: dict[str, PaymentStatus] = {
    "TRADE_SUCCESS": "paid",
    "TRADE_FINISHED": "paid",
    "TRADE_CLOSED": "closed",
    "WAIT_BUYER_PAY": "pending",
}
# A partial refund notifies again with trade_status=TRADE_SUCCESS: these fields tell it apart.
REFUND_FIELDS = ("refund_fee", "gmt_refund", "out_biz_no")
CHARSETS = {"utf-8": "utf-8", "gbk": "gbk", "gb2312": "gbk"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
# Yuan with at most two decimals, no sign, no exponent, no padding ("9.9000" is not how Alipay writes 9.90).
AMOUNT_RE = re.compile(r"(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?")
ID_RE = re.compile(r"[0-9A-Za-z_.:-]{1,64}")
SIGN_RE = re.compile(r"[A-Za-z0-9+/]{16,1024}={0,2}")


def sign_content(params: Mapping[str, str], exclude: tuple[str, ...]) -> str:
    """Alipay's string to sign: non-empty params but the excluded ones, sorted by key, unencoded k=v&…."""
    return "&".join(f"{key}={params[key]}" for key in sorted(params) if key not in exclude and params[key] != "")


def load_key(text: str, private: bool) -> Any:
    """An RSA key from PEM text or the console's bare base64 DER (PKCS#8/PKCS#1, SubjectPublicKeyInfo)."""
    text = read_key_text(text).strip()
    if not text:
        raise ValueError("empty key")  # an empty key must never make anything verify
    try:
        if text.startswith("-----BEGIN"):
            pem = text.encode()
            key = serialization.load_pem_private_key(pem, None) if private else serialization.load_pem_public_key(pem)
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_private_key(der, None) if private else serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("the key cannot be read (PEM or base64 DER expected)") from None
    if not isinstance(key, rsa.RSAPrivateKey if private else rsa.RSAPublicKey):
        raise ValueError("the key is not an RSA key")
    return key


def response_members(text: str) -> dict[str, str]:
    """The members of a top-level JSON object as their exact raw text (Alipay signs those characters).

    A duplicated member is refused: which copy was signed would be ambiguous."""
    decoder = json.JSONDecoder()
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError("not an object")
    members: dict[str, str] = {}
    i = _skip(text, i + 1)
    if text[i : i + 1] != "}":
        while True:
            if text[i : i + 1] != '"':
                raise ValueError("expected a member name")
            key, i = decoder.raw_decode(text, i)
            i = _skip(text, i)
            if text[i : i + 1] != ":":
                raise ValueError("expected ':'")
            start = _skip(text, i + 1)
            _, end = decoder.raw_decode(text, start)
            if key in members:
                raise ValueError("duplicate member")
            members[key] = text[start:end]
            i = _skip(text, end)
            if text[i : i + 1] == ",":
                i = _skip(text, i + 1)
                continue
            if text[i : i + 1] != "}":
                raise ValueError("expected ',' or '}'")
            break
    if _skip(text, i + 1) != len(text):
        raise ValueError("trailing data")
    return members


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def json_object(raw: str) -> dict[str, Any]:
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


def error_code(value: Any) -> str:
    return value[:64] if isinstance(value, str) and value.isprintable() else "?"


def notify_form(body: bytes) -> dict[str, str]:
    """A notify's form fields, decoded with its own `charset`. Duplicates and odd bytes are refused."""
    if not body:
        raise InvalidNotify("empty body")
    raw: dict[bytes, bytes] = {}
    for part in body.split(b"&"):
        if not part:
            continue
        name, sep, value = part.partition(b"=")
        name, value = unquote_to_bytes(name.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" "))
        if not sep or not name or name in raw:
            raise InvalidNotify("malformed or repeated form field")
        if len(raw) >= MAX_NOTIFY_FIELDS or len(value) > MAX_NOTIFY_VALUE:
            raise InvalidNotify("too many or too long form fields")
        raw[name] = value
    declared = raw.get(b"charset", b"utf-8").decode("ascii", "replace").lower()
    charset = CHARSETS.get(declared)
    if charset is None:
        raise InvalidNotify("unknown charset")
    try:
        params = {name.decode(charset): value.decode(charset) for name, value in raw.items()}
    except UnicodeDecodeError:
        raise InvalidNotify(f"not {charset}") from None
    if any("\x00" in name or "\x00" in value for name, value in params.items()):
        raise InvalidNotify("NUL in a form field")
    return params


def notice_of(params: Mapping[str, str]) -> Notice:
    out_trade_no = id_field(params, "out_trade_no")
    seller_id = id_field(params, "seller_id")
    trade_status = params.get("trade_status", "")
    if trade_status not in NOTIFY_STATUSES:
        raise ValueError("bad trade_status")
    status = NOTIFY_STATUSES[trade_status]
    if any(params.get(name) for name in REFUND_FIELDS):
        status = "refunded"  # full (TRADE_CLOSED) or partial (TRADE_SUCCESS) refund: never a payment
    currency = trade_currency(params)
    amount = yuan(params.get("total_amount"), currency)
    paid_at = alipay_time(params["gmt_payment"]) if params.get("gmt_payment") else None
    if status == "paid" and paid_at is None:
        raise ValueError("paid without gmt_payment")
    notify_id = params.get("notify_id")
    return Notice(
        payment_id=out_trade_no,
        order_id=out_trade_no,
        merchant_id=seller_id,
        status=status,
        amount_cents=amount,
        currency=currency,
        paid_at=paid_at,
        event_id=notify_id if notify_id and ID_RE.fullmatch(notify_id) else None,
    )


def id_field(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ValueError(f"bad {name}")
    return value


def trade_currency(data: Mapping[str, Any]) -> str:
    """CNY, unless a cross-border trade names its pricing currency (then total_amount is in it)."""
    try:
        return check_currency(data.get("trans_currency") or CURRENCY)
    except MoneyError:
        raise ValueError("bad trans_currency") from None


def yuan(value: Any, currency: str = CURRENCY) -> int:
    if not isinstance(value, str) or not AMOUNT_RE.fullmatch(value):
        raise ValueError("bad total_amount")
    try:
        return to_minor(value, currency)
    except MoneyError:
        raise ValueError("bad total_amount") from None


def alipay_time(value: Any) -> datetime:
    if not isinstance(value, str) or not TIME_RE.fullmatch(value):
        raise ValueError("bad time")
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=SHANGHAI).astimezone(UTC)
    except ValueError:
        raise ValueError("bad time") from None


def shanghai_time(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime(TIME_FORMAT)
