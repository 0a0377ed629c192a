"""Merchant accounts: made by the platform admin, suspended with a reason the merchant reads."""

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa import audit
from miaofa.crypto.vault import Vault
from miaofa.db.models import DEFAULT_MERCHANT, KeyFlag, Merchant, Product
from miaofa.errors import Conflict, InvalidInput, NotFound
from miaofa.merchants import tokens
from miaofa.text import control_character

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
# Slugs that would read as the platform's own pages or people.
RESERVED_SLUGS = frozenset({"admin", "api", "console", "platform", "static", "support", "system", "miaofa"})
SETTLEMENTS = ("platform", "direct")
MAX_HOLD_SECONDS = 90 * 86400  # a hold longer than a quarter is withholding, not a hold


@dataclass(frozen=True)
class NewMerchant:
    merchant: Merchant
    owner_token: str  # shown once


def slug_problem(slug: str) -> str | None:
    if not SLUG.match(slug):
        return "slug: 2-32 characters: lowercase letters, digits and '-', starting with a letter or digit"
    if slug in RESERVED_SLUGS:
        return f"slug: {slug!r} is reserved"
    return None


def _check(name: str, settlement: str, fee_bps: int, hold_seconds: int) -> None:
    if not name.strip() or len(name) > 100 or control_character(name):
        raise InvalidInput("name: 1-100 characters, no control characters")
    if settlement not in SETTLEMENTS:
        raise InvalidInput(f"settlement: one of {', '.join(SETTLEMENTS)}")
    if not 0 <= fee_bps <= 10000:
        raise InvalidInput("fee_bps: from 0 to 10000 (basis points: 250 is 2.5 %)")
    if not 0 <= hold_seconds <= MAX_HOLD_SECONDS:
        raise InvalidInput(f"hold_seconds: from 0 to {MAX_HOLD_SECONDS}")


async def create(
    session: AsyncSession,
    vault: Vault,
    *,
    slug: str,
    name: str,
    settlement: str = "platform",
    fee_bps: int = 0,
    hold_seconds: int = 0,
    created_by: str,
) -> NewMerchant:
    """A merchant and its owner's token, in the caller's transaction."""
    if problem := slug_problem(slug):
        raise InvalidInput(problem)
    _check(name, settlement, fee_bps, hold_seconds)
    if await session.scalar(select(Merchant.id).where(Merchant.slug == slug)) is not None:
        raise Conflict(f"the slug {slug!r} is taken", error="slug_taken")
    merchant = Merchant(
        id="m_" + secrets.token_hex(8),
        slug=slug,
        name=name.strip(),
        settlement=settlement,
        fee_bps=fee_bps,
        hold_seconds=hold_seconds,
        status="active",
    )
    session.add(merchant)
    try:
        await session.flush()
    except IntegrityError:  # the same slug made at the same moment elsewhere
        raise Conflict(f"the slug {slug!r} is taken", error="slug_taken") from None
    token = await tokens.add(session, vault, merchant_id=merchant.id, role="owner", name="owner", created_by=created_by)
    audit.record(session, created_by, "merchant.create", merchant.id, merchant_id=merchant.id, slug=slug)
    return NewMerchant(merchant, token)


async def by_slug(session: AsyncSession, slug: str) -> Merchant:
    merchant = await session.scalar(select(Merchant).where(Merchant.slug == slug)) if len(slug) <= 32 else None
    if merchant is None:
        raise NotFound(f"no merchant {slug[:32]!r}", error="unknown_merchant")
    return merchant


async def by_id(session: AsyncSession, merchant_id: str) -> Merchant:
    merchant = await session.get(Merchant, merchant_id) if len(merchant_id) <= 32 else None
    if merchant is None:
        raise NotFound(f"no merchant {merchant_id[:32]!r}", error="unknown_merchant")
    return merchant


async def by_id_or_slug(session: AsyncSession, merchant: str) -> Merchant:
    """The shop named by its id (m_…, default) or its slug, as platform staff type it."""
    found = (
        await session.scalar(select(Merchant).where((Merchant.id == merchant) | (Merchant.slug == merchant)))
        if len(merchant) <= 32
        else None
    )
    if found is None:
        raise NotFound(f"no merchant {merchant[:32]!r}", error="unknown_merchant")
    return found


async def suspension(session: AsyncSession, merchant_id: str) -> str | None:
    """The suspension's reason while the shop is suspended, else None.

    The shop's row stays locked FOR SHARE until the caller's transaction ends, so a suspension being
    committed at the same moment is waited for and seen, never missed, and none can commit until the
    caller's decision is made (set_status updates that row)."""
    row = (
        await session.execute(
            select(Merchant.status, Merchant.status_reason).where(Merchant.id == merchant_id).with_for_update(read=True)
        )
    ).first()
    if row is None:
        raise NotFound(f"no merchant {merchant_id[:32]!r}", error="unknown_merchant")
    return (row.status_reason or "no reason given") if row.status == "suspended" else None


async def listing(session: AsyncSession) -> list[Merchant]:
    return list(await session.scalars(select(Merchant).order_by(Merchant.created_at, Merchant.id)))


async def set_status(session: AsyncSession, slug: str, *, status: str, reason: str, actor: str) -> Merchant:
    """Suspend (no new orders; open ones finish; money stays the merchant's) or resume a shop."""
    if status not in ("active", "suspended"):
        raise InvalidInput("status: active or suspended")
    reason = reason.strip()
    if status == "suspended" and not reason:
        raise InvalidInput("reason: say why, in words the merchant can read")
    if len(reason) > 300 or control_character(reason):
        raise InvalidInput("reason: at most 300 characters, no control characters")
    merchant = await by_slug(session, slug)
    if merchant.id == DEFAULT_MERCHANT and status == "suspended":
        raise Conflict("the default merchant is the single shop; it cannot be suspended", error="default_merchant")
    merchant.status, merchant.status_reason = status, reason if status == "suspended" else ""
    action = "merchant.suspend" if status == "suspended" else "merchant.resume"
    audit.record(session, actor, action, merchant.id, merchant_id=merchant.id, reason=reason)
    await session.flush()
    return merchant


async def set_terms(session: AsyncSession, slug: str, *, fee_bps: int, hold_seconds: int, actor: str) -> Merchant:
    """A new fee or hold, for later sales only: a sale's split and its hold's release time are fixed
    when the sale is posted, with the keys (miaofa/ledger/order_money.py)."""
    merchant = await by_slug(session, slug)
    _check(merchant.name, merchant.settlement, fee_bps, hold_seconds)
    was = {"fee_bps": merchant.fee_bps, "hold_seconds": merchant.hold_seconds}
    merchant.fee_bps, merchant.hold_seconds = fee_bps, hold_seconds
    audit.record(
        session,
        actor,
        "merchant.terms",
        merchant.id,
        merchant_id=merchant.id,
        was=f"{was['fee_bps']} bps, {was['hold_seconds']} s",
        now=f"{fee_bps} bps, {hold_seconds} s",
    )
    await session.flush()
    return merchant


async def key_flags(session: AsyncSession, limit: int = 500) -> list[dict[str, object]]:
    """Keys one shop imported that another already holds: a possible double sale, to look into."""
    importer, holder = Merchant.__table__.alias("importer"), Merchant.__table__.alias("holder")
    rows = await session.execute(
        select(KeyFlag.id, KeyFlag.created_at, importer.c.slug, Product.sku, holder.c.slug)
        .join(importer, importer.c.id == KeyFlag.merchant_id)
        .join(holder, holder.c.id == KeyFlag.held_by)
        .join(Product, Product.id == KeyFlag.product_id)
        .order_by(KeyFlag.id.desc())
        .limit(limit)
    )
    return [
        {"flag_id": id_, "at": at.isoformat(), "imported_by": by, "sku": sku, "also_held_by": held}
        for id_, at, by, sku, held in rows.all()
    ]


def public(merchant: Merchant) -> dict[str, object]:
    return {
        "merchant_id": merchant.id,
        "slug": merchant.slug,
        "name": merchant.name,
        "settlement": merchant.settlement,
        "fee_bps": merchant.fee_bps,
        "hold_seconds": merchant.hold_seconds,
        "status": merchant.status,
        "status_reason": merchant.status_reason,
        "created_at": merchant.created_at.isoformat() if merchant.created_at else None,
    }
