"""The console's session: a cookie naming the merchant token's row and an expiry, signed (HMAC) with a
key derived from the vault key. No table holds sessions; every request re-reads the token's row, so a
revoked token ends its sessions at once. The token itself is never in the cookie.

Cookie: `v1.<token row id>.<expiry, unix seconds>.<mac>`; HttpOnly, SameSite=Strict, Path=/console,
Secure when the request came over https (or the shop's public URL is https).
"""

import base64
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from api.deps import StateDep
from miaofa.errors import Forbidden, Unauthorized
from miaofa.merchants import tokens
from miaofa.merchants.tokens import MerchantHolder

COOKIE = "mf_console"
PATH = "/console"
LIFETIME = 12 * 3600
_VALUE = re.compile(r"^v1\.([0-9]{1,18})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class SignedOut(Unauthorized):
    """No live session: the page answers with a redirect to the sign-in page."""

    error = "signed_out"
    sign_in = "/console/sign-in"  # where the page sends the browser


def _key(form_key: bytes) -> bytes:
    # Its own key, derived from the vault's form key (itself derived from the vault key): a CSRF token
    # can never pass for a session, nor the reverse.
    return hmac.new(form_key, b"miaofa/console/session", hashlib.sha256).digest()


def _mac(key: bytes, token_id: int, expiry: int) -> str:
    mac = hmac.new(_key(key), f"v1.{token_id}.{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def seal(key: bytes, token_id: int, now: float | None = None) -> str:
    expiry = int(now if now is not None else time.time()) + LIFETIME
    return f"v1.{token_id}.{expiry}.{_mac(key, token_id, expiry)}"


def opened(key: bytes, value: str, now: float | None = None) -> int | None:
    """The token row id a cookie names, if its MAC is ours and it has not expired."""
    found = _VALUE.match(value)
    if found is None:
        return None
    token_id, expiry = int(found[1]), int(found[2])
    if not hmac.compare_digest(_mac(key, token_id, expiry), found[3]):
        return None
    return token_id if expiry > (now if now is not None else time.time()) else None


def secure_cookie(request: Request) -> bool:
    return request.url.scheme == "https" or request.app.state.miaofa.csrf.secure


def start(request: Request, response: Response, holder: MerchantHolder) -> None:
    response.set_cookie(
        COOKIE,
        seal(request.app.state.miaofa.vault.form_key, holder.token_id),
        max_age=LIFETIME,
        path=PATH,
        secure=secure_cookie(request),
        httponly=True,
        samesite="strict",
    )


def end(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=secure_cookie(request), httponly=True, samesite="strict")


async def signed_in(request: Request, state: StateDep) -> MerchantHolder:
    token_id = opened(state.vault.form_key, request.cookies.get(COOKIE, ""))
    found = await tokens.holder_by_id(state.sessionmaker, token_id) if token_id is not None else None
    if found is None:
        raise SignedOut("sign in first")
    request.state.console_holder = found  # the page's header names who is signed in
    return found


ConsoleDep = Annotated[MerchantHolder, Depends(signed_in)]


async def owner(holder: ConsoleDep) -> MerchantHolder:
    if holder.role != "owner":
        raise Forbidden("only the shop's owner may do this")
    return holder


ConsoleOwnerDep = Annotated[MerchantHolder, Depends(owner)]


async def db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session the handler commits itself. Unlike api.deps.SessionDep it never commits on exit: a
    console route turns its errors into pages (pages.ConsoleRoute), so the exit cannot tell a refusal
    from a success, and what was not committed is rolled back when the session closes."""
    async with state.sessionmaker() as session:
        yield session


DbDep = Annotated[AsyncSession, Depends(db_session)]
