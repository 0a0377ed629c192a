"""A merchant's tokens: one owner (who adds and revokes staff) and named staff.

Like the platform's staff tokens (miaofa/staff.py): random, shown once, kept only as a keyed hash
and found by it. A token belongs to exactly one merchant; nothing it opens is another's.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import func

from miaofa.crypto.vault import Vault
from miaofa.db.models import Merchant, MerchantToken
from miaofa.errors import Conflict, InvalidInput, NotFound
from miaofa.staff import LAST_USED_EVERY, MAX_TOKEN_CHARS, NAME

ROLES = ("owner", "staff")
TOKEN_PREFIX = "mfm_"


@dataclass(frozen=True)
class MerchantHolder:
    merchant_id: str
    slug: str
    name: str
    role: str
    token_id: int = 0  # the token's row: what a console session names (never the token itself)

    @property
    def actor(self) -> str:
        """How the audit log and the order's timeline name this person: unique on the platform."""
        return f"{self.slug}/{self.name}"[:40]


async def add(session: AsyncSession, vault: Vault, *, merchant_id: str, role: str, name: str, created_by: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role: one of {', '.join(ROLES)}")
    if not NAME.match(name):
        raise InvalidInput("name: 1-32 characters: lowercase letters, digits, '.', '_' or '-'")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        MerchantToken(
            merchant_id=merchant_id,
            name=name,
            role=role,
            token_hash=vault.staff_token_hash(token),
            created_by=created_by[:40],
        )
    )
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"{name!r} already holds a live token; revoke it first", error="token_name_taken") from None
    return token


async def listing(session: AsyncSession, merchant_id: str) -> list[MerchantToken]:
    return list(
        await session.scalars(
            select(MerchantToken)
            .where(MerchantToken.merchant_id == merchant_id, MerchantToken.revoked_at.is_(None))
            .order_by(MerchantToken.name)
        )
    )


async def revoke(session: AsyncSession, merchant_id: str, name: str) -> MerchantToken:
    token = await session.scalar(
        select(MerchantToken).where(
            MerchantToken.merchant_id == merchant_id, MerchantToken.name == name, MerchantToken.revoked_at.is_(None)
        )
    )
    if token is None:
        raise NotFound(f"no live token named {name!r}", error="token_not_found")
    if token.role == "owner":
        raise Conflict("the owner's token is replaced by the platform admin, not from the shop", error="owner_token")
    token.revoked_at = datetime.now().astimezone()
    await session.flush()
    return token


async def holder(sessionmaker: async_sessionmaker[AsyncSession], vault: Vault, token: str) -> MerchantHolder | None:
    """The live token's merchant and holder, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        return None
    digest = vault.staff_token_hash(token)
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    MerchantToken.id,
                    MerchantToken.merchant_id,
                    Merchant.slug,
                    MerchantToken.name,
                    MerchantToken.role,
                    MerchantToken.last_used_at,
                )
                .join(Merchant, Merchant.id == MerchantToken.merchant_id)
                .where(MerchantToken.token_hash == digest, MerchantToken.revoked_at.is_(None))
            )
        ).first()
        if row is None:
            return None
        if row.last_used_at is None or row.last_used_at < datetime.now().astimezone() - LAST_USED_EVERY:
            await session.execute(
                update(MerchantToken).where(MerchantToken.id == row.id).values(last_used_at=func.now())
            )
            await session.commit()
    return MerchantHolder(row.merchant_id, row.slug, row.name, row.role, row.id)


async def holder_by_id(sessionmaker: async_sessionmaker[AsyncSession], token_id: int) -> MerchantHolder | None:
    """The holder of this token row while it is live (a console session re-checks it on every page)."""
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(MerchantToken.merchant_id, Merchant.slug, MerchantToken.name, MerchantToken.role)
                .join(Merchant, Merchant.id == MerchantToken.merchant_id)
                .where(MerchantToken.id == token_id, MerchantToken.revoked_at.is_(None))
            )
        ).first()
    return None if row is None else MerchantHolder(row.merchant_id, row.slug, row.name, row.role, token_id)
