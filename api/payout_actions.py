"""What the merchant API and the consoles both do with payouts, written once: save a destination,
request a withdrawal (made, and its money reserved, in one transaction of its own; its workflow
started only after that commits), and review one through its workflow's Update, audited."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api import payout_client
from api.state import State
from miaofa import audit
from miaofa import contract as c
from miaofa.db.payout_tables import PayoutDestination, Withdrawal
from miaofa.errors import NotFound, RailNotOffered
from miaofa.merchants.tokens import MerchantHolder
from miaofa.payouts import destinations, rail_set, withdrawals


async def add_destination(
    session: AsyncSession, state: State, holder: MerchantHolder, *, rail: str, account: str, name: str
) -> PayoutDestination:
    """Save where withdrawals go (the caller has checked the owner role, and commits). Only a rail this
    deployment offers; a suspended shop's destinations cannot change (409 merchant_suspended)."""
    offered = rail_set.offered(state.settings)
    if rail not in offered:
        raise RailNotOffered(f"rail: not offered here; one of: {', '.join(offered) or 'none'}")
    made = await destinations.add(
        session,
        state.vault,
        merchant_id=holder.merchant_id,
        rail=rail,
        account=account,
        name=name,
        actor=holder.actor,
        now=datetime.now(UTC),
        delay_seconds=state.settings.payout_new_destination_delay_seconds,
    )
    audit.record(
        session, holder.actor, "payout_destination.add", made.id, merchant_id=holder.merchant_id, masked=made.masked
    )
    return made


async def request_withdrawal(state: State, holder: MerchantHolder, asked: withdrawals.Asked) -> dict[str, Any]:
    """The withdrawal's summary; the same idempotency key answers the same withdrawal."""
    async with state.sessionmaker.begin() as session:
        withdrawal, fresh = await withdrawals.request(
            session, state.settings, holder.merchant_id, asked, datetime.now(UTC)
        )
        if fresh:
            audit.record(
                session,
                holder.actor,
                "withdrawal.request",
                withdrawal.id,
                merchant_id=holder.merchant_id,
                amount_cents=withdrawal.amount_cents,
                destination=withdrawal.destination_id,
                **({"review": "merchant_suspended"} if withdrawal.review_reason else {}),
            )
        payout = withdrawals.payout_input(withdrawal, state.settings)
        answer = withdrawals.summary(withdrawal)
    if withdrawal.status == c.WITHDRAWAL_REQUESTED:  # new, or a replay whose first start failed
        await payout_client.start(state, payout)
    return answer


async def review(
    state: State, session: AsyncSession, withdrawal_id: str, update: str, actor: str, reason: str
) -> dict[str, Any]:
    """Platform finance's approve or reject (the workflow's Update decides; a refusal raises its
    error and audits nothing). The caller commits the audit line."""
    found = await withdrawals.by_id(session, withdrawal_id)
    if found is None:
        raise NotFound("no such withdrawal", error="withdrawal_not_found")
    answer = await payout_client.review(state, found.id, update, c.PayoutReview(actor=actor, reason=reason))
    audit.record(session, actor, f"withdrawal.{update}", found.id, merchant_id=found.merchant_id, reason=reason)
    return {"withdrawal_id": answer.withdrawal_id, "status": answer.status, "approvals": answer.approvals}


async def show(
    state: State, session: AsyncSession, merchant_id: str, withdrawal_id: str
) -> tuple[Withdrawal, dict[str, Any]]:
    """The shop's withdrawal and its view with the timeline; another shop's id is not found, like a
    missing one. A withdrawal still `requested` may never have had its workflow started: start it now."""
    withdrawal = await withdrawals.mine(session, merchant_id, withdrawal_id)
    if withdrawal.status == c.WITHDRAWAL_REQUESTED:
        await payout_client.start(state, withdrawals.payout_input(withdrawal, state.settings))
    return withdrawal, await withdrawals.view(session, withdrawal)
