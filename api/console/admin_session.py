"""The platform admin's console session: a cookie of its own (`mf_console_admin`, Path=/console/admin,
HttpOnly, SameSite=Strict), HMAC-signed like the merchant console's, never holding the token.

Who may sign in: the settings' admin token (MIAOFA_ADMIN_TOKEN) or a named staff token with the role
admin (miaofa/staff.py); a merchant's token never. Cookie: `a1.<subject>.<expiry, unix s>.<mac>`,
where the subject is 0 for the settings' token, else the staff token's row id, re-read on every
request so a revoked token ends its sessions at once. The MAC key mixes in a digest of the settings'
admin token, so rotating that token ends every admin session too.
"""

import base64
import hashlib
import hmac
import re
import time
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from starlette.responses import Response

from api.console.session import SignedOut, secure_cookie
from api.deps import StateDep, same_secret
from api.state import State
from miaofa import staff
from miaofa.db.models import StaffToken

COOKIE = "mf_console_admin"
PATH = "/console/admin"
LIFETIME = 4 * 3600  # shorter than a merchant's: this session can close any shop
SETTINGS_ADMIN = 0
_VALUE = re.compile(r"^a1\.([0-9]{1,18})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class AdminSignedOut(SignedOut):
    error = "admin_signed_out"  # one class per code (tests/saga/test_contracts.py)
    sign_in = "/console/admin/sign-in"


def _key(form_key: bytes, admin_token: str) -> bytes:
    rotated = hashlib.sha256(admin_token.encode("utf-8", "surrogatepass")).digest()
    return hmac.new(form_key, b"miaofa/console/admin-session\0" + rotated, hashlib.sha256).digest()


def _mac(key: bytes, subject: int, expiry: int) -> str:
    mac = hmac.new(key, f"a1.{subject}.{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def seal(key: bytes, subject: int, now: float | None = None) -> str:
    expiry = int(now if now is not None else time.time()) + LIFETIME
    return f"a1.{subject}.{expiry}.{_mac(key, subject, expiry)}"


def opened(key: bytes, value: str, now: float | None = None) -> int | None:
    found = _VALUE.match(value)
    if found is None:
        return None
    subject, expiry = int(found[1]), int(found[2])
    if not hmac.compare_digest(_mac(key, subject, expiry), found[3]):
        return None
    return subject if expiry > (now if now is not None else time.time()) else None


def _state_key(state: State) -> bytes:
    return _key(state.vault.form_key, state.settings.admin_token)


async def who(state: State, token: str) -> tuple[int, str] | None:
    """(subject, actor) for a token that may open the admin console, else None."""
    if not token or len(token) > staff.MAX_TOKEN_CHARS:
        return None
    if same_secret(token, state.settings.admin_token):
        return SETTINGS_ADMIN, "admin"
    found = await staff.holder(state.sessionmaker, state.vault, token)
    if found is None or found.role != "admin":
        return None
    async with state.sessionmaker() as session:
        row_id = await session.scalar(
            select(StaffToken.id).where(StaffToken.name == found.name, StaffToken.revoked_at.is_(None))
        )
    return (row_id, found.name) if row_id is not None else None


def start(request: Request, response: Response, state: State, subject: int) -> None:
    response.set_cookie(
        COOKIE,
        seal(_state_key(state), subject),
        max_age=LIFETIME,
        path=PATH,
        secure=secure_cookie(request),
        httponly=True,
        samesite="strict",
    )


def end(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=secure_cookie(request), httponly=True, samesite="strict")


async def signed_in(request: Request, state: StateDep) -> str:
    """The admin actor of this browser's session (as the audit log names it)."""
    subject = opened(_state_key(state), request.cookies.get(COOKIE, ""))
    actor: str | None = None
    if subject == SETTINGS_ADMIN:
        actor = "admin" if state.settings.admin_token else None
    elif subject is not None:
        async with state.sessionmaker() as session:
            actor = await session.scalar(
                select(StaffToken.name).where(
                    StaffToken.id == subject, StaffToken.revoked_at.is_(None), StaffToken.role == "admin"
                )
            )
    if actor is None:
        raise AdminSignedOut("sign in first")
    request.state.console_admin = actor  # the header names who is signed in
    return actor


AdminConsoleDep = Annotated[str, Depends(signed_in)]
