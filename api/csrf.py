"""Cross-site request forgery defence for every state-changing HTML form (the shop's now, the console's next).

Two checks, both needed:
- where the post came from: a browser says it in `Sec-Fetch-Site` and `Origin`; anything but this
  site (or a request typed by the user, `none`) is refused. A client that sends neither header (not
  a browser, or an old one), or `Origin: null` (the shop's pages are no-referrer, and a browser then
  hides even our own origin), is judged by the token alone;
- a per-form token: an HMAC of the browser's nonce (a random value in an HttpOnly, SameSite=Strict
  cookie) and the form's name, keyed by the vault. Another site can neither read the token from our
  page nor make a browser send the Strict cookie with its post, and a token of one form does not
  fit another.

Use: `Csrf.token(request, form)` while rendering (a new nonce is kept on the request), `Csrf.keep`
on the response (sets the cookie when the nonce is new), and `Csrf.check(request, fields, form)` first
thing in the POST route; it raises CsrfRefused (403), which the route renders as a page or as JSON.
"""

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from miaofa.errors import CsrfRefused

FIELD = "csrf"  # the hidden input of every form
_NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SAME_SITE = frozenset({"same-origin", "none"})  # "same-site" is a sibling subdomain: not us


def origin_of(url: str) -> str:
    """`https://Shop.example:443/x` → `https://shop.example` (scheme, host and a non-default port)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


class Csrf:
    def __init__(
        self,
        key: bytes,
        *,
        origins: Iterable[str] = (),
        cookie: str = "mf_csrf",
        secure: bool = False,
        max_age: int = 7 * 86400,
    ) -> None:
        """origins: the site's public origins (behind a proxy the request's own may differ); secure:
        the cookie only over HTTPS (set when the shop's public URL is https)."""
        self._key = key
        self._origins = frozenset(o for o in (origin_of(u) for u in origins) if o)
        self.cookie, self.secure, self.max_age = cookie, secure, max_age

    # ---- rendering a form -------------------------------------------------------------------------

    def _nonce(self, request: Request) -> str:
        nonce = getattr(request.state, "csrf_nonce", None)
        if nonce is None:
            sent = request.cookies.get(self.cookie, "")
            nonce = sent if _NONCE.match(sent) else secrets.token_urlsafe(32)
            request.state.csrf_nonce = nonce
            request.state.csrf_fresh = nonce != sent
        return nonce

    def _mac(self, nonce: str, form: str) -> str:
        mac = hmac.new(self._key, f"{form}\0{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def token(self, request: Request, form: str) -> str:
        """The token of `form` for this browser (the value of its hidden `csrf` input)."""
        return self._mac(self._nonce(request), form)

    def keep(self, request: Request, response: Response) -> None:
        """Set the nonce cookie if rendering this page made a new one."""
        if getattr(request.state, "csrf_fresh", False):
            response.set_cookie(
                self.cookie,
                request.state.csrf_nonce,
                max_age=self.max_age,
                path="/",
                secure=self.secure,
                httponly=True,
                samesite="strict",
            )

    # ---- a form posted ----------------------------------------------------------------------------

    def cross_site(self, request: Request) -> bool:
        """True when the browser says the post comes from another site."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in _SAME_SITE:
            return True
        origin = request.headers.get("origin")
        if origin is None or origin.strip() == "null":
            # "null" is what a browser sends from any no-referrer page, ours included: it tells nothing,
            # so Sec-Fetch-Site (above) and the token decide.
            return False
        own = origin_of(f"{request.url.scheme}://{request.headers.get('host', '')}")
        return origin_of(origin) not in self._origins | {own}

    def check(self, request: Request, fields: Mapping[str, Any], form: str) -> None:
        """CsrfRefused unless the post comes from this site with this browser's token for this form."""
        if self.cross_site(request):
            raise CsrfRefused("this form was sent from another site; open the shop and submit it there")
        sent = request.cookies.get(self.cookie, "")
        given = fields.get(FIELD, "")
        if not (_NONCE.match(sent) and isinstance(given, str) and given.isascii()):
            raise CsrfRefused("this form has expired; reload the page and submit it again")
        if not secrets.compare_digest(self._mac(sent, form).encode(), given.encode()):
            raise CsrfRefused("this form has expired; reload the page and submit it again")


def wants_html(request: Request) -> bool:
    """A browser's form post asks for a page; any other client gets the JSON error."""
    return "text/html" in request.headers.get("accept", "")
