"""The codec endpoint the Temporal UI and the `temporal` CLI call to see decrypted payloads.

Every call needs a staff credential (support or admin), from loopback too: a local user who can
read histories through the UI must not read the buyers' emails in them, nor encrypt an Update of
their own. Two ways to send it:
- `Authorization: Bearer <token>`, from anywhere: the CLI's `--codec-auth 'Bearer <token>'`;
- the codec cookie, for the UI in a browser (the UI sends an Authorization header only with an OIDC
  login): `GET /codec/login` takes a token once and keeps it in an HttpOnly, SameSite=Strict cookie
  scoped to /codec, which the UI's codec calls carry (its `includeCredentials`). With the cookie, the
  request must also come to one of the shop's own names (a DNS-rebinding page sends `Host:
  evil.example`) from the UI's origin, or no origin (any other page is refused).
"""

import html
import json
import re
import secrets
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import StateDep
from api.routes.web import secure
from miaofa import staff
from miaofa.crypto.codec import UndecodablePayload
from miaofa.errors import InvalidInput, Unauthorized
from miaofa.settings import Settings

router = APIRouter(prefix="/codec", tags=["ops"])

COOKIE = "miaofa_codec"
COOKIE_SECONDS = 8 * 3600  # a working day; then the login page again
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ANY_ADDRESS = ("0.0.0.0", "::", "")
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Miaofa codec: sign in</title></head>
<body><h1>Decode payloads in the Temporal UI</h1>
<p>Your support or admin token is kept in a cookie for this browser ({hours} h), sent only to this
shop's /codec. Then open the Temporal UI at {ui}.</p>
<form method="post" action="/codec/login">
<label>Token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Sign in</button></form>
<form method="post" action="/codec/logout"><button type="submit">Sign out</button></form>
</body></html>"""


def _netloc(host: str, port: int | None, scheme: str = "http") -> str:
    return host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"


def own_hosts(settings: Settings) -> set[str]:
    """The Host headers a browser sends when it talks to this shop by one of its own names."""
    hosts = {f"{name}:{settings.api_port}" for name in _LOOPBACK_NAMES}
    if settings.api_host not in _ANY_ADDRESS:
        hosts.add(f"{settings.api_host}:{settings.api_port}")
    public = urlsplit(settings.api_url)
    if public.hostname and public.hostname not in _ANY_ADDRESS:  # never "0.0.0.0": browsers may route it here
        name = f"[{public.hostname}]" if ":" in public.hostname else public.hostname
        hosts.add(_netloc(name, public.port, public.scheme))
        if public.port is None:
            hosts.add(f"{name}:{_DEFAULT_PORTS.get(public.scheme, 80)}")
    return {host.lower() for host in hosts}


def ui_origins(settings: Settings) -> set[str]:
    """The Temporal UI's origins (the same the CORS middleware allows)."""
    return {f"http://{name}:{settings.temporal_ui_port}" for name in ("localhost", "127.0.0.1")}


def _same_token(given: str, expected: str) -> bool:
    # As bytes: compare_digest raises TypeError on non-ASCII str, which would be a 500.
    return bool(expected) and secrets.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


async def _staff(state, token: str) -> bool:
    """A support or admin token: the settings' own, or a live one made by `miaofa tokens add`."""
    settings = state.settings
    if _same_token(token, settings.support_token) or _same_token(token, settings.admin_token):
        return True
    return bool(token) and await staff.holder(state.sessionmaker, state.vault, token) is not None


def _own_page(request: Request, settings: Settings, origins: set[str]) -> bool:
    """Addressed to one of the shop's names (no DNS rebinding), from one of `origins` or no page at all."""
    if request.headers.get("host", "").lower() not in own_hosts(settings):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin.lower() in origins


async def _allowed(request: Request, state) -> bool:
    auth = request.headers.get("authorization", "")
    if auth:
        return auth.lower().startswith("bearer ") and await _staff(state, auth[7:].strip())
    cookie = request.cookies.get(COOKIE, "")
    from_ui = _own_page(request, state.settings, ui_origins(state.settings))
    return bool(cookie) and from_ui and await _staff(state, cookie)


BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_BASE64 = re.compile(BASE64)
_PAYLOAD_FIELDS = frozenset({"metadata", "data"})


def _payloads(body: bytes) -> Payloads:
    """Exactly what the schema below states (PAYLOADS_BODY), then Temporal's own JSON reading of it."""
    refused = InvalidInput('the body must be {"payloads": [...]} as Temporal sends it', error="invalid_payloads")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise refused from None
    if not isinstance(document, dict) or not set(document) <= {"payloads"}:
        raise refused
    items = document.get("payloads", [])
    if not isinstance(items, list) or not all(_is_payload(item) for item in items):
        raise refused
    try:
        return json_format.ParseDict(document, Payloads())
    except (json_format.ParseError, ValueError, TypeError, RecursionError):
        raise refused from None


def _is_payload(item: object) -> bool:
    if not isinstance(item, dict) or not set(item) <= _PAYLOAD_FIELDS:
        return False
    metadata, data = item.get("metadata", {}), item.get("data", "")
    return (
        isinstance(metadata, dict)
        and all(isinstance(value, str) and _BASE64.fullmatch(value) for value in metadata.values())
        and isinstance(data, str)
        and _BASE64.fullmatch(data) is not None
    )


async def _apply(request: Request, state: StateDep, decode: bool) -> JSONResponse:
    if not await _allowed(request, state):
        raise Unauthorized(
            "the codec needs a support or admin token: Authorization: Bearer <token>, or sign in at /codec/login",
            error="invalid_token",
        )
    payloads = _payloads(await request.body())
    codec = state.codec
    try:
        result = await (codec.decode(payloads.payloads) if decode else codec.encode(payloads.payloads))
    except UndecodablePayload as exc:
        raise InvalidInput(str(exc), error="undecodable_payload") from exc
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=result)))


_BASE64_TEXT = {"type": "string", "contentEncoding": "base64", "pattern": BASE64}
# The body is read as Temporal's own JSON (google.protobuf json_format), so the schema is written here.
# No payloads at all may come as {} (Go's protojson leaves an empty list out).
PAYLOADS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "payloads": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "metadata": {"type": "object", "additionalProperties": _BASE64_TEXT},
                                    "data": _BASE64_TEXT,
                                },
                            },
                        }
                    },
                }
            }
        },
    }
}


@router.post("/decode", openapi_extra=PAYLOADS_BODY)
async def decode(request: Request, state: StateDep) -> JSONResponse:
    """Temporal payloads decrypted, as the UI and `temporal --codec-endpoint` ask for them."""
    return await _apply(request, state, decode=True)


@router.post("/encode", openapi_extra=PAYLOADS_BODY)
async def encode(request: Request, state: StateDep) -> JSONResponse:
    """Temporal payloads encrypted with the shop's key (a staff token's holder acting from the UI or CLI)."""
    return await _apply(request, state, decode=False)


# ---- the UI's sign-in: a page for browsers, not part of the API --------------------------------


def _ui_url(request: Request, settings: Settings) -> str:
    """The UI under the name this browser used for the shop: the cookie and the UI must be same-site."""
    name = request.headers.get("host", "").rsplit(":", 1)[0].lower()
    return f"http://{name if name in ('localhost', '127.0.0.1') else '127.0.0.1'}:{settings.temporal_ui_port}/"


def _api_origins(request: Request, settings: Settings) -> set[str]:
    return {f"{scheme}://{host}" for host in own_hosts(settings) for scheme in ("http", "https")}


@router.get("/login", include_in_schema=False)
async def login_page(request: Request, state: StateDep) -> Response:
    ui = html.escape(_ui_url(request, state.settings))
    page = _LOGIN_PAGE.format(hours=COOKIE_SECONDS // 3600, ui=f'<a href="{ui}">{ui}</a>')
    return secure(HTMLResponse(page), private=True)


@router.post("/login", include_in_schema=False)
async def login(request: Request, state: StateDep) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
    token = (form.get("token") or [""])[0].strip()
    if not (_own_page(request, state.settings, _api_origins(request, state.settings)) and await _staff(state, token)):
        raise Unauthorized("not a support or admin token (or not this shop's own page)", error="invalid_token")
    response = RedirectResponse(_ui_url(request, state.settings), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_SECONDS,
        path="/codec",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return secure(response, private=True)


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, state: StateDep) -> Response:
    response = RedirectResponse("/codec/login", status_code=303)
    response.delete_cookie(COOKIE, path="/codec", httponly=True, samesite="strict")
    return secure(response, private=True)
