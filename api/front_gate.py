"""What an order start passes once it is known to need a reservation (after the memory rules and the
stock hint): a place among the order starts in flight, and the shared per-buyer rates.

Past capacity the shop degrades instead of queueing: a place is taken at once or refused at once,
503 busy with Retry-After, before anything is reserved or counted (the attempt's in-process rate
hits are taken back, so a buyer who retries as told is not rate-limited for it). Two bounds: per
process (a counter) and, with ORDER_STARTS_TOTAL, in total across API processes (miaofa/capacity.py).
A request for an order that is opening right now (a retried Idempotency-Key) shares its place: it
was admitted already, so it is never answered busy.

OrderDesk.place holds a ticket around the whole request (`ticket()`); `enter()` takes the place
under it, and the ticket's end gives the place back, however the request ends.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from miaofa.capacity import SharedSlots
from miaofa.errors import Busy
from miaofa.risk.chain import Attempt, Chain
from miaofa.risk.shared_rates import SharedRates
from miaofa.settings import Settings
from miaofa.telemetry.registry import registry

LEASE_MARGIN_SECONDS = 15.0  # a slot outlives the API's longest wait for a workflow by this much
log = logging.getLogger("miaofa.api.gate")
BUSY = Counter("miaofa_orders_busy_total", "POST /orders answered 503 busy, by bound", ["bound"], registry=registry)
IN_FLIGHT = Gauge("miaofa_order_starts_in_flight", "Order starts in flight in this API process", registry=registry)


@dataclass
class _Ticket:
    order_id: str | None = None
    slot: int | None = None  # the shared slot, with ORDER_STARTS_TOTAL


_current: ContextVar[_Ticket | None] = ContextVar("miaofa_gate_ticket", default=None)


class FrontGate:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], chain: Chain) -> None:
        self.bound = settings.order_starts_per_process
        self.retry_after = settings.busy_retry_after_seconds
        self.chain = chain
        lease = settings.update_timeout_seconds + LEASE_MARGIN_SECONDS
        total = settings.order_starts_total
        self.shared = SharedSlots(sessionmaker, total, lease) if total else None
        self.rates = SharedRates(sessionmaker) if settings.risk_shared_rates else None
        self._opening: dict[str, int] = {}  # order id → requests for it in flight here
        self._releases: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return sum(self._opening.values())

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.ensure()

    async def stop(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    @asynccontextmanager
    async def ticket(self) -> AsyncIterator[None]:
        ticket = _Ticket()
        token = _current.set(ticket)
        try:
            yield
        finally:
            _current.reset(token)
            self._leave(ticket)

    async def enter(self, order_id: str, attempt: Attempt) -> None:
        """A place for this order start, or Busy; then the shared rates (429 past them)."""
        ticket = _current.get()
        if ticket is None or ticket.order_id is not None:
            raise RuntimeError("FrontGate.enter runs once, under FrontGate.ticket()")
        if order_id not in self._opening and self.bound and self.in_flight >= self.bound:
            self._busy(attempt, "process")
        self._opening[order_id] = self._opening.get(order_id, 0) + 1
        ticket.order_id = order_id
        IN_FLIGHT.set(self.in_flight)
        if self.shared is not None:
            ticket.slot = await self.shared.claim(order_id)
            if ticket.slot is None:
                self._busy(attempt, "total")
        if self.rates is not None:
            await self.rates.hit(self.chain.rate_keys(attempt))

    def _busy(self, attempt: Attempt, bound: str) -> None:
        BUSY.labels(bound).inc()
        self.chain.forgive(attempt)
        raise Busy(
            f"the shop is busy right now; nothing was reserved: try again in {self.retry_after} s",
            retry_after=self.retry_after,
        )

    def _leave(self, ticket: _Ticket) -> None:
        order_id = ticket.order_id
        if order_id is None:
            return
        left = self._opening.get(order_id, 0) - 1
        if left > 0:
            self._opening[order_id] = left
        else:
            self._opening.pop(order_id, None)
        IN_FLIGHT.set(self.in_flight)
        if self.shared is not None and ticket.slot is not None:
            # Apart from the request: the answer does not wait for it, and a cancelled request still frees it.
            task = asyncio.get_running_loop().create_task(self._release(ticket.slot, order_id))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, slot: int, order_id: str) -> None:
        assert self.shared is not None
        try:
            await self.shared.release(slot, order_id)
        except Exception as exc:  # the lease frees it later
            log.warning("order start slot %s not released (%s); its lease frees it", slot, type(exc).__name__)
