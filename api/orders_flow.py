"""Talking to order workflows from the API: open with Update-with-Start, signal, update, query."""

from contextlib import suppress
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

import logging

from api.state import State
from miaofa import contract as c
from miaofa.errors import Conflict, NotFound, Unavailable
from workflows.order import OrderWorkflow

log = logging.getLogger("miaofa.api.orders")



def _search_attributes(order: c.OrderInput) -> TypedSearchAttributes:
    return TypedSearchAttributes([
        SearchAttributePair(c.SA_ORDER_STATUS, "new"),
        SearchAttributePair(c.SA_PRODUCT_SKU, order.sku),
        SearchAttributePair(c.SA_PAYMENT_GATEWAY, order.gateway),
        SearchAttributePair(c.SA_BUYER_HASH, order.buyer_hash),
        SearchAttributePair(c.SA_DELIVERY_LATE, False),
        SearchAttributePair(c.SA_AMOUNT_CENTS, order.unit_price_cents * order.quantity),
    ])


async def open_order(state: State, order: c.OrderInput) -> c.OpenOrderResult | None:
    """Start the order's workflow and wait for its reservation outcome, in one round trip.

    Returns None when the workflow for this id already finished (an Idempotency-Key replayed
    after the order closed): the caller then answers from the database.
    """
    start = WithStartWorkflowOperation(
        OrderWorkflow.run, order, id=c.order_workflow_id(order.order_id), task_queue=state.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=_search_attributes(order),
        static_summary=f"{order.quantity} × {order.sku} via {order.gateway}")  # shown in the UI; no buyer data
    try:
        return await state.temporal.execute_update_with_start_workflow(
            OrderWorkflow.open_order, start_workflow_operation=start, id="open", rpc_timeout=_update_timeout(state))
    except WorkflowAlreadyStartedError:
        return None
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        with suppress(Exception):  # the start operation failed the same way; collect it quietly
            await start.workflow_handle()
        raise Unavailable("the order is taking too long to open; try again with the same Idempotency-Key",
                          error="order_timeout") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return None
        log.warning("opening order failed: %s", exc)
        raise Unavailable("the order service is not answering; try again", error="temporal_unavailable") from exc


def _update_timeout(state: State) -> timedelta:
    # An Update waits for the workflow's answer; a stuck worker must not hold the HTTP request forever.
    return timedelta(seconds=state.settings.update_timeout_seconds)


def _handle(state: State, order_id: str):
    return state.temporal.get_workflow_handle(c.order_workflow_id(order_id))


async def signal_payment(state: State, order_id: str, notice: c.PaymentNotice) -> bool:
    """False when the workflow is gone (closed long after expiry): the caller records an orphan."""
    try:
        await _handle(state, order_id).signal(OrderWorkflow.payment_notified, notice)
        return True
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise Unavailable("the order service is not answering", error="temporal_unavailable") from exc


async def run_update(state: State, order_id: str, update: Any, arg: Any = None, update_id: str | None = None) -> Any:
    """Run a workflow Update; a refusal (validator or handler) becomes 409 with its reason."""
    handle = _handle(state, order_id)
    try:
        if arg is None:
            return await handle.execute_update(update, id=update_id, rpc_timeout=_update_timeout(state))
        return await handle.execute_update(update, arg, id=update_id, rpc_timeout=_update_timeout(state))
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
        error = cause.type if isinstance(cause, ApplicationError) and cause.type else "refused"
        raise Conflict(reason, error=_snake(error)) from exc
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise Unavailable("the order did not answer in time; try again", error="order_timeout") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict("this order is closed to changes (past its support window)", error="order_closed") from exc
        raise Unavailable("the order service is not answering", error="temporal_unavailable") from exc


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


async def ensure_exists(state: State, order_id: str) -> None:
    try:
        await _handle(state, order_id).describe()
    except RPCError as exc:
        raise NotFound("no such order", error="order_not_found") from exc
