"""Rendering the console's pages, and its errors as pages with the right status.

Every console route is a ConsoleRoute: a MiaofaError (or a refused form field, or a value the
database refuses) becomes a page in the merchant's language; a missing session becomes a 303 to the
sign-in page. The key import endpoint, which a script calls, answers JSON instead.
"""

import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from api import csrf
from api.console.i18n import Translator
from api.console.session import SignedOut
from api.routes.web import secure
from api.web import i18n as web_i18n
from miaofa.db.engine import refused_data
from miaofa.errors import InvalidInput, MiaofaError, NotFound
from miaofa.text import control_character

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True))
STATIC = HERE / "static"
SIGN_IN = "/console/sign-in"
ADMIN = "/console/admin"  # the platform admin's pages (api/console/admin.py)
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def when(at: datetime | str | None) -> str:
    if at is None:
        return ""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def page(request: Request, name: str, *, status: int = 200, **context: Any) -> Response:
    lang = web_i18n.pick(request)
    t = Translator(lang)
    forms: csrf.Csrf = request.app.state.miaofa.csrf
    query = {k: v for k, v in request.query_params.items() if k != "lang"}
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "t": t,
            "lang": lang,
            "holder": getattr(request.state, "console_holder", None),
            "admin": getattr(request.state, "console_admin", None),
            "admin_area": request.url.path.startswith(ADMIN),
            "money": web_i18n.money,
            "when": when,
            "switch_url": f"{request.url.path}?{urlencode({**query, 'lang': 'en' if lang == 'zh' else 'zh'})}",
            "csrf": lambda form: forms.token(request, form),
            **context,
        },
        status_code=status,
    )
    forms.keep(request, response)
    if request.query_params.get("lang") in web_i18n.LANGS:
        response.set_cookie(web_i18n.COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    return secure(response, private=True)  # every console page is one merchant's: never stored


def error_page(request: Request, status: int, message: str) -> Response:
    return page(request, "console/error.html", status=status, message=message)


def _message(request: Request, exc: MiaofaError) -> str:
    t = Translator(web_i18n.pick(request))
    if exc.error in (
        "not_found",
        "unknown_product",
        "order_not_found",
        "token_not_found",
        "withdrawal_not_found",
        "destination_not_found",
    ):
        return t("err.not_found")
    if exc.error in ("forbidden", "csrf_refused"):
        return t(f"err.{exc.error}")
    if exc.status_code == 422:
        return t("err.invalid_input", detail=exc.detail)
    return t("err.generic", detail=exc.detail)


def _is_script_call(request: Request) -> bool:
    return request.url.path.endswith("/keys/import")


def _refusal(request: Request, status: int, error: str, message: str) -> Response:
    if _is_script_call(request):
        return secure(JSONResponse({"error": error, "detail": message}, status_code=status), private=True)
    return error_page(request, status, message)


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignedOut as exc:
                if _is_script_call(request):
                    return _refusal(request, 401, exc.error, "sign in again")
                return secure(RedirectResponse(exc.sign_in, status_code=303), private=True)
            except MiaofaError as exc:
                return _refusal(request, exc.status_code, exc.error, _message(request, exc))
            except RequestValidationError:
                return _refusal(request, 422, "invalid_input", _message(request, InvalidInput("a field is malformed")))
            except DBAPIError as exc:
                if refused_data(exc) is None:
                    raise
                return _refusal(request, 422, "invalid_input", _message(request, InvalidInput("a value is refused")))

        return guarded


# ---- form fields and path parameters -------------------------------------------------------------


def field(form: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> str:
    """A text field, stripped; a control character (NUL, bidi marks …) or over `limit` is a 422."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: must be text")
    value = value.strip()
    if control_character(value):
        raise InvalidInput(f"{name}: must not contain control characters")
    if len(value) > limit:
        raise InvalidInput(f"{name}: at most {limit} characters")
    if required and not value:
        raise InvalidInput(f"{name}: required")
    return value


def number(form: Mapping[str, Any], name: str, low: int, high: int) -> int:
    text = field(form, name, 20, required=True)
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise InvalidInput(f"{name}: a whole number from {low} to {high}")
    return int(text)


def sku_param(sku: str) -> str:
    """Another shop's SKU and a malformed one are the same 404."""
    if not SKU.match(sku):
        raise NotFound("no such product", error="unknown_product")
    return sku


def order_param(order_id: str) -> str:
    if not ORDER_ID.match(order_id):
        raise NotFound("no such order", error="order_not_found")
    return order_id
