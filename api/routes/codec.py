"""The codec endpoint the Temporal UI calls to show decrypted payloads to ops.

Who may decode without a token: a browser on a trusted network (loopback by default) that is
talking to this shop by one of its own names, from the Temporal UI. A page elsewhere that rebinds
its own name to 127.0.0.1 (DNS rebinding) reaches us with `Host: evil.example` and its own
`Origin`, so it is refused; so is any other Origin. Everyone else needs the support or admin token.
"""

import ipaddress
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import StateDep
from miaofa import staff
from miaofa.crypto.codec import UndecodablePayload
from miaofa.errors import InvalidInput, Unauthorized
from miaofa.settings import Settings

router = APIRouter(prefix="/codec", tags=["ops"])

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def _trusted(host: str, networks: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net.strip(), strict=False) for net in networks.split(",") if net.strip())


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
    return bool(expected) and secrets.compare_digest(given.encode(), expected.encode())


def _allowed(request: Request, settings: Settings) -> bool:
    """The ops UI's browser on a trusted network, or a holder of the support/admin token."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if token and (_same_token(token, settings.support_token) or _same_token(token, settings.admin_token)):
        return True
    if not (request.client and _trusted(request.client.host, settings.codec_trusted_networks)):
        return False
    if request.headers.get("host", "").lower() not in own_hosts(settings):
        return False  # DNS rebinding: a foreign name resolved to our address
    origin = request.headers.get("origin")
    return origin is None or origin.lower() in ui_origins(settings)


async def _named_token(request: Request, state: StateDep) -> bool:
    """A support or admin token made by `miaofa tokens add`."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return bool(token) and await staff.holder(state.sessionmaker, state.vault, token) is not None


async def _apply(request: Request, state: StateDep, decode: bool) -> JSONResponse:
    if not (_allowed(request, state.settings) or await _named_token(request, state)):
        raise Unauthorized(
            "the codec answers the Temporal UI on a trusted network, or a support token", error="invalid_token"
        )
    try:
        payloads = json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        raise InvalidInput(
            'the body must be {"payloads": [...]} as Temporal sends it', error="invalid_payloads"
        ) from exc
    codec = state.codec
    try:
        result = await (codec.decode(payloads.payloads) if decode else codec.encode(payloads.payloads))
    except UndecodablePayload as exc:
        raise InvalidInput(str(exc), error="undecodable_payload") from exc
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=result)))


@router.post("/decode")
async def decode(request: Request, state: StateDep) -> JSONResponse:
    return await _apply(request, state, decode=True)


@router.post("/encode")
async def encode(request: Request, state: StateDep) -> JSONResponse:
    return await _apply(request, state, decode=False)
