"""Live order status for the buyer's page: Server-Sent Events, one `status` event per change, fed by
the API process's one change feed (api/order_feed.py), never a query per stream."""

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.client_ip import ruled_ip
from api.deps import StateDep
from api.routes.shop import TokenHeader, check_token
from api.schemas import OrderId
from miaofa import contract as c
from miaofa import orders
from miaofa.errors import TooManyRequests
from miaofa.risk.limiters import client_bucket

router = APIRouter(tags=["shop"])
STREAM_TERMINAL = frozenset({c.DELIVERED, c.REFUNDED, c.REJECTED, c.EXPIRED, c.CANCELLED})
STREAM_SECONDS = 1800  # at most ~30 minutes per connection; the browser reconnects
CLIENT_CHECK_SECONDS = 1.0  # how often a quiet stream looks whether its client left


class _HeldStream(StreamingResponse):
    """A stream holding a slot of its client's stream cap until it ends, however it ends."""

    def __init__(self, content: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


@router.get("/orders/{order_id}/events")
async def order_events(
    order_id: OrderId, request: Request, state: StateDep, x_order_token: TokenHeader = None, token: str | None = None
) -> StreamingResponse:
    """Server-Sent Events: one `status` event per change, until the order settles (delivered,
    expired, cancelled, rejected or refunded). At most SSE_MAX_STREAMS_PER_IP at once per address,
    SSE_MAX_STREAMS_PER_ORDER per order and SSE_MAX_STREAMS in all (per API process); past a cap, 429."""
    check_token(state, order_id, x_order_token or token)
    streams = state.guards.streams
    ip = ruled_ip(request, state.settings)
    slot = client_bucket(ip) if ip is not None else None
    if slot is not None and not streams.acquire(slot):
        raise TooManyRequests("too many live order streams from your address; close one first", retry_after=5)
    watch = None

    def release() -> None:
        if slot is not None:
            streams.release(slot)
        if watch is not None:
            state.feed.unwatch(watch)

    try:
        watch = state.feed.watch(order_id)
        if watch.status is None:  # nobody watched this order yet: its first status (and 404 if none)
            async with state.sessionmaker() as session:
                first = (await orders.get_order(session, order_id)).status
            if watch.status is None:
                watch.status = first
    except BaseException:
        release()
        raise
    held = watch

    async def stream():
        last = None
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            if held.status != last:
                last = held.status
                yield f"event: status\ndata: {json.dumps({'order_id': order_id, 'status': last})}\n\n"
            if last in STREAM_TERMINAL:
                return
            await held.changed(CLIENT_CHECK_SECONDS)
            if await request.is_disconnected():
                return

    return _HeldStream(stream(), release, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
