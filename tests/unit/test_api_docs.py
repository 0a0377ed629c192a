"""/docs and /redoc work offline: every asset they load is served by the shop itself."""

import base64
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from miaofa.settings import Settings

EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: these pages need neither the database nor Temporal.
    settings = Settings(
        admin_token="adm_docs_token_0123456789",
        support_token="sup_docs_token_0123456789",
        vault_key=base64.urlsafe_b64encode(b"docs-test-vault-key-32-bytes!!!!").decode(),
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://shop.test") as http:
        yield http


def _references(page: str) -> list[str]:
    """Every URL the page makes the browser load: src/href attributes, the spec URL, the OAuth2 redirect."""
    found = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", page)
    found += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", page)
    found += re.findall(r"""window\.location\.origin\s*\+\s*['"]([^'"]+)['"]""", page)
    return found


@pytest.mark.parametrize(
    ("page", "must_load"),
    [
        ("/docs", {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/openapi.json"}),
        ("/redoc", {"/docs-assets/redoc.standalone.js", "/openapi.json"}),
    ],
)
async def test_docs_pages_load_nothing_from_outside_the_shop(
    client: httpx.AsyncClient, page: str, must_load: set[str]
) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", answer.text, re.I), "an off-site URL in the page"
    references = _references(answer.text)
    assert must_load <= set(references)
    for url in references:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        suffix = "." + url.rsplit(".", 1)[1] if "." in url.rsplit("/", 1)[1] else ""
        expected = EXPECTED_TYPES.get(suffix, "text/html")
        assert asset.headers["content-type"].split(";")[0] in (expected, "application/javascript"), url
        assert len(asset.content) > 100, url
