"""One reading of Accept-Language for the pages and the emails (miaofa/lang.py)."""

import pytest
from starlette.requests import Request

from api.web import i18n
from miaofa import lang


def _request(accept_language: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": b"",
            "headers": [(b"accept-language", accept_language.encode())],
        }
    )


@pytest.mark.parametrize(
    ("header", "email", "page"),
    [
        ("fr, zh;q=0.5", "zh", "zh"),  # French first, which we lack; then Chinese
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh", "zh"),
        ("en-US,en;q=0.9", "en", "en"),
        ("en;q=0.2, zh-TW", "zh", "zh"),  # by weight, not by place
        ("zh;q=0, en;q=0.1", "en", "en"),  # q=0: not acceptable
        ("fr-FR,fr;q=0.9", None, "en"),  # neither: the emails carry both, the page is English
        ("*", None, "en"),
        ("", None, "en"),
    ],
)
def test_the_page_and_the_email_read_the_header_alike(header: str, email: str | None, page: str) -> None:
    assert lang.pick(None, header) == email
    assert i18n.pick(_request(header)) == page


def test_an_explicit_choice_wins() -> None:
    assert lang.pick("en", "fr, zh;q=0.5") == "en"
    assert lang.pick("fr", "fr, zh;q=0.5") == "zh"  # not one of ours: the header decides
