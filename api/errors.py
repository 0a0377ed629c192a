"""One handler per error family, all rendering {"error": code, "detail": text}; and that body, declared
for every route in the OpenAPI schema (`ErrorBody`, `ERROR_RESPONSES`), so the schema tells the truth."""

import logging
import re
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from miaofa.db.engine import refused_data
from miaofa.errors import MiaofaError

log = logging.getLogger("miaofa.api")


class ErrorBody(BaseModel):
    """Every refusal and failure the API answers itself."""

    error: str = Field(description="a stable, machine-readable code, e.g. `sold_out`, `invalid_input`")
    detail: str = Field(description="what went wrong, for a human; never echoes a submitted secret")


def _declared(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


# Declared on the app, so every route carries them; a route may add its own (e.g. the key upload).
ERROR_RESPONSES: dict[int | str, dict] = {
    400: _declared("bad request (e.g. a body that cannot be parsed)"),
    401: _declared("no token, or the wrong one (admin and support routes; checked before the body is read)"),
    403: _declared("refused by a risk rule or not allowed"),
    404: _declared("no such thing (or an order token that does not match: they answer alike)"),
    409: _declared("the state forbids it: sold out, already refunded, not cancellable …"),
    413: _declared("the body is larger than this route accepts"),
    415: _declared("a media type this route does not read"),
    422: _declared("invalid input: names the field and the problem"),
    429: _declared("too many requests: slow down"),
    503: _declared("a dependency (Temporal, the gateway, the database) did not answer in time"),
}


def _text_or_absent(parameter_schema: dict) -> None:
    """An optional parameter (`str | None`) is described as anyOf [string, null]; but a path, query or
    header value has no null on the wire, only absent (`required: false` says so), and a fuzzer would
    send null as an empty value. So: just the string, with the `pattern` json_schema_extra put beside it."""
    branches = parameter_schema.get("anyOf")
    if not branches or {"type": "null"} not in branches:
        return
    strings = [branch for branch in branches if branch != {"type": "null"}]
    if len(strings) != 1 or strings[0].get("type") != "string":
        return
    del parameter_schema["anyOf"]
    parameter_schema.update({**strings[0], **parameter_schema})


def complete_schema(schema: dict) -> dict:
    """A route may declare an error with only a description (the key upload does): it is the same
    ErrorBody all the same, so say so. And every operation id is unique, as OpenAPI requires."""
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    seen: set[str] = set()
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                _text_or_absent(parameter.get("schema", {}))
            # One route serving two methods (a notify by GET or POST) gets one id from FastAPI: make it two.
            if operation.get("operationId") in seen:
                operation["operationId"] = f"{operation['operationId'].rsplit('_', 1)[0]}_{method}"
            seen.add(operation.get("operationId", ""))
            for code, response in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400 and "content" not in response:
                    response["content"] = ref
    return schema


def install_schema(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = complete_schema(build())
        return app.openapi_schema

    # FastAPI's documented way to extend the schema; mypy refuses any assignment to a method.
    app.openapi = openapi  # type: ignore[method-assign]


HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _body(error: str, detail: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _where(request: Request) -> str:
    """The route template and the order id, if any: never the raw path or body (they are client input)."""
    route = getattr(request.scope.get("route"), "path", "unmatched")
    order_id = request.scope.get("path_params", {}).get("order_id", "")
    shown = order_id if _SAFE_ID.match(order_id or "") else ("<malformed>" if order_id else "")
    return f"{request.method} {route}" + (f" order {shown}" if shown else "")


def _unexpected(request: Request, exc: BaseException) -> JSONResponse:
    # The message may hold anything (a key, an email, SQL parameters): log the type, where, and the
    # trace's frames; answer generically.
    log.error(
        "unhandled %s in %s at\n%s",
        type(exc).__name__,
        _where(request),
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return _body("internal_error", "something went wrong on our side; it has been logged", 500)


def install(app: FastAPI) -> None:
    @app.exception_handler(MiaofaError)
    async def miaofa_error(_: Request, exc: MiaofaError) -> JSONResponse:
        return _body(exc.error, exc.detail, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem, never echo the submitted value (it may be a key).
        problems = [
            f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: {err['msg']}" for err in exc.errors()
        ]
        return _body("invalid_input", "; ".join(problems), 422)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # A value the database refuses (a NUL byte, too long, a duplicate) is the client's input
        # reaching it unchecked: a 4xx all the same, never a 500. The edge should have caught it.
        kind = refused_data(exc)
        if kind is None:
            raise exc  # unexpected: the same road as every other (logged by type, 500)
        driver_error = getattr(exc.orig, "__cause__", None) or exc.orig or exc  # asyncpg's own, by name
        log.warning(
            "the database refused a request's data: %s (SQLSTATE %s) in %s",
            type(driver_error).__name__,
            getattr(exc.orig, "sqlstate", "?"),
            _where(request),
        )
        if kind == "integrity":
            return _body("conflict", "this conflicts with what is already stored", 409)
        return _body(
            "invalid_input", "a value cannot be stored (a control character, or too long or out of range)", 422
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        return _unexpected(request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "error", None) or HTTP_CODES.get(exc.status_code, "http_error")
        # Keep the exception's headers: a 405 says which methods are allowed.
        return _body(code, str(exc.detail), exc.status_code, headers=dict(exc.headers or {}))
