"""Console: helpers for the tests that drive it as a browser would (tests/api/test_console*.py)."""

import re
from types import SimpleNamespace
from typing import Any

import httpx

from tests.helpers.stack import Stack

SIGN_IN = "/console/sign-in"


class Console:
    """One browser: its own cookie jar (the stack's shared client must not carry a session)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.AsyncClient(base_url=str(stack.http.base_url), timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def csrf(self, page: str, action: str) -> str:
        """The CSRF token of the form posting to `action` on `page`."""
        answer = await self.http.get(page)
        assert answer.status_code == 200, answer.text
        return token_in(answer.text, action)

    async def post(self, page: str, action: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.http.post(action, data={"csrf": await self.csrf(page, action), **data}, **kwargs)

    def token(self, form: str) -> str:
        """This browser's token for a form by its name (as a page it opened would carry it)."""
        return self.stack.app.state.miaofa.csrf.token(_FakeRequest(self), form)

    async def sign_in(self, token: str) -> httpx.Response:
        return await self.post(SIGN_IN, SIGN_IN, {"token": token})


def token_in(page: str, action: str) -> str:
    form = re.search(rf'<form[^>]*action="{re.escape(action)}".*?name="csrf" value="([^"]+)"', page, re.S)
    assert form is not None, f"no form posting to {action}"
    return form[1]


def import_token(page: str) -> str:
    found = re.search(r'id="import"[^>]*data-csrf="([^"]+)"', page)
    assert found is not None
    return found[1]


def bearer(shop: Any) -> str:
    """A shop's owner token (tests/api/test_merchants.Shop)."""
    return shop.owner["Authorization"].removeprefix("Bearer ")


class _FakeRequest:
    """Enough of a request for Csrf.token: this browser's nonce cookie."""

    def __init__(self, browser: Console) -> None:
        self.cookies = {"mf_csrf": browser.http.cookies.get("mf_csrf", "")}
        self.state = SimpleNamespace()
