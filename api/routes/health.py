"""Liveness of the shop and what it depends on."""

import secrets

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import StateDep

router = APIRouter(tags=["ops"])
INSTANCE = secrets.token_hex(4)  # tells the API processes behind one port apart (ops, the scale-out test)


@router.get("/healthz")
async def healthz(state: StateDep) -> JSONResponse:
    """200 once PostgreSQL and Temporal both answer."""
    checks: dict[str, str] = {}
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await state.temporal.service_client.check_health()
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "unavailable", "instance": INSTANCE, **checks}
    if not healthy:
        body = {"error": "unavailable", "detail": "a dependency is down", **checks}
    return JSONResponse(body, status_code=200 if healthy else 503)
