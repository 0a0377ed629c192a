"""Staff tokens: support, admin and finance are roles, each held by named tokens, so every action has
a name. Finance reviews withdrawals and reads the ledger check, nothing else (api/deps.py DOORS).

A token is random, shown once when made, and kept only as a keyed hash (HMAC-SHA256 under a key
derived from the vault key): a token is found by its hash, one indexed lookup, so checking it takes
the same time whatever was sent. MIAOFA_ADMIN_TOKEN and MIAOFA_SUPPORT_TOKEN still work, as the
holders "admin" and "support".
"""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import func

from miaofa.crypto.vault import Vault
from miaofa.db.models import StaffToken

ROLES = ("support", "admin", "finance")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
# Names the shop already writes as actors: a person may not pass for the settings' tokens or the system.
RESERVED = frozenset({"admin", "support", "system", "reconcile"})
TOKEN_PREFIX = "mfs_"
MAX_TOKEN_CHARS = 200  # anything longer is no token of ours: refused without hashing or a query
LIVE = "{name!r} already holds a live token; revoke it first"
LAST_USED_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token


class TokenError(ValueError):
    """A token cannot be made or revoked as asked; the message says why, in one sentence."""


@dataclass(frozen=True)
class Holder:
    name: str
    role: str


def name_problem(name: str) -> str | None:
    if not NAME.match(name):
        return "a name is 1-32 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    if name in RESERVED:
        return f"{name!r} is reserved (it names the settings' tokens or the shop itself)"
    return None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def add(session: AsyncSession, vault: Vault, *, role: str, name: str, created_by: str) -> str:
    """Make a token for `name` and return it: the only time it exists outside the holder's hands."""
    if role not in ROLES:
        raise TokenError(f"the role must be one of: {', '.join(ROLES)}")
    if problem := name_problem(name):
        raise TokenError(problem)
    # A name keeps its role for good: "carl" in the audit log must not mean support on one day and
    # admin on another. A new token for the same person in the same role is fine.
    held = (await session.execute(select(StaffToken.role, StaffToken.revoked_at).where(StaffToken.name == name))).all()
    if any(revoked_at is None for _, revoked_at in held):
        raise TokenError(LIVE.format(name=name))
    if other := sorted({was for was, _ in held} - {role}):
        raise TokenError(f"{name!r} was a {other[0]} token; a name keeps its role, so pick another name")
    token = new_token()
    session.add(StaffToken(name=name, role=role, token_hash=vault.staff_token_hash(token), created_by=created_by[:40]))
    try:
        await session.flush()
    except IntegrityError:
        raise TokenError(LIVE.format(name=name)) from None  # made at the same moment elsewhere
    return token


async def listing(session: AsyncSession, *, with_revoked: bool = False) -> list[StaffToken]:
    query = select(StaffToken).order_by(StaffToken.name, StaffToken.id)
    if not with_revoked:
        query = query.where(StaffToken.revoked_at.is_(None))
    return list(await session.scalars(query))


async def revoke(session: AsyncSession, name: str) -> StaffToken:
    token = await session.scalar(select(StaffToken).where(StaffToken.name == name, StaffToken.revoked_at.is_(None)))
    if token is None:
        raise TokenError(f"no live token named {name!r}")
    token.revoked_at = datetime.now().astimezone()
    await session.flush()
    return token


async def holder(sessionmaker: async_sessionmaker[AsyncSession], vault: Vault, token: str) -> Holder | None:
    """The live token's holder, or None. Notes when it was used, once a minute at most."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    digest = vault.staff_token_hash(token)
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(StaffToken.id, StaffToken.name, StaffToken.role, StaffToken.last_used_at).where(
                    StaffToken.token_hash == digest, StaffToken.revoked_at.is_(None)
                )
            )
        ).first()
        if row is None:
            return None
        if row.last_used_at is None or row.last_used_at < datetime.now().astimezone() - LAST_USED_EVERY:
            await session.execute(update(StaffToken).where(StaffToken.id == row.id).values(last_used_at=func.now()))
            await session.commit()
    return Holder(row.name, row.role)
