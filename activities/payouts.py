"""The payout's steps as activities: the timeline, the rail, and the ledger's last move.

Only ids cross into the workflow; the destination is unsealed here, handed to the rail, and dropped."""

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.db import transaction
from miaofa import steps as s
from miaofa.crypto.vault import Vault
from miaofa.payouts import destinations, settle, withdrawals
from miaofa.payouts.rails import PayoutRail, Transfer
from miaofa.settings import Settings
from miaofa.temporal.payouts import start_payout

log = logging.getLogger("miaofa.payouts")


class PayoutActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        vault: Vault,
        rails: dict[str, PayoutRail],
        temporal: Client,
        settings: Settings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.rails = rails
        self.temporal = temporal
        self.settings = settings

    @activity.defn(name=s.START_WAITING_PAYOUTS)
    async def start_waiting_payouts(self, older_than_seconds: int) -> int:
        """Start the workflow of each withdrawal still `requested` after this long; idempotent by id."""
        async with self.sessionmaker() as session:
            waiting = await withdrawals.waiting(session, datetime.now(UTC) - timedelta(seconds=older_than_seconds))
        started = 0
        for withdrawal in waiting:
            payout = withdrawals.payout_input(withdrawal, self.settings)
            if await start_payout(self.temporal, activity.info().task_queue, payout):
                started += 1
        if waiting:
            log.info("started %d of %d waiting withdrawals", started, len(waiting))
        return started

    @activity.defn(name=s.RECORD_PAYOUT_STAGE)
    async def record_payout_stage(self, step: s.PayoutStageStep) -> None:
        async with transaction(self.sessionmaker) as session:
            await settle.record_stage(session, step)

    @activity.defn(name=s.SETTLE_PAYOUT)
    async def settle_payout(self, step: s.SettleStep) -> None:
        async with transaction(self.sessionmaker) as session:
            await settle.settle(session, step)
        log.info("withdrawal %s settled: %s", step.withdrawal_id, step.outcome)

    @activity.defn(name=s.SUBMIT_TRANSFER)
    async def submit_transfer(self, step: s.TransferStep) -> s.TransferAnswer:
        async with self.sessionmaker() as session:
            withdrawal = await withdrawals.by_id(session, step.withdrawal_id)
            if withdrawal is None:
                raise ApplicationError("no such withdrawal", type=s.DATA_ERROR, non_retryable=True)
            destination = await destinations.owned(session, withdrawal.merchant_id, withdrawal.destination_id)
        account, name = destinations.unseal(self.vault, destination)
        transfer = Transfer(
            number=withdrawal.id,
            amount_cents=withdrawal.amount_cents - withdrawal.fee_cents,
            currency=withdrawal.currency,
            account=account,
            name=name,
        )
        answer = await self._rail(withdrawal.rail).submit(transfer)
        log.info("withdrawal %s submitted to %s: %s %s", withdrawal.id, withdrawal.rail, answer.status, answer.code)
        return answer

    @activity.defn(name=s.QUERY_TRANSFER)
    async def query_transfer(self, step: s.TransferStep) -> s.TransferAnswer:
        rail = await self._rail_of(step.withdrawal_id)
        answer = await rail.query(step.withdrawal_id)
        log.info("withdrawal %s queried: %s %s", step.withdrawal_id, answer.status, answer.code)
        return answer

    @activity.defn(name=s.CANCEL_TRANSFER)
    async def cancel_transfer(self, step: s.TransferStep) -> s.TransferAnswer:
        rail = await self._rail_of(step.withdrawal_id)
        if not rail.can_cancel:
            return await rail.query(step.withdrawal_id)
        return await rail.cancel(step.withdrawal_id)

    async def _rail_of(self, withdrawal_id: str) -> PayoutRail:
        async with self.sessionmaker() as session:
            withdrawal = await withdrawals.by_id(session, withdrawal_id)
        if withdrawal is None:
            raise ApplicationError("no such withdrawal", type=s.DATA_ERROR, non_retryable=True)
        return self._rail(withdrawal.rail)

    def _rail(self, name: str) -> PayoutRail:
        rail = self.rails.get(name)
        if rail is None:  # configuration, not weather: retried until the rail is configured
            raise ApplicationError(f"the payout rail {name!r} is not configured on this worker")
        return rail
