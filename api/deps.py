"""Dependencies for routes: the app state, a session that commits, and token checks."""

import secrets
from collections.abc import AsyncIterator, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.ordering import OrderDesk
from api.state import State
from miaofa import staff
from miaofa.errors import Forbidden, Unauthorized
from miaofa.merchants import tokens as merchant_tokens
from miaofa.merchants.tokens import MerchantHolder


def get_state(request: Request) -> State:
    return request.app.state.miaofa


StateDep = Annotated[State, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session per request; it commits when the handler succeeds, the handler never does."""
    async with state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": committed before the answer is sent. By default FastAPI ends a yield dependency
# after sending, so a client could act on a 201 (a new merchant's token) before its row was committed.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_desk(state: StateDep) -> OrderDesk:
    return OrderDesk(state)


DeskDep = Annotated[OrderDesk, Depends(get_desk)]


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send Authorization: Bearer <token>", error="missing_token")
    return authorization[7:].strip()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time, for any text a client sends (compare_digest refuses non-ASCII str); an unset
    secret matches nothing."""
    if not expected:
        return False
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


async def _actor(state: State, authorization: str | None, role: str) -> str:
    """Who holds this token, if it may act as `role`: the settings' tokens ("admin", "support"), or a
    named token (miaofa/staff.py). An admin may do what support does."""
    token = _bearer(authorization)
    settings = state.settings
    if role == "support" and same_secret(token, settings.support_token):
        return "support"
    if same_secret(token, settings.admin_token):
        return "admin"
    found = await staff.holder(state.sessionmaker, state.vault, token)
    if found is not None and (found.role == "admin" or role == "support"):
        return found.name
    raise Unauthorized(
        "the token is not the admin token" if role == "admin" else "the token is not a support token",
        error="invalid_token",
    )


# The request-limits middleware checks the token first and leaves the holder here, so a request
# costs one lookup.
ACTOR_SCOPE_KEY = "miaofa.actor"


async def actor_for(state: State, scope: MutableMapping[str, Any], authorization: str | None, role: str) -> str:
    known = scope.get(ACTOR_SCOPE_KEY)
    if known is not None and known[0] == role:
        return known[1]
    actor = await _actor(state, authorization, role)
    scope[ACTOR_SCOPE_KEY] = (role, actor)
    return actor


async def require_admin(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    return await actor_for(state, request.scope, authorization, "admin")


async def require_support(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    return await actor_for(state, request.scope, authorization, "support")


AdminDep = Annotated[str, Depends(require_admin)]
SupportDep = Annotated[str, Depends(require_support)]


# ---- merchants: a merchant token opens that merchant's own things, and nothing else ----------------

MERCHANT_SCOPE_KEY = "miaofa.merchant"


async def merchant_for(state: State, scope: MutableMapping[str, Any], authorization: str | None) -> MerchantHolder:
    known = scope.get(MERCHANT_SCOPE_KEY)
    if known is not None:
        return known
    found = await merchant_tokens.holder(state.sessionmaker, state.vault, _bearer(authorization))
    if found is None:
        raise Unauthorized("the token is not a merchant token", error="invalid_token")
    scope[MERCHANT_SCOPE_KEY] = found
    return found


async def require_merchant(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> MerchantHolder:
    return await merchant_for(state, request.scope, authorization)


MerchantDep = Annotated[MerchantHolder, Depends(require_merchant)]


async def require_owner(holder: MerchantDep) -> MerchantHolder:
    if holder.role != "owner":
        raise Forbidden("only the shop's owner may do this")
    return holder


OwnerDep = Annotated[MerchantHolder, Depends(require_owner)]
