"""The risk rules' thresholds and blocklists: settings as defaults, a TOML rules file over them.

`MIAOFA_RISK_RULES_FILE` names the file; every key is optional. It is read again when it changes
(its mtime is checked at most once a second, on the order path). A bad file is refused with one
line naming the problem, and the rules in force stay (at start: the settings refuse to load).

    [blocklist]
    emails = ["fraud@example.com", "@throwaway.example"]   # an address, or "@domain"
    networks = ["203.0.113.0/24", "2001:db8::/32"]
    devices = ["d-5f2c0e"]                                 # X-Device-Id values

    [rates]              # order attempts per sliding minute, per API process; 0 = off
    per_ip = 20
    per_email = 5
    per_device = 5

    [caps]               # what one buyer may hold unpaid (awaiting payment or in review); 0 = off
    open_orders_per_email = 3
    open_orders_per_ip = 10
    open_units_per_ip = 20
    open_orders_per_buyer_product = 2
    units_per_buyer_per_product = 10
    quantity_per_order = 10
    open_units_per_net56 = 40           # an IPv6 client's /56 (256 /64s), and its /48, hold at most this
    open_units_per_net48 = 80
    max_unpaid_share = 0.5              # past this share of unsold keys held unpaid: newcomers only, one unit

    [anomaly]            # amounts in minor units of the order's currency; 0 = off
    new_device_amount_cents = 50000   # a device never seen on the email's delivered orders, above this
    history_multiple = 10             # above N × the median of the email's delivered orders …
    history_min_orders = 3            # … once it has at least this many

    [verdicts]           # per rule: deny | review | off (limits: deny | off)
    new_device = "review"
"""

import ipaddress
import logging
import os
import time
import tomllib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from miaofa import contract as c
from miaofa.netaddr import Network, within

if TYPE_CHECKING:
    from miaofa.settings import Settings

log = logging.getLogger("miaofa.risk")

OFF = "off"
CHECK_EVERY_SECONDS = 1.0

# Every rule, cheapest first: its cost class and the verdicts it may be given (the first is its default).
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "blocklist_email": ("memory", (c.RISK_DENY, c.RISK_REVIEW, OFF)),
    "blocklist_network": ("memory", (c.RISK_DENY, c.RISK_REVIEW, OFF)),
    "blocklist_device": ("memory", (c.RISK_DENY, c.RISK_REVIEW, OFF)),
    "quantity_per_order": ("memory", (c.RISK_DENY, OFF)),
    "rate_ip": ("memory", (c.RISK_DENY, OFF)),
    "rate_email": ("memory", (c.RISK_DENY, OFF)),
    "rate_device": ("memory", (c.RISK_DENY, OFF)),
    "open_caps": ("database", (c.RISK_DENY, OFF)),
    "new_device": ("database", (c.RISK_REVIEW, c.RISK_DENY, OFF)),
    "amount_history": ("database", (c.RISK_REVIEW, c.RISK_DENY, OFF)),
}

# [section] key → Rules field (and the type it must be).
_NUMBERS = {
    "rates": {"per_ip": "rate_per_ip", "per_email": "rate_per_email", "per_device": "rate_per_device"},
    "caps": {
        "open_orders_per_email": "open_per_email",
        "open_orders_per_ip": "open_per_ip",
        "open_units_per_ip": "open_units_per_ip",
        "open_orders_per_buyer_product": "open_per_buyer_product",
        "units_per_buyer_per_product": "units_per_buyer_product",
        "quantity_per_order": "quantity_per_order",
        "open_units_per_net56": "open_units_per_net56",
        "open_units_per_net48": "open_units_per_net48",
        "max_unpaid_share": "unpaid_share",
    },
    "anomaly": {
        "new_device_amount_cents": "new_device_amount_cents",
        "history_multiple": "history_multiple",
        "history_min_orders": "history_min_orders",
    },
}


_FRACTIONAL = {"history_multiple", "max_unpaid_share"}


class RulesError(ValueError):
    """A rules file that cannot be used; the message is one line naming the problem."""


@dataclass(frozen=True)
class Rules:
    """The risk settings in force: the one home of every threshold (the open-order caps included)."""

    blocked_emails: frozenset[str] = frozenset()  # lower-case addresses, or "@domain"
    blocked_networks: tuple[Network, ...] = ()
    blocked_devices: frozenset[str] = frozenset()
    rate_per_ip: int = 0
    rate_per_email: int = 0
    rate_per_device: int = 0
    open_per_email: int = 0
    open_per_ip: int = 0
    open_units_per_ip: int = 0
    open_per_buyer_product: int = 0
    units_per_buyer_product: int = 0
    quantity_per_order: int = 0
    open_units_per_net56: int = 0
    open_units_per_net48: int = 0
    unpaid_share: float = 0  # of a product's unsold keys; past it, only newcomers, one unit (admission.py)
    new_device_amount_cents: int = 0
    history_multiple: float = 0
    history_min_orders: int = 3
    verdicts: dict[str, str] = field(default_factory=dict)  # rule → verdict, where not its default

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Rules":
        return cls(
            rate_per_ip=settings.risk_rate_per_ip_per_minute,
            rate_per_email=settings.risk_rate_per_email_per_minute,
            rate_per_device=settings.risk_rate_per_device_per_minute,
            open_per_email=settings.risk_max_open_orders_per_email,
            open_per_ip=settings.risk_max_open_orders_per_ip,
            open_units_per_ip=settings.risk_max_open_units_per_ip,
            open_per_buyer_product=settings.risk_max_open_orders_per_buyer_product,
            units_per_buyer_product=settings.risk_max_units_per_buyer_per_product,
            open_units_per_net56=settings.risk_max_open_units_per_net56,
            open_units_per_net48=settings.risk_max_open_units_per_net48,
            unpaid_share=settings.risk_max_unpaid_share,
            new_device_amount_cents=settings.risk_new_device_review_cents,
            history_multiple=settings.risk_history_multiple,
        )

    @property
    def buyer_caps(self) -> bool:
        return bool(self.open_per_email or self.open_per_buyer_product or self.units_per_buyer_product)

    @property
    def client_caps(self) -> bool:
        return bool(self.open_per_ip or self.open_units_per_ip or self.network_caps)

    @property
    def network_caps(self) -> bool:
        return bool(self.open_units_per_net56 or self.open_units_per_net48)

    def verdict(self, rule: str) -> str:
        return self.verdicts.get(rule, RULES[rule][1][0])

    def email_blocked(self, email: str) -> bool:
        address = email.strip().lower()
        return address in self.blocked_emails or "@" + address.rpartition("@")[2] in self.blocked_emails

    def network_blocked(self, ip: str) -> bool:
        return within(ip, self.blocked_networks)


def parse(text: str, defaults: Rules, name: str = "rules file") -> Rules:
    """The rules of a TOML text over the defaults; RulesError (one line) when anything is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{name}: not valid TOML ({exc})") from None
    changes: dict[str, Any] = {}
    for section, body in data.items():
        if not isinstance(body, dict):
            raise RulesError(f"{name}: {section} must be a [section]")
        where = f"{name}: [{section}]"
        if section == "blocklist":
            changes.update(_blocklist(body, where))
        elif section in _NUMBERS:
            for key, value in body.items():
                if key not in _NUMBERS[section]:
                    raise RulesError(f"{where} has an unknown key {key!r}; known: {', '.join(_NUMBERS[section])}")
                number = (int, float) if key in _FRACTIONAL else (int,)
                if isinstance(value, bool) or not isinstance(value, number) or value < 0:
                    raise RulesError(f"{where} {key} must be a number ≥ 0, not {value!r}")
                if key == "max_unpaid_share" and value > 1:
                    raise RulesError(f"{where} {key} is a share of the stock, from 0 (off) to 1, not {value!r}")
                changes[_NUMBERS[section][key]] = value
        elif section == "verdicts":
            changes["verdicts"] = _verdicts(body, where)
        else:
            raise RulesError(f"{name}: unknown section [{section}]; known: blocklist, rates, caps, anomaly, verdicts")
    return replace(defaults, **changes)


def _strings(body: dict[str, Any], key: str, where: str) -> list[str]:
    values = body.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise RulesError(f"{where} {key} must be a list of non-empty strings")
    return [v.strip() for v in values]


def _blocklist(body: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(body) - {"emails", "networks", "devices"}
    if unknown:
        raise RulesError(f"{where} has an unknown key {sorted(unknown)[0]!r}; known: emails, networks, devices")
    networks = []
    for text in _strings(body, "networks", where):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise RulesError(f"{where} networks: {text!r} is not an address or network") from None
    emails = [e.lower() for e in _strings(body, "emails", where)]
    if bad := next((e for e in emails if "@" not in e), None):
        raise RulesError(f"{where} emails: {bad!r} is neither an address nor an @domain")
    return {
        "blocked_emails": frozenset(emails),
        "blocked_networks": tuple(networks),
        "blocked_devices": frozenset(_strings(body, "devices", where)),
    }


def _verdicts(body: dict[str, Any], where: str) -> dict[str, str]:
    verdicts = {}
    for rule, verdict in body.items():
        if rule not in RULES:
            raise RulesError(f"{where} has an unknown rule {rule!r}; known: {', '.join(RULES)}")
        if verdict not in RULES[rule][1]:
            raise RulesError(f"{where} {rule} must be one of {', '.join(RULES[rule][1])}, not {verdict!r}")
        verdicts[rule] = verdict
    return verdicts


def load(path: str, defaults: Rules) -> Rules:
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"risk rules file {path}: cannot be read ({type(exc).__name__})") from None
    return parse(text, defaults, f"risk rules file {path}")


class RulesFile:
    """The rules in force: the defaults, or the file over them, re-read when it changes."""

    def __init__(self, path: str, defaults: Rules) -> None:
        self.path, self.defaults = path, defaults
        self.problem = ""  # the last refusal, "" once a good file is in force
        self._rules = load(path, defaults) if path else defaults
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def current(self, now: float | None = None) -> Rules:
        now = time.monotonic() if now is None else now
        if not self.path or now - self._checked < CHECK_EVERY_SECONDS:
            return self._rules
        return self.check(now)

    def check(self, now: float | None = None) -> Rules:
        """Re-read the file if it changed; current() calls this at most every CHECK_EVERY_SECONDS."""
        self._checked = time.monotonic() if now is None else now
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._rules = load(self.path, self.defaults)
            except RulesError as exc:
                self.problem = str(exc)
                log.error("%s; the previous rules stay in force", exc)
            else:
                self.problem = ""
                log.info("risk rules reloaded from %s", self.path)
        return self._rules
