"""Dependencies for routes: the app state, a session that commits, and token checks."""

import re
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


# Which holders' roles each door lets in. An admin may do what support and finance do; finance lists,
# approves and rejects withdrawals and reads the ledger check, and nothing else.
DOORS = {
    "admin": ("admin",),
    "support": ("admin", "support"),
    "finance": ("admin", "finance"),
}
NOT_YOURS = {
    "admin": "the token is not the admin token",
    "support": "the token is not a support token",
    "finance": "the token is not the admin token or a finance token",
}
# The /admin paths behind FinanceDep, for the request-limits middleware: it checks the door before a
# byte of the body is read, so a finance token sent elsewhere under /admin is refused there (403).
# A new finance route is added here too, or finance gets 403 before reaching it.
FINANCE_PATHS = re.compile(r"^/admin/(withdrawals(/[^/]+(/(approve|reject))?)?|ledger/check)/?$")
FINANCE_ONLY = (
    "a finance token may list, approve and reject withdrawals and read the ledger check; this needs another role"
)


async def _holder(state: State, authorization: str | None, door: str) -> staff.Holder | None:
    """Who holds this token: the settings' tokens (the holders "admin" and "support"), or a named
    token (miaofa/staff.py); None for a token nobody holds."""
    token = _bearer(authorization)
    settings = state.settings
    if door == "support" and same_secret(token, settings.support_token):
        return staff.Holder("support", "support")
    if same_secret(token, settings.admin_token):
        return staff.Holder("admin", "admin")
    if same_secret(token, settings.support_token):
        return staff.Holder("support", "support")
    return await staff.holder(state.sessionmaker, state.vault, token)


def permit(holder: staff.Holder | None, door: str) -> str:
    """The holder's name, if its role opens this door. A finance token is known here and refused what
    is not finance's (403); any other token that does not open the door is not this door's (401)."""
    if holder is not None and holder.role in DOORS[door]:
        return holder.name
    if holder is not None and holder.role == "finance":
        raise Forbidden(FINANCE_ONLY)
    raise Unauthorized(NOT_YOURS[door], error="invalid_token")


# The request-limits middleware checks the token first and leaves its holder here, so a request
# costs one lookup whichever doors its route then asks for.
ACTOR_SCOPE_KEY = "miaofa.actor"


async def actor_for(state: State, scope: MutableMapping[str, Any], authorization: str | None, door: str) -> str:
    if ACTOR_SCOPE_KEY in scope:
        return permit(scope[ACTOR_SCOPE_KEY], door)
    holder = await _holder(state, authorization, door)
    scope[ACTOR_SCOPE_KEY] = holder
    return permit(holder, door)


async def require_admin(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    return await actor_for(state, request.scope, authorization, "admin")


async def require_support(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    return await actor_for(state, request.scope, authorization, "support")


async def require_finance(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    return await actor_for(state, request.scope, authorization, "finance")


AdminDep = Annotated[str, Depends(require_admin)]
SupportDep = Annotated[str, Depends(require_support)]
FinanceDep = Annotated[str, Depends(require_finance)]  # withdrawals' review and the ledger check


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
