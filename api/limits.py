"""What a client may make the API read: a size limit on every request body, and admin, support and
merchant callers authenticated before a byte of their body is read.

`RequestLimits` is a pure ASGI middleware, so it decides before any route, dependency or body
parser runs:
- /admin… (an admin token, or a finance token on finance's paths: 403 elsewhere), /support… and
  /merchant… need a valid bearer token, checked from the headers alone (a named token costs one
  indexed lookup of its hash) (401); a method their route does not take is a 405 with `Allow`
  first, whoever asks (TRACE included), as on every other path;
- a declared Content-Length over the route's limit is refused at once (413), and a body without
  one (chunked) is counted while the route reads it and stopped at the limit (413);
- both early refusals close the connection, so the rest of the body is never read.
The routes' own dependencies still check the tokens: this is the first door, not the only one.
"""

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import deps, http_metrics
from miaofa.errors import MiaofaError
from miaofa.settings import Settings

# api/uploads.py streams the key upload and stops it at its own limit (64 MiB), after its 415 check.
KEY_UPLOAD = re.compile(r"^/(admin|merchant)/products/[^/]+/keys/?$")
GUARDED = ("/admin", "/support", "/merchant")  # token first, then the body


def _size(limit: int) -> str:
    return (
        f"{limit // (1024 * 1024)} MiB"
        if limit >= 1024 * 1024 and limit % (1024 * 1024) == 0
        else (f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes")
    )


class BodyTooLarge(HTTPException):
    """Raised from the body stream; rendered by api/errors.py like any refusal."""

    error = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"the request body is larger than this route accepts ({_size(limit)})")


def body_limit(path: str, settings: Settings) -> int | None:
    """The largest body a path accepts; None when the route limits its own stream."""
    if KEY_UPLOAD.match(path):
        return None
    if path.startswith("/payments/") and path.rstrip("/").endswith("/notify"):
        return settings.max_notify_body_bytes
    if path.startswith("/codec/"):
        return settings.max_codec_body_bytes
    return settings.max_json_body_bytes


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _methods_by_path(app) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """Each documented path as a pattern, with its methods (HEAD with GET), from the OpenAPI schema."""
    table = getattr(app.state, "methods_by_path", None)
    if table is None:
        table = []
        for path, operations in app.openapi()["paths"].items():
            parts = ["[^/]+" if part.startswith("{") else re.escape(part) for part in path.split("/")]
            methods = {method.upper() for method in operations}
            if "GET" in methods:
                methods.add("HEAD")  # as Starlette routes it
            table.append((re.compile("^" + "/".join(parts) + "$"), frozenset(methods)))
        app.state.methods_by_path = table
    return table


def unrouted_method(scope: Scope) -> set[str] | None:
    """The methods this path takes, when it exists and does not take this request's method; else None."""
    allowed: set[str] = set()
    for pattern, methods in _methods_by_path(scope["app"]):
        if pattern.match(scope["path"]):
            allowed |= methods
    return allowed if allowed and scope["method"] not in allowed else None


async def authenticate(scope: Scope, authorization: str | None) -> None:
    """Unauthorized unless the caller may use this path at all (the route decides the rest)."""
    path: str = scope["path"]
    # Under /admin, finance's few paths let in finance tokens too; elsewhere a finance token is 403.
    door = None
    if _under(path, "/admin"):
        door = "finance" if deps.FINANCE_PATHS.match(path) else "admin"
    elif _under(path, "/support"):
        door = "support"
    if door is not None:
        await deps.actor_for(scope["app"].state.miaofa, scope, authorization, door)
    elif _under(path, "/merchant"):
        await deps.merchant_for(scope["app"].state.miaofa, scope, authorization)


class RequestLimits:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        if any(_under(path, prefix) for prefix in GUARDED) and (allowed := unrouted_method(scope)):
            allow = {"Allow": ", ".join(sorted(allowed))}
            await _refuse(scope, receive, send, 405, "method_not_allowed", "Method Not Allowed", allow)
            return
        try:
            await authenticate(scope, headers.get("authorization"))
        except MiaofaError as exc:  # 401, or 403 for a finance token outside finance's routes
            unknown = exc.status_code == 401
            http_metrics.REFUSED.labels("unauthorized" if unknown else "forbidden").inc()
            challenge = {"WWW-Authenticate": "Bearer"} if unknown else None
            await _refuse(scope, receive, send, exc.status_code, exc.error, exc.detail, challenge)
            return
        limit = body_limit(path, self.settings)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            http_metrics.REFUSED.labels("declared_too_large").inc()
            refusal = BodyTooLarge(limit)
            await _refuse(scope, receive, send, 413, refusal.error, str(refusal.detail))
            return

        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    http_metrics.REFUSED.labels("streamed_too_large").inc()
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception as exc:
            # A route that let the refusal escape its handlers: answer it here if nothing was sent yet.
            too_large = _too_large_in(exc)
            if too_large is None or started:
                raise
            await _refuse(scope, receive, send, 413, too_large.error, str(too_large.detail))


def _too_large_in(exc: BaseException) -> BodyTooLarge | None:
    if isinstance(exc, BodyTooLarge):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _too_large_in(inner)) is not None:
                return found
    return None


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    error: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    # Connection: close — the server drops the unread rest of the body instead of reading it.
    response = JSONResponse(
        {"error": error, "detail": detail}, status_code=status, headers={**(headers or {}), "Connection": "close"}
    )
    await response(scope, receive, send)
