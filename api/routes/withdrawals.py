"""Payouts over HTTP: a merchant's destinations and withdrawals, and platform finance's review.

A withdrawal is made, and its money reserved, in one database transaction of its own; its workflow
is started only after that commits, so a workflow never runs for a withdrawal that was rolled back.
The work is api/payout_actions.py's, shared with the consoles."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, Field, StrictInt
from sqlalchemy.ext.asyncio import AsyncSession

from api import payout_actions
from api.deps import FinanceDep, MerchantDep, OwnerDep, SessionDep, StateDep
from api.schemas import Plain, plain
from api.state import State
from miaofa import contract as c
from miaofa.db.payout_tables import WITHDRAWAL_STATUSES
from miaofa.errors import MissingInput
from miaofa.merchants import accounts
from miaofa.payouts import destinations, withdrawals
from miaofa.text import plain_pattern

merchant_router = APIRouter(prefix="/merchant", tags=["merchant payouts"])
admin_router = APIRouter(prefix="/admin", tags=["payouts"])


def _withdrawal_id(
    withdrawal_id: Annotated[str, Path(min_length=1, max_length=40, json_schema_extra={"pattern": plain_pattern()})],
) -> str:
    return plain("withdrawal_id", withdrawal_id)


WithdrawalId = Annotated[str, Depends(_withdrawal_id)]
RequiredKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200, json_schema_extra={"pattern": plain_pattern()})
]


class DestinationIn(BaseModel):
    rail: Annotated[str, Field(pattern="^(" + "|".join(destinations.RAILS) + ")$")]
    account: Annotated[str, Plain, Field(min_length=3, max_length=128)]
    name: Annotated[str, Plain, Field(min_length=1, max_length=64)]


class WithdrawalIn(BaseModel):
    amount_cents: StrictInt = Field(gt=0, le=10**12)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    destination_id: str = Field(min_length=1, max_length=40, pattern=r"^pd_[0-9a-f]{20}$")


class ReviewIn(BaseModel):
    reason: Annotated[str, Plain, Field(default="", max_length=300)] = ""


@merchant_router.post("/payout-destinations", status_code=201)
async def add_destination(
    body: DestinationIn, holder: OwnerDep, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """Save where withdrawals go (owner only). Usable after the cooling-off; shown masked from now on.
    Only a rail this deployment offers (422 rail_not_offered); a suspended shop's destinations cannot
    change (409 merchant_suspended)."""
    made = await payout_actions.add_destination(
        session, state, holder, rail=body.rail, account=body.account, name=body.name
    )
    return destinations.public(made)


@merchant_router.get("/payout-destinations")
async def list_destinations(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    return {"destinations": [destinations.public(d) for d in await destinations.listing(session, holder.merchant_id)]}


@merchant_router.post("/withdrawals", status_code=201)
async def request_withdrawal(
    body: WithdrawalIn, holder: MerchantDep, state: StateDep, key: RequiredKey = None
) -> dict[str, Any]:
    """Withdraw from `available`: the money is reserved at once; the answer's status follows the workflow.
    The same Idempotency-Key answers the same withdrawal. While the shop is suspended, a person reviews
    it whatever its amount, and its timeline says why."""
    if not key or not key.strip():
        raise MissingInput("send an Idempotency-Key header: a retried request must not withdraw twice")
    asked = withdrawals.Asked(body.amount_cents, body.currency, body.destination_id, key.strip(), holder.actor)
    return await payout_actions.request_withdrawal(state, holder, asked)


@merchant_router.get("/withdrawals")
async def list_withdrawals(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    return {"withdrawals": [withdrawals.summary(w) for w in await withdrawals.listing(session, holder.merchant_id)]}


@merchant_router.get("/withdrawals/{withdrawal_id}")
async def show_withdrawal(
    withdrawal_id: WithdrawalId, holder: MerchantDep, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """The withdrawal and its timeline; another shop's id is not found, like a missing one."""
    _, seen = await payout_actions.show(state, session, holder.merchant_id, withdrawal_id)
    return seen


@admin_router.get("/withdrawals")
async def review_queue(
    _: FinanceDep,
    session: SessionDep,
    status: Annotated[str, Query(pattern="^(" + "|".join(WITHDRAWAL_STATUSES) + ")$")] = c.WITHDRAWAL_IN_REVIEW,
    merchant: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Withdrawals in one status (by default the review queue), oldest first, with their shop and their
    destination masked; `merchant` (its id or slug) keeps one shop's."""
    merchant_id = (await accounts.by_id_or_slug(session, merchant)).id if merchant is not None else None
    return {"withdrawals": await withdrawals.queue(session, status, limit, merchant_id)}


@admin_router.get("/withdrawals/{withdrawal_id}")
async def finance_withdrawal(withdrawal_id: WithdrawalId, _: FinanceDep, session: SessionDep) -> dict[str, Any]:
    """One withdrawal with its shop, its destination masked, why it is reviewed, and its timeline."""
    return await withdrawals.finance_view(session, withdrawal_id)


async def _review(
    state: State, session: AsyncSession, withdrawal_id: str, update: str, actor: str, body: ReviewIn | None
) -> dict[str, Any]:
    reason = body.reason.strip() if body else ""
    return await payout_actions.review(state, session, withdrawal_id, update, actor, reason)


@admin_router.post("/withdrawals/{withdrawal_id}/approve")
async def approve_withdrawal(
    withdrawal_id: WithdrawalId, actor: FinanceDep, state: StateDep, session: SessionDep, body: ReviewIn | None = None
) -> dict[str, Any]:
    """Platform finance approves a withdrawal in review (above the second threshold, two people must)."""
    return await _review(state, session, withdrawal_id, c.APPROVE_UPDATE, actor, body)


@admin_router.post("/withdrawals/{withdrawal_id}/reject")
async def reject_withdrawal(
    withdrawal_id: WithdrawalId, actor: FinanceDep, state: StateDep, session: SessionDep, body: ReviewIn | None = None
) -> dict[str, Any]:
    """Platform finance rejects a withdrawal in review, with a reason the merchant reads; the money returns."""
    return await _review(state, session, withdrawal_id, c.REJECT_UPDATE, actor, body)
