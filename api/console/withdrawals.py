"""Console: the shop's withdrawals (newest first, a request form), one withdrawal's timeline in plain
words, and the payout destinations (all may list them, the owner adds one). The work is
api/payout_actions.py's, as for the merchant API: the same checks, reservation, audit and workflow.

A request form carries an idempotency key made when the page is rendered, so a double submit (or the
form posted again after Back) makes one withdrawal; the API's refusals are said in plain words on
the page, with the numbers the merchant needs (what is available, the debt, when a destination may
be paid)."""

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api import payout_actions
from api.console import money
from api.console.admin import fee_words
from api.console.i18n import Translator
from api.console.i18n_payouts import note_in
from api.console.pages import ConsoleRoute, field, page, when
from api.console.session import ConsoleDep, ConsoleOwnerDep, DbDep
from api.deps import StateDep
from api.routes.web import secure
from api.state import State
from api.web import i18n as web_i18n
from miaofa import contract as c
from miaofa.errors import InvalidInput, MiaofaError, NotFound
from miaofa.gateways.money import MoneyError, to_minor
from miaofa.ledger import books
from miaofa.merchants import accounts
from miaofa.merchants.tokens import MerchantHolder
from miaofa.payouts import destinations, rail_set, views, withdrawals
from miaofa.settings import Settings

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
WITHDRAWAL_ID = re.compile(r"^wd_[0-9a-f]{20}$")
DESTINATION_ID = re.compile(r"^pd_[0-9a-f]{20}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
IDEM = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_CENTS = 10**12  # as the API's WithdrawalIn
# Still moving: the page reloads itself until the withdrawal settles (in review may take hours: no).
MOVING = (c.WITHDRAWAL_REQUESTED, c.WITHDRAWAL_APPROVED, c.WITHDRAWAL_SUBMITTED)
SETTLED_BACK = (c.WITHDRAWAL_FAILED, c.WITHDRAWAL_REJECTED, c.WITHDRAWAL_RETURNED)
BAD_STAGES = frozenset({"failed", "cancelled", "rejected", "returned", "review_late"})


def withdrawal_param(withdrawal_id: str) -> str:
    """Another shop's withdrawal and a malformed id are the same 404."""
    if not WITHDRAWAL_ID.match(withdrawal_id):
        raise NotFound("no such withdrawal", error="withdrawal_not_found")
    return withdrawal_id


def fee_rule(settings: Settings, currency: str, t: Translator) -> str:
    parts = []
    if settings.payout_fee_cents:
        parts.append(web_i18n.money(settings.payout_fee_cents, currency))
    if settings.payout_fee_bps:
        parts.append(fee_words(settings.payout_fee_bps))
    return " + ".join(parts) or t("wd.no_fee")


async def _page(
    request: Request,
    holder: MerchantHolder,
    db: AsyncSession,
    state: State,
    *,
    status: int = 200,
    kept: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    t = Translator(web_i18n.pick(request))
    settings = state.settings
    balances = await books.balances(db, holder.merchant_id)
    saved = await destinations.listing(db, holder.merchant_id)
    rows = await withdrawals.listing(db, holder.merchant_id)
    currencies = [b["currency"] for b in balances if CURRENCY.match(b["currency"])] or ["CNY"]
    kept = kept or {}
    currency = kept.get("currency", "")
    currency = currency if currency in currencies else currencies[0]
    delay = settings.payout_new_destination_delay_seconds
    return page(
        request,
        "console/withdrawals.html",
        status=status,
        merchant=await accounts.by_id(db, holder.merchant_id),
        balances=balances,
        currencies=currencies,
        destinations=saved,
        masked={d.id: d.masked for d in saved},
        withdrawals=rows,
        paid_at=await views.stage_times(db, [w.id for w in rows]),
        now=datetime.now(UTC),
        idem=secrets.token_urlsafe(18),  # one per render: the same form posted twice is one withdrawal
        kept={**kept, "currency": currency},
        rules=t(
            "wd.rules",
            min=web_i18n.money(settings.payout_min_cents, currency),
            fee=fee_rule(settings, currency, t),
        ),
        dest_help=t("wd.dest_help", delay=money.duration(delay, t.lang)) if delay else t("wd.dest_help_now"),
        rails=rail_set.offered(settings),
        signed_money=money.signed_money,
        **context,
    )


@router.get("/withdrawals")
async def withdrawals_page(request: Request, holder: ConsoleDep, db: DbDep, state: StateDep) -> Response:
    return await _page(request, holder, db, state)


def _asked(form: Any, holder: MerchantHolder) -> withdrawals.Asked:
    currency = field(form, "currency", 8, required=True)
    if not CURRENCY.match(currency):
        raise InvalidInput("currency: three capital letters, like CNY")
    amount = field(form, "amount", 24, required=True)
    try:
        cents = to_minor(amount, currency)
    except MoneyError:
        raise InvalidInput("amount: a positive number like 100 or 99.50") from None
    if cents > MAX_CENTS:
        raise InvalidInput(f"amount: at most {web_i18n.money(MAX_CENTS, currency)}")
    destination_id = field(form, "destination_id", 40, required=True)
    if not DESTINATION_ID.match(destination_id):
        raise InvalidInput("destination: choose one of the shop's destinations")
    idem = field(form, "idem", 64)
    if not IDEM.match(idem):
        raise InvalidInput("the form is incomplete; reload the page")
    # "console:" keeps the form's keys apart from those a script sends to the API.
    return withdrawals.Asked(cents, currency, destination_id, f"console:{idem}", holder.name)


async def _refusal_words(
    exc: MiaofaError,
    asked: withdrawals.Asked | None,
    db: AsyncSession,
    holder: MerchantHolder,
    state: State,
    t: Translator,
) -> str:
    """The API's refusal said with the numbers the merchant needs."""
    if asked is None:  # the form itself was wrong
        return t("err.invalid_input", detail=exc.detail)
    currency = asked.currency
    balances = {b["currency"]: b for b in await books.balances(db, holder.merchant_id)}
    if exc.error == "insufficient_funds":
        available = balances.get(currency, {}).get("available_cents", 0)
        return t("wd.err.insufficient_funds", available=web_i18n.money(available, currency))
    if exc.error == "debt_outstanding":
        owed = [web_i18n.money(b["debt_cents"], cur) for cur, b in balances.items() if b["debt_cents"] > 0]
        return t("wd.err.debt_outstanding", debt=" + ".join(owed) or "?")
    if exc.error == "destination_cooling_off":
        dest = await destinations.owned(db, holder.merchant_id, asked.destination_id)
        return t("wd.err.destination_cooling_off", masked=dest.masked, at=when(dest.usable_at))
    if exc.error in ("destination_not_found", "idempotency_key_reused"):
        return t(f"wd.err.{exc.error}")
    if exc.status_code == 422:
        settings = state.settings
        if asked.amount_cents < settings.payout_min_cents:
            return t("wd.err.below_minimum", min=web_i18n.money(settings.payout_min_cents, currency))
        fee = withdrawals.fee_of(settings, asked.amount_cents)
        if fee >= asked.amount_cents:
            return t("wd.err.fee_too_big", fee=web_i18n.money(fee, currency))
        return t("err.invalid_input", detail=exc.detail)
    return t("wd.err.other", detail=exc.detail)


@router.post("/withdrawals")
async def request_withdrawal(request: Request, holder: ConsoleDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-withdrawal")
    kept = {
        name: value[:40] if isinstance(value := form.get(name, ""), str) else ""
        for name in ("amount", "currency", "destination_id")
    }
    asked = None
    try:
        asked = _asked(form, holder)
        answer = await payout_actions.request_withdrawal(state, holder, asked)
    except MiaofaError as exc:
        if exc.status_code not in (404, 409, 422):
            raise
        t = Translator(web_i18n.pick(request))
        words = await _refusal_words(exc, asked, db, holder, state, t)
        safe = {k: v for k, v in kept.items() if v.isascii() and v.isprintable()}
        return await _page(request, holder, db, state, status=exc.status_code, kept=safe, error=words)
    url = f"/console/withdrawals/{answer['withdrawal_id']}?done=requested"
    return secure(RedirectResponse(url, status_code=303), private=True)


@router.get("/withdrawals/{withdrawal_id}")
async def withdrawal_page(
    withdrawal_id: str, request: Request, holder: ConsoleDep, db: DbDep, state: StateDep
) -> Response:
    withdrawal, seen = await payout_actions.show(state, db, holder.merchant_id, withdrawal_param(withdrawal_id))
    lang = web_i18n.pick(request)
    timeline = [{**e, "words": note_in(e["note"], lang), "bad": e["stage"] in BAD_STAGES} for e in seen["timeline"]]
    why = timeline[-1]["words"] if seen["status"] in SETTLED_BACK and timeline else ""
    dest = await destinations.owned(db, holder.merchant_id, withdrawal.destination_id)
    return page(
        request,
        "console/withdrawal.html",
        w=seen,
        destination=dest.masked,
        timeline=timeline,
        why=why,
        moving=seen["status"] in MOVING,
        notice=request.query_params.get("done") == "requested",
    )


@router.post("/payout-destinations")
async def add_destination(request: Request, holder: ConsoleOwnerDep, db: DbDep, state: StateDep) -> Response:
    form = await request.form()
    state.csrf.check(request, form, "console-destination")
    rail = field(form, "rail", 16, required=True)
    account = field(form, "account", 128, required=True)
    if len(account) < 3:
        raise InvalidInput("account: at least 3 characters")
    name = field(form, "name", 64, required=True)
    made = await payout_actions.add_destination(db, state, holder, rail=rail, account=account, name=name)
    await db.commit()
    t = Translator(web_i18n.pick(request))
    added = t("wd.dest_added", masked=made.masked, at=when(made.usable_at))
    return await _page(request, holder, db, state, status=201, added=added)
