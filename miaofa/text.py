"""Text a client sends, checked at the edge: no control characters, one email address.

Each check answers with what is wrong, never with the value (it may be a key or a buyer's email).
"""

import unicodedata

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
    if len(labels) < 2 or not all(label and all(ch.isalnum() or ch in _DOMAIN_EXTRA for ch in label)
                                  and not label.startswith("-") and not label.endswith("-") for label in labels):
        return "must be one address whose domain has a dot and only letters, digits and hyphens"
    return None
