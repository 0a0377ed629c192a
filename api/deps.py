"""Dependencies for routes: the app state, a session that commits, and token checks."""

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import State
from miaofa.errors import Unauthorized
from miaofa.settings import Settings


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


SessionDep = Annotated[AsyncSession, Depends(get_session)]


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


def admin_actor(authorization: str | None, settings: Settings) -> str:
    if not same_secret(_bearer(authorization), settings.admin_token):
        raise Unauthorized("the token is not the admin token", error="invalid_token")
    return "admin"


def support_actor(authorization: str | None, settings: Settings) -> str:
    token = _bearer(authorization)
    # The admin may do what support does.
    if same_secret(token, settings.support_token):
        return "support"
    if same_secret(token, settings.admin_token):
        return "admin"
    raise Unauthorized("the token is not a support token", error="invalid_token")


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> str:
    return admin_actor(authorization, state.settings)


def require_support(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> str:
    return support_actor(authorization, state.settings)


AdminDep = Annotated[str, Depends(require_admin)]
SupportDep = Annotated[str, Depends(require_support)]
