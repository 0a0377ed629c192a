"""Text checked at the edge: what a client sends (no control characters, one email address) and what
an operator sets (a webhook URL, a secret, a key). Pure functions: the settings validate with them.

Each check answers with what is wrong, never with the value (it may be a key or a buyer's email).
"""

import base64
import functools
import unicodedata
from urllib.parse import urlparse

# Control, format, line and paragraph separators: NUL, tab, CR/LF, NEL, zero-width space, bidi marks …
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # Cs: a lone surrogate is no text
# Beyond letters and digits, the few characters real mailbox names use. Everything else is refused:
# `,` `;` and spaces would name a second recipient, `<>` `"` `()` `\` `:` start another syntax, and
# `%` `!` are old source routes some relays still follow.
_LOCAL_EXTRA = frozenset(".+-_'=&")
_DOMAIN_EXTRA = frozenset("-")


def control_character(value: str) -> str | None:
    """The first control or format character in `value` (as U+XXXX), or None."""
    if value.isprintable():  # the fast path: no Cc, Cf, Zl, Zp (nor other non-printables)
        return None
    for char in value:
        if unicodedata.category(char) in CONTROL_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _class_body(points: list[int]) -> str:
    """Code points as the body of a regex class, in \\uXXXX / \\UXXXXXXXX escapes (as JSON Schema
    validators, Python and Rust all read them)."""
    ranges: list[list[int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])

    def escaped(point: int) -> str:
        return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"

    return "".join(escaped(a) if a == b else f"{escaped(a)}-{escaped(b)}" for a, b in ranges)


@functools.cache
def control_class() -> str:
    """The characters `control_character` refuses, as a regex class body: for the OpenAPI schema,
    the rule stated once. Without the surrogates (Cs): a lone surrogate cannot travel in a JSON
    schema, and JSON text carrying one is no valid Unicode anyway."""
    categories = CONTROL_CATEGORIES - {"Cs"}
    return _class_body([point for point in range(0x110000) if unicodedata.category(chr(point)) in categories])


@functools.cache
def space_class(but: str = "") -> str:
    """What `str.strip()` removes (`str.isspace`), but `but`, as a regex class body. Spelled out: `\\s`
    differs between regex engines."""
    return _class_body([point for point in range(0x3001) if chr(point).isspace() and chr(point) not in but])


def plain_pattern() -> str:
    """Text without a control or format character."""
    return f"^[^{control_class()}]*$"


def said_pattern() -> str:
    """Plain text that says something: at least one character that is not a space."""
    cls = control_class()
    return f"^[^{cls}]*[^{cls}\\s][^{cls}]*$"


# What the OpenAPI schema promises of an email: a strict, ASCII-only part of what `email_problem`
# accepts (which also takes letters of any script), so a value the schema calls valid always is.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9+_'=&-]{1,32}(?:\.[A-Za-z0-9+_'=&-]{1,31})?"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,40}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,40}[A-Za-z0-9])?){1,3}$"
)


def email_problem(email: str) -> str | None:
    """Why `email` is not exactly one plain mailbox address (local@domain.tld), or None if it is.

    Unicode letters are allowed (internationalised addresses); quoting, comments, several addresses,
    display names and IP-literal domains are not.
    """
    local, at, domain = email.partition("@")
    if not at or "@" in domain:
        return "must be one address of the form name@domain"
    if not 1 <= len(local) <= 64 or not all(ch.isalnum() or ch in _LOCAL_EXTRA for ch in local):
        return "must be one address: letters, digits and . + - _ ' = & before the @"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "must be one address: the name may not start or end with a dot, or repeat one"
    labels = domain.split(".")
    if len(labels) < 2 or not all(
        label
        and all(ch.isalnum() or ch in _DOMAIN_EXTRA for ch in label)
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    ):
        return "must be one address whose domain has a dot and only letters, digits and hyphens"
    return None


PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", ""})
PUBLISHED_SECRETS = frozenset({"sim-dev-secret-not-for-production"})  # printed in old docs and examples
MIN_SECRET_LENGTH = 16


def secret_problem(value: str, kind: str = "secret") -> str | None:
    """Why a set secret (a token, a signing secret) is not a real random one, or None."""
    if value.lower() in PLACEHOLDER_SECRETS:
        return f"is a placeholder; set a real random {kind}"
    if value in PUBLISHED_SECRETS:
        return f"is a published value; set a real random {kind}"
    if len(value) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters"
    return None


def key_problem(text: str, size: int = 32) -> str | None:
    """Why `text` is not `size` bytes in urlsafe base64, or None."""
    try:
        raw = base64.urlsafe_b64decode(text.encode())
    except (ValueError, TypeError):
        return "is not valid base64"
    return None if len(raw) == size else f"must decode to {size} bytes"


# Likewise for a webhook URL: a part of what `url_problem` accepts, as the schema states it.
URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[!-~]*)?$"


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used, or None."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parsed.hostname:
        return "must name a host"
    if any(not ch.isprintable() or ch.isspace() for ch in url):
        return "must not contain spaces or control characters"
    return None
