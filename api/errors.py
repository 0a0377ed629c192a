"""One handler per error family, all rendering {"error": code, "detail": text}."""

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from miaofa.errors import MiaofaError

log = logging.getLogger("miaofa.api")


def _body(error: str, detail: str, status: int) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(MiaofaError)
    async def miaofa_error(_: Request, exc: MiaofaError) -> JSONResponse:
        return _body(exc.error, exc.detail, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem, never echo the submitted value (it may be a key).
        problems = [f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: {err['msg']}"
                    for err in exc.errors()]
        return _body("invalid_input", "; ".join(problems), 422)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        # The message may hold anything (even a key): log the type and trace, answer generically.
        log.error("unhandled %s at\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
        return _body("internal_error", "something went wrong on our side; it has been logged", 500)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _body(code, str(exc.detail), exc.status_code)
