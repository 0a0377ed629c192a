"""A shop's own risk rules: it may tighten the platform's for its storefront, never loosen them.

Stored on the merchant as plain JSON (lists of strings, numbers); applied over the platform's rules
at each order: blocklists add up, caps take the lower of the two (0 is "no cap"). Rate windows stay
the platform's (they count every shop's attempts together)."""

import ipaddress
from dataclasses import replace
from typing import Any

from miaofa import contract as c
from miaofa.errors import InvalidInput
from miaofa.risk.rules import OFF, Rules
from miaofa.text import control_character

# The shop's setting → the platform Rules field it tightens.
CAPS = {
    "quantity_per_order": "quantity_per_order",
    "open_orders_per_email": "open_per_email",
    "open_orders_per_buyer_product": "open_per_buyer_product",
    "units_per_buyer_per_product": "units_per_buyer_product",
}
LISTS = ("blocked_emails", "blocked_networks")
MAX_LIST = 1000
MAX_CAP = 10_000


def check(body: dict[str, Any], platform: Rules) -> dict[str, Any]:
    """The shop's rules, normalised; InvalidInput (422) naming the first problem, and a value that
    would loosen the platform's cap is one."""
    clean: dict[str, Any] = {}
    for key in LISTS:
        values = body.get(key) or []
        if len(values) > MAX_LIST:
            raise InvalidInput(f"{key}: at most {MAX_LIST} entries")
        clean[key] = sorted({_entry(key, v) for v in values})
    for key, field in CAPS.items():
        value = body.get(key) or 0
        if not 0 <= value <= MAX_CAP:
            raise InvalidInput(f"{key}: from 0 (no cap of the shop's own) to {MAX_CAP}")
        ceiling = getattr(platform, field)
        if value and ceiling and value > ceiling:
            raise InvalidInput(f"{key}: the platform allows at most {ceiling}; a shop may only tighten it")
        if value:
            clean[key] = value
    return clean


def _entry(key: str, value: str) -> str:
    text = value.strip().lower()
    if not text or len(text) > 254 or control_character(text):
        raise InvalidInput(f"{key}: each entry is 1-254 characters, no control characters")
    if key == "blocked_emails":
        if "@" not in text:
            raise InvalidInput(f"{key}: {text!r} is neither an address nor an @domain")
        return text
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise InvalidInput(f"{key}: {text!r} is not an address or network") from None


def tighten(platform: Rules, shop: dict[str, Any] | None) -> Rules:
    """The rules in force for one shop's order: the platform's, made stricter by the shop's."""
    if not shop:
        return platform
    changes: dict[str, Any] = {}
    verdicts = dict(platform.verdicts)
    if emails := shop.get("blocked_emails"):
        changes["blocked_emails"] = platform.blocked_emails | frozenset(emails)
        _switch_on(verdicts, platform, "blocklist_email")
    if networks := shop.get("blocked_networks"):
        changes["blocked_networks"] = platform.blocked_networks + tuple(ipaddress.ip_network(n) for n in networks)
        _switch_on(verdicts, platform, "blocklist_network")
    for key, field in CAPS.items():
        if value := shop.get(key):
            ceiling = getattr(platform, field)
            changes[field] = min(value, ceiling) if ceiling else value
            _switch_on(verdicts, platform, "quantity_per_order" if key == "quantity_per_order" else "open_caps")
    return replace(platform, **changes, verdicts=verdicts)


def _switch_on(verdicts: dict[str, str], platform: Rules, rule: str) -> None:
    """A rule the platform switched off still holds where a shop asked for it: as a deny."""
    if platform.verdict(rule) == OFF:
        verdicts[rule] = c.RISK_DENY
