"""A direct merchant's own gateway credentials: checked, sealed in the vault, shown only masked.

The fields are the platform's settings for that gateway (miaofa/gateways/config.py), less what stays
the platform's: the gateways' fixed hosts (Alipay, WeChat Pay, Stripe) and the simulator's URL. A
host a merchant names (its epay operator, its epusdt server) must be public, like a webhook's.
"""

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import audit
from miaofa import contract as c
from miaofa.crypto.vault import Vault
from miaofa.db.models import Merchant, MerchantGatewayCredential, Order
from miaofa.errors import Conflict, InvalidInput, NotFound
from miaofa.gateways.config import GATEWAY_SETTINGS, GatewaySettings
from miaofa.netaddr import webhook_host_problem

MAX_VALUE_CHARS = 8192  # a PEM private key is ~1.7k; a whole body is bounded by api/limits.py too


@dataclass(frozen=True)
class Spec:
    fields: tuple[str, ...]  # what the merchant sends (the required ones are the settings' own)
    shown: str  # the account id, shown in full (no secret)
    masked: str  # the secret whose last 4 characters are shown
    merchant_urls: tuple[str, ...] = ()  # hosts the merchant names (public only)


SPECS: dict[str, Spec] = {
    "simulator": Spec(("merchant_id", "secret"), "merchant_id", "secret"),
    "alipay": Spec(("app_id", "private_key", "alipay_public_key", "seller_id", "product"), "app_id", "private_key"),
    "wechat": Spec(
        ("mchid", "appid", "private_key", "cert_serial_no", "apiv3_key", "public_key", "public_key_id"),
        "mchid",
        "apiv3_key",
    ),
    "stripe": Spec(("secret_key", "webhook_secret"), "", "secret_key"),
    "epay": Spec(("api_url", "pid", "key", "pay_type"), "pid", "key", ("api_url",)),
    "epusdt": Spec(("api_url", "api_token"), "api_url", "api_token", ("api_url",)),
}
SETTINGS_CLASSES: dict[str, type[GatewaySettings]] = {cls.name: cls for cls in GATEWAY_SETTINGS}


@dataclass(frozen=True)
class SimulatorAccount:
    """The simulator has no settings section of its own: its merchant id and secret."""

    merchant_id: str
    secret: str


Credentials = GatewaySettings | SimulatorAccount


def _context(merchant_id: str, gateway: str) -> str:
    return f"merchant-gateway:{merchant_id}:{gateway}"


def check(gateway: str, given: Mapping[str, Any], platform: GatewaySettings | None, allow: str = "") -> Credentials:
    """The merchant's fields as the gateway's settings; InvalidInput names the field, never its value."""
    spec = SPECS.get(gateway)
    if spec is None:
        raise NotFound(f"no gateway {gateway[:32]!r}", error="unknown_gateway")
    unknown = sorted(set(given) - set(spec.fields))
    if unknown:
        raise InvalidInput(f"{unknown[0][:40]!r}: not a field of {gateway} (fields: {', '.join(spec.fields)})")
    values: dict[str, str] = {}
    for name, value in given.items():
        if not isinstance(value, str):
            raise InvalidInput(f"{name}: a string")
        if len(value) > MAX_VALUE_CHARS or not value.isascii() or "\x00" in value:
            raise InvalidInput(f"{name}: at most {MAX_VALUE_CHARS} ASCII characters, no NUL")
        if value.startswith("@"):  # "@/path" reads a file of the server's in the platform's settings
            raise InvalidInput(f"{name}: the value itself (a PEM key or base64), not a file")
        if value:
            values[name] = value
    if gateway == "simulator":
        merchant_id, secret = values.get("merchant_id", ""), values.get("secret", "")
        if not merchant_id or len(merchant_id) > 64 or not merchant_id.isprintable():
            raise InvalidInput("merchant_id: 1-64 printable characters")
        if not 16 <= len(secret) <= 256 or not secret.isprintable() or " " in secret:
            raise InvalidInput("secret: 16-256 printable characters, no spaces")
        return SimulatorAccount(merchant_id, secret)
    for name in spec.merchant_urls:
        host = urlparse(values.get(name, "")).hostname or ""
        if problem := webhook_host_problem(host, allow):
            raise InvalidInput(f"{name}: {problem}")
    cls = SETTINGS_CLASSES[gateway]
    inherited = platform.model_dump(include=set(cls.urls) - set(spec.fields)) if platform is not None else {}
    missing = [name for name in cls.required if name not in values and name not in inherited]
    if missing:
        raise InvalidInput(f"required: {', '.join(missing)}")
    try:
        settings = cls.model_validate({**inherited, **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "fields"
        # msg only: pydantic's str(exc) would quote the input, which may be a key.
        said = re.sub(r"MIAOFA_[A-Z]+__([A-Z0-9_]+)", lambda m: m.group(1).lower(), str(first.get("msg", "invalid")))
        raise InvalidInput(f"{where}: {said[:160]}") from None
    return settings


def as_json(credentials: Credentials) -> str:
    if isinstance(credentials, SimulatorAccount):
        return json.dumps({"merchant_id": credentials.merchant_id, "secret": credentials.secret})
    fields = credentials.model_dump()
    return json.dumps({k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in fields.items()})


def from_json(gateway: str, text: str) -> Credentials:
    data = json.loads(text)
    if gateway == "simulator":
        return SimulatorAccount(data["merchant_id"], data["secret"])
    return SETTINGS_CLASSES[gateway].model_validate(data)


def summary(gateway: str, credentials: Credentials) -> str:
    """What is shown of saved credentials: the account id and the last 4 of the key, when long enough."""
    spec = SPECS[gateway]
    data = json.loads(as_json(credentials))
    secret = "".join(str(data.get(spec.masked, "")).split())
    secret = secret.removesuffix("-----ENDPRIVATEKEY-----").removesuffix("-----ENDRSAPRIVATEKEY-----")
    tail = f"…{secret[-4:]}" if len(secret) >= 16 else "…"
    shown = str(data.get(spec.shown, ""))[:80] if spec.shown else ""
    return f"{shown} {spec.masked} {tail}".strip()[:200]


async def _direct(session: AsyncSession, merchant_id: str) -> Merchant:
    merchant = await session.get(Merchant, merchant_id)
    if merchant is None:
        raise NotFound("no such merchant", error="unknown_merchant")
    if merchant.settlement != "direct":
        raise Conflict("only a merchant with direct settlement keeps its own gateway credentials", error="not_direct")
    return merchant


async def ensure_direct(session: AsyncSession, merchant_id: str) -> None:
    await _direct(session, merchant_id)


async def save(
    session: AsyncSession, vault: Vault, merchant_id: str, gateway: str, credentials: Credentials, actor: str
) -> MerchantGatewayCredential:
    """Insert or replace, in the caller's transaction: one row per (merchant, gateway), also when two
    saves race (the unique constraint decides, the later one replaces)."""
    await _direct(session, merchant_id)
    sealed = vault.seal(as_json(credentials), _context(merchant_id, gateway))
    shown = summary(gateway, credentials)
    row = await session.scalar(
        insert(MerchantGatewayCredential)
        .values(merchant_id=merchant_id, gateway=gateway, ciphertext=sealed, summary=shown)
        .on_conflict_do_update(
            index_elements=["merchant_id", "gateway"],
            set_={"ciphertext": sealed, "summary": shown, "updated_at": func.clock_timestamp()},
        )
        .returning(MerchantGatewayCredential)
    )
    assert row is not None
    audit.record(session, actor, "merchant.gateway_save", f"{merchant_id}:{gateway}", merchant_id=merchant_id)
    return row


OPEN = (c.AWAITING_PAYMENT, c.IN_REVIEW, c.PAID)  # orders whose payment the gateway account must still answer for


async def remove(session: AsyncSession, merchant_id: str, gateway: str, actor: str) -> None:
    """Refused while an order of the shop is still open at that gateway: its notify, poll, close or
    refund would have no account to go to."""
    await _direct(session, merchant_id)
    open_order = await session.scalar(
        select(Order.id)
        .where(Order.merchant_id == merchant_id, Order.gateway == gateway, Order.status.in_(OPEN))
        .limit(1)
    )
    if open_order is not None:
        raise Conflict(f"orders at {gateway} are still open; remove it once they are settled", error="gateway_in_use")
    gone = await session.execute(
        delete(MerchantGatewayCredential)
        .where(MerchantGatewayCredential.merchant_id == merchant_id, MerchantGatewayCredential.gateway == gateway)
        .returning(MerchantGatewayCredential.id)
    )
    if gone.first() is None:
        raise NotFound(f"no credentials for {gateway[:32]!r}", error="no_credentials")
    audit.record(session, actor, "merchant.gateway_delete", f"{merchant_id}:{gateway}", merchant_id=merchant_id)


async def listing(session: AsyncSession, merchant_id: str) -> list[MerchantGatewayCredential]:
    return list(
        await session.scalars(
            select(MerchantGatewayCredential)
            .where(MerchantGatewayCredential.merchant_id == merchant_id)
            .order_by(MerchantGatewayCredential.gateway)
        )
    )


async def load(session: AsyncSession, vault: Vault, merchant_id: str, gateway: str) -> tuple[Credentials, Any] | None:
    """The merchant's credentials for a gateway and when they last changed, or None."""
    row = await session.scalar(
        select(MerchantGatewayCredential).where(
            MerchantGatewayCredential.merchant_id == merchant_id, MerchantGatewayCredential.gateway == gateway
        )
    )
    if row is None:
        return None
    return from_json(gateway, vault.unseal(row.ciphertext, _context(merchant_id, gateway))), row.updated_at


def probe_order_id() -> str:
    """An order id no shop ever made: the harmless query that tests credentials."""
    return "probe" + secrets.token_hex(8)
