"""The codec endpoint the Temporal UI calls to show decrypted payloads to ops."""

import ipaddress
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import StateDep
from miaofa.errors import InvalidInput, Unauthorized

router = APIRouter(prefix="/codec", tags=["ops"])


def _trusted(host: str, networks: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net.strip(), strict=False) for net in networks.split(",") if net.strip())


def _allowed(request: Request, state: StateDep) -> bool:
    """Browsers on trusted networks (the ops UI) or holders of the support/admin token may decode."""
    if request.client and _trusted(request.client.host, state.settings.codec_trusted_networks):
        return True
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return bool(token) and any(secrets.compare_digest(token, t) for t in
                               (state.settings.support_token, state.settings.admin_token) if t)


async def _apply(request: Request, state: StateDep, decode: bool) -> JSONResponse:
    if not _allowed(request, state):
        raise Unauthorized("the codec answers trusted networks or a support token only", error="invalid_token")
    try:
        payloads = json_format.Parse(await request.body(), Payloads())
    except json_format.ParseError as exc:
        raise InvalidInput("the body must be {\"payloads\": [...]} as Temporal sends it",
                           error="invalid_payloads") from exc
    codec = state.codec
    result = await (codec.decode(payloads.payloads) if decode else codec.encode(payloads.payloads))
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=result)))


@router.post("/decode")
async def decode(request: Request, state: StateDep) -> JSONResponse:
    return await _apply(request, state, decode=True)


@router.post("/encode")
async def encode(request: Request, state: StateDep) -> JSONResponse:
    return await _apply(request, state, decode=False)
