"""Starting and reviewing payout workflows from the API, by the names in miaofa.contract only."""

import asyncio
from datetime import timedelta

from temporalio.client import RPCError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCStatusCode

from api.state import State
from miaofa import contract as c
from miaofa import errors
from miaofa.errors import Conflict, NotInReview, OrderTimeout, TemporalUnavailable
from miaofa.temporal.payouts import start_payout


async def start(state: State, payout: c.PayoutInput) -> bool:
    """Start the withdrawal's workflow after its commit. False when Temporal did not answer: the
    withdrawal stays `requested`, and its next GET, the request replayed, or reconciliation's sweep
    starts it."""
    return await start_payout(state.temporal, state.task_queue, payout)


async def review(state: State, withdrawal_id: str, update: str, review: c.PayoutReview) -> c.PayoutState:
    handle = state.temporal.get_workflow_handle(c.payout_workflow_id(withdrawal_id))
    timeout = timedelta(seconds=state.settings.update_timeout_seconds)
    try:
        async with asyncio.timeout(timeout.total_seconds()):
            return await handle.execute_update(update, review, result_type=c.PayoutState, rpc_timeout=timeout)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type:
            raise errors.from_code(cause.type, cause.message, Conflict) from exc
        raise Conflict("the withdrawal could not do this now; see its timeline", error="refused") from exc
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError) as exc:
        raise OrderTimeout("the withdrawal did not answer in time; try again") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # its workflow has ended: decided long ago
            raise NotInReview("the withdrawal is no longer in review") from exc
        raise TemporalUnavailable("the payout service is not answering") from exc
