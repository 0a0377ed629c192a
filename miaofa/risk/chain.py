"""The risk rule chain of `POST /orders`: cheap, common rules first, rare and expensive ones last.

Each rule has a name, a cost class and a verdict (miaofa/risk/rules.py). The memory rules
(blocklists, quantity per order, rates per address, email and device) run before anything else and
never touch the database. The database rules run after the product and the stock hint: the
open-order caps (miaofa/risk/admission.py, which also writes the order's admission row) and the anomaly rules,
which read the email's delivered orders once, for both. The first deny ends the chain; a review is
kept and the chain goes on (a later deny still wins). Denials are errors a buyer understands (403,
429 for rates); in one transaction with the admission, so a denied order leaves no row behind.

A client in RISK_EXEMPT_NETWORKS (a load generator) skips the chain.
"""

import hashlib
import hmac
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa import contract as c
from miaofa.crypto.vault import derive, parse_vault_key
from miaofa.db.models import Order, OrderEvent
from miaofa.errors import (
    DeviceBlocked,
    EmailBlocked,
    MiaofaError,
    NetworkBlocked,
    OrderRefused,
    QuantityLimit,
    TooManyRequests,
)
from miaofa.risk import shop_rules
from miaofa.risk.admission import Admission, Applicant, Windows
from miaofa.risk.limiters import SlidingWindow
from miaofa.risk.rules import OFF, Rules, RulesFile

if TYPE_CHECKING:
    from miaofa.settings import Settings

HISTORY_LIMIT = 50  # the email's latest delivered orders the anomaly rules look at


@dataclass
class Attempt:
    """One order attempt as the rules see it. `ip` is None for an exempt network."""

    email: str
    buyer_hash: str
    ip: str | None
    client_hash: str | None
    device: str | None
    device_hash: str
    quantity: int
    order_id: str = ""
    product_id: int = 0
    currency: str = ""
    amount_cents: int = 0
    networks: tuple[str, str] = ("", "")  # keyed hashes of the client's /56 and /48


@dataclass
class Decision:
    verdict: str = c.RISK_ALLOW
    rule: str = ""
    reason: str = "passed"
    ran: list[str] = field(default_factory=list)  # the rules evaluated, in order
    admitted: bool = False  # an admission row was written (forget it if the order does not open)

    def contract(self, device_hash: str) -> c.RiskDecision:
        return c.RiskDecision(verdict=self.verdict, rule=self.rule, reason=self.reason, device_hash=device_hash)


class Chain:
    """The rules of this API process: the rules file, the rate windows, the admission."""

    def __init__(self, settings: "Settings", rules_file: RulesFile | None = None) -> None:
        self.rules_file = rules_file or RulesFile(settings.risk_rules_file, Rules.from_settings(settings))
        self.admission = Admission(Windows.from_settings(settings), settings.vault_key)
        self._device_key = derive(parse_vault_key(settings.vault_key), "miaofa/risk/device")
        self._rules: Rules | None = None
        self._windows: dict[str, SlidingWindow] = {}

    def rules(self, now: float | None = None) -> Rules:
        rules = self.rules_file.current(now)
        if rules is not self._rules:  # first use, or the file changed
            self._rules = rules
            for name, limit in (
                ("rate_ip", rules.rate_per_ip),
                ("rate_email", rules.rate_per_email),
                ("rate_device", rules.rate_per_device),
            ):
                if name not in self._windows or self._windows[name].limit != limit:
                    self._windows[name] = SlidingWindow(limit)
        return rules

    def attempt(self, *, email: str, buyer_hash: str, ip: str | None, device: str | None, quantity: int) -> Attempt:
        device_hash = hmac.new(self._device_key, device.encode(), hashlib.sha256).hexdigest()[:32] if device else ""
        return Attempt(
            email=email,
            buyer_hash=buyer_hash,
            ip=ip,
            client_hash=self.admission.client_hash(ip) if ip is not None else None,
            networks=self.admission.network_hashes(ip) if ip is not None else ("", ""),
            device=device,
            device_hash=device_hash,
            quantity=quantity,
        )

    # ---- memory ---------------------------------------------------------------------------------

    def screen(self, attempt: Attempt, now: float | None = None) -> Decision:
        """The memory rules: raise the first deny; count the attempt toward the rates once it passes."""
        return self._screen(attempt, now, None, Decision())

    def screen_shop(self, attempt: Attempt, shop: dict[str, Any], screened: Decision) -> Decision:
        """The shop's own memory rules, after the platform's screen (which counted the rates): run
        once the shop is known, so a flood of made-up shops is refused before any lookup."""
        if not shop:
            return screened
        return self._screen(attempt, None, shop, replace(screened, ran=list(screened.ran)))

    def _screen(self, attempt: Attempt, now: float | None, shop: dict[str, Any] | None, decision: Decision) -> Decision:
        ip = attempt.ip
        if ip is None:
            decision.reason = "exempt_network"
            return decision
        now = time.monotonic() if now is None else now
        rules = shop_rules.tighten(self.rules(now), shop)
        rates = (
            ()
            if shop is not None
            else (
                ("rate_ip", attempt.client_hash, "your address"),
                ("rate_email", attempt.buyer_hash, "this email"),
                ("rate_device", attempt.device_hash, "this device"),
            )
        )
        for name, hit in (
            (
                "blocklist_email",
                lambda: (
                    rules.email_blocked(attempt.email)
                    and EmailBlocked(
                        "this email cannot place orders here; contact support if you think this is a mistake"
                    )
                ),
            ),
            (
                "blocklist_network",
                lambda: (
                    rules.network_blocked(ip)
                    and NetworkBlocked(
                        "orders from your network are not accepted; contact support if you think this is a mistake"
                    )
                ),
            ),
            (
                "blocklist_device",
                lambda: (
                    attempt.device in rules.blocked_devices
                    and DeviceBlocked(
                        "orders from this device are not accepted; contact support if you think this is a mistake"
                    )
                ),
            ),
            (
                "quantity_per_order",
                lambda: (
                    rules.quantity_per_order
                    and attempt.quantity > rules.quantity_per_order
                    and QuantityLimit(f"at most {rules.quantity_per_order} units per order")
                ),
            ),
            *((name, self._rate_check(name, key, who, now)) for name, key, who in rates),
        ):
            if rules.verdict(name) == OFF:
                continue
            decision.ran.append(name)
            self._judge(decision, name, rules.verdict(name), hit())
        for name, key, _ in rates:
            if key and rules.verdict(name) != OFF:
                self._windows[name].hit(key, now)
        return decision

    def rate_keys(self, attempt: Attempt) -> list[tuple[str, int, str]]:
        """The attempt's rate windows as (key, limit, who), counted across processes by
        miaofa/risk/shared_rates.py; none for an exempt network."""
        if attempt.ip is None:
            return []
        rules = self.rules()
        return [
            (f"{name}:{key}", limit, who)
            for name, key, limit, who in (
                ("rate_ip", attempt.client_hash, rules.rate_per_ip, "your address"),
                ("rate_email", attempt.buyer_hash, rules.rate_per_email, "this email"),
                ("rate_device", attempt.device_hash, rules.rate_per_device, "this device"),
            )
            if key and limit and rules.verdict(name) != OFF
        ]

    def forgive(self, attempt: Attempt) -> None:
        """Take back what screen() counted: the attempt was answered busy, and its retry counts instead."""
        if attempt.ip is None:
            return
        for name, key in (
            ("rate_ip", attempt.client_hash),
            ("rate_email", attempt.buyer_hash),
            ("rate_device", attempt.device_hash),
        ):
            if key and name in self._windows:
                self._windows[name].unhit(key)

    def _rate_check(self, name: str, key: str | None, who: str, now: float) -> Callable[[], MiaofaError | None]:
        def check() -> MiaofaError | None:
            wait = self._windows[name].wait(key, now) if key else 0
            if not wait:
                return None
            return TooManyRequests(f"too many orders from {who}; try again in {int(wait + 0.999)} s", retry_after=wait)

        return check

    @staticmethod
    def _judge(decision: Decision, name: str, verdict: str, hit: MiaofaError | int | None) -> None:
        if not hit:  # False, 0 or None: the rule did not hit
            return
        reason = hit.error if isinstance(hit, MiaofaError) else name
        if verdict == c.RISK_DENY:
            error = (
                hit
                if isinstance(hit, MiaofaError)
                else OrderRefused("this order cannot be accepted; contact support if you think this is a mistake")
            )
            error.risk_rule = name  # for the API's log and metric
            raise error
        if decision.verdict == c.RISK_ALLOW:  # the first review names the decision
            decision.verdict, decision.rule, decision.reason = c.RISK_REVIEW, name, reason

    # ---- database -------------------------------------------------------------------------------

    def _database_rules(self, rules: Rules, attempt: Attempt) -> list[str]:
        wanted = []
        if rules.verdict("open_caps") != OFF and self.admission.applies(rules, attempt.client_hash):
            wanted.append("open_caps")
        if (
            rules.verdict("new_device") != OFF
            and rules.new_device_amount_cents
            and attempt.amount_cents > rules.new_device_amount_cents
        ):
            wanted.append("new_device")
        if rules.verdict("amount_history") != OFF and rules.history_multiple:
            wanted.append("amount_history")
        return wanted

    async def judge(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        attempt: Attempt,
        screened: Decision,
        shop: dict[str, Any] | None = None,
    ) -> Decision:
        """The database rules, in one transaction: a deny rolls the admission back with it."""
        if attempt.ip is None:
            return screened
        rules = shop_rules.tighten(self.rules(), shop)
        wanted = self._database_rules(rules, attempt)
        if not wanted:
            return screened
        decision = replace(screened, ran=list(screened.ran))
        async with sessionmaker.begin() as session:
            history: list[tuple[int, str | None]] | None = None
            for name in wanted:
                decision.ran.append(name)
                if name == "open_caps":
                    try:
                        await self.admission.admit(
                            session,
                            rules,
                            Applicant(
                                attempt.order_id,
                                attempt.buyer_hash,
                                attempt.client_hash,
                                attempt.product_id,
                                attempt.quantity,
                                attempt.networks,
                            ),
                            datetime.now(UTC),
                        )
                    except MiaofaError as error:  # the caps' own deny
                        error.risk_rule = name
                        raise
                    decision.admitted = True
                    continue
                if history is None:
                    history = await _history(session, attempt)
                hit = _new_device(attempt, history) if name == "new_device" else _far_above(attempt, history, rules)
                self._judge(decision, name, rules.verdict(name), hit)
        return decision


async def _history(session: AsyncSession, attempt: Attempt) -> list[tuple[int, str | None]]:
    """The email's latest delivered orders in this currency: amount, and the device of each."""
    rows = await session.execute(
        select(Order.amount_cents, OrderEvent.detail["device"].astext)
        .outerjoin(OrderEvent, and_(OrderEvent.order_id == Order.id, OrderEvent.stage == c.RISK_STAGE))
        .where(Order.buyer_hash == attempt.buyer_hash, Order.status == c.DELIVERED, Order.currency == attempt.currency)
        .order_by(Order.created_at.desc())
        .limit(HISTORY_LIMIT)
    )
    return [(amount, device) for amount, device in rows]


def _new_device(attempt: Attempt, history: list[tuple[int, str | None]]) -> bool:
    # No X-Device-Id is no known device: leaving the header out must not skip the review.
    return not attempt.device_hash or attempt.device_hash not in {device for _, device in history}


def _far_above(attempt: Attempt, history: list[tuple[int, str | None]], rules: Rules) -> bool:
    if len(history) < max(1, rules.history_min_orders):
        return False
    return attempt.amount_cents > rules.history_multiple * statistics.median(amount for amount, _ in history)
