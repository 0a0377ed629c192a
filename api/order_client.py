"""Talking to order workflows from the API, by the names in miaofa.contract only: open with
Update-with-Start, signal, update, query. The API never imports workflows/."""

import asyncio
import logging
from datetime import timedelta
from typing import Any

from temporalio.client import (
    RPCError,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCStatusCode

from api.state import State
from miaofa import contract as c
from miaofa import errors
from miaofa.errors import Conflict, OrderClosed, OrderNotFound, OrderTimeout, TemporalUnavailable
from miaofa.telemetry import logs

log = logging.getLogger("miaofa.api.orders")


def _search_attributes(order: c.OrderInput, merchant_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(c.SA_ORDER_STATUS, "new"),
            SearchAttributePair(c.SA_PRODUCT_SKU, order.sku),
            SearchAttributePair(c.SA_PAYMENT_GATEWAY, order.gateway),
            SearchAttributePair(c.SA_BUYER_HASH, order.buyer_hash),
            SearchAttributePair(c.SA_DELIVERY_LATE, False),
            SearchAttributePair(c.SA_AMOUNT_CENTS, order.unit_price_cents * order.quantity),
            SearchAttributePair(c.SA_MERCHANT_ID, merchant_id),
        ]
    )


async def open_order(state: State, order: c.OrderInput, merchant_id: str) -> c.OpenOrderResult | None:
    """Start the order's workflow and wait for its reservation outcome, in one round trip.

    Returns None when the workflow for this id already finished (an Idempotency-Key replayed
    after the order closed): the caller then answers from the database.
    """
    logs.bind_order(order.order_id)  # this request's log lines name its order
    start: WithStartWorkflowOperation[Any, c.OrderResult] = WithStartWorkflowOperation(
        c.ORDER_WORKFLOW,
        order,
        id=c.order_workflow_id(order.order_id),
        task_queue=state.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=_search_attributes(order, merchant_id),
        result_type=c.OrderResult,
        static_summary=f"{order.quantity} × {order.sku} via {order.gateway}",
    )  # shown in the UI; no buyer data
    try:
        async with asyncio.timeout(_update_timeout(state).total_seconds()):
            return await state.temporal.execute_update_with_start_workflow(
                c.OPEN_UPDATE,
                start_workflow_operation=start,
                id="open",
                result_type=c.OpenOrderResult,
                rpc_timeout=_update_timeout(state),
            )
    except WorkflowAlreadyStartedError:
        return None
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError) as exc:
        await _collect(start)
        raise OrderTimeout("the order is taking too long to open; try again with the same Idempotency-Key") from exc
    except RPCError as exc:
        await _collect(start)
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return None
        log.warning("opening order failed: %s", type(exc).__name__)
        raise TemporalUnavailable("the order service is not answering; try again") from exc


async def _collect(start: WithStartWorkflowOperation) -> None:
    """The start operation failed the way the update did (timed out, cancelled): collect it quietly."""
    try:
        await asyncio.wait_for(start.workflow_handle(), 1)
    except asyncio.CancelledError:
        # The SDK stores the cancellation that ended our wait in the start's future; only a
        # cancellation of this request's own task goes on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:
        pass


def _update_timeout(state: State) -> timedelta:
    # An Update waits for the workflow's answer; a stuck worker must not hold the HTTP request forever.
    # rpc_timeout bounds each RPC only: the SDK asks again while the Update is not yet accepted (no
    # worker polls), so the whole wait is bounded by asyncio.timeout as well.
    return timedelta(seconds=state.settings.update_timeout_seconds)


def _handle(state: State, order_id: str):
    return state.temporal.get_workflow_handle(c.order_workflow_id(order_id))


async def run_update(
    state: State, order_id: str, update: str, arg: Any = None, *, result_type: type, update_id: str | None = None
) -> Any:
    """Run a workflow Update; a refusal (validator or handler) becomes its catalogued error."""
    handle = _handle(state, order_id)
    args = [] if arg is None else [arg]
    try:
        async with asyncio.timeout(_update_timeout(state).total_seconds()):
            return await handle.execute_update(
                update, args=args, id=update_id, result_type=result_type, rpc_timeout=_update_timeout(state)
            )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type:
            raise errors.from_code(cause.type, cause.message, Conflict) from exc
        log.warning("update %s on order %s failed: %s", update, order_id, type(cause).__name__)
        raise Conflict("the order could not do this now; see its timeline", error="refused") from exc
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError) as exc:
        raise OrderTimeout("the order did not answer in time; try again") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise OrderClosed("this order is closed to changes (past its support window)") from exc
        raise TemporalUnavailable("the order service is not answering") from exc


# Temporal being down or overloaded is not an unknown order: support must not be told "no such order".
_OUTAGE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.INTERNAL,
}


async def ensure_exists(state: State, order_id: str) -> None:
    try:
        await _handle(state, order_id).describe()
    except RPCError as exc:
        if exc.status in _OUTAGE:
            raise TemporalUnavailable("the order service is not answering; try again") from exc
        raise OrderNotFound("no such order") from exc  # not found, or an id Temporal refuses
