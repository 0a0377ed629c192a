"""Order starts in flight, bounded across every API process: slots in PostgreSQL (order_start_slots).

Claiming is one statement (a free slot under SKIP LOCKED, so claimers never queue on each other),
releasing is one. A slot carries a lease: a process that dies holding one frees it when the lease
ends (the API's longest wait for a workflow, plus a margin). A retry of an order that is opening
right now (the same Idempotency-Key, on any API process) shares that order's slot: it is already
admitted, so it is never refused as busy and never takes a second place.
"""

import os
import socket
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

ENSURE_EVERY_SECONDS = 5.0  # on a busy answer, at most this often: put back slots a crash emptied

_CLAIM = text(
    """
    WITH mine AS (
        UPDATE order_start_slots SET holders = holders + 1
        WHERE order_id = :order_id AND lease_until > clock_timestamp() AND slot < :bound
        RETURNING slot
    ), free AS (
        SELECT slot FROM order_start_slots
        WHERE slot < :bound AND lease_until <= clock_timestamp() AND NOT EXISTS (SELECT FROM mine)
        LIMIT 1 FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE order_start_slots s
        SET order_id = :order_id, holder = :holder, holders = 1,
            lease_until = clock_timestamp() + make_interval(secs => :lease)
        FROM free WHERE s.slot = free.slot
        RETURNING s.slot
    )
    SELECT slot FROM mine UNION ALL SELECT slot FROM claimed LIMIT 1
    """
)
_RELEASE = text(
    """
    UPDATE order_start_slots
    SET holders = holders - 1,
        order_id = CASE WHEN holders <= 1 THEN NULL ELSE order_id END,
        lease_until = CASE WHEN holders <= 1 THEN '-infinity'::timestamptz ELSE lease_until END
    WHERE slot = :slot AND order_id = :order_id
    """
)
_ENSURE = text(
    "INSERT INTO order_start_slots (slot) SELECT generate_series(0, :bound - 1) ON CONFLICT (slot) DO NOTHING"
)
_HELD = text("SELECT count(*) FROM order_start_slots WHERE lease_until > clock_timestamp() AND slot < :bound")


class SharedSlots:
    """At most `bound` order starts in flight in all, whichever API process runs them."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], bound: int, lease_seconds: float) -> None:
        self.sessionmaker, self.bound, self.lease_seconds = sessionmaker, bound, lease_seconds
        # Names this process in the table (ops can see who holds what); the nonce tells restarts apart.
        self.holder = f"{socket.gethostname()[:50]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._ensured_at = -ENSURE_EVERY_SECONDS

    async def ensure(self) -> None:
        """The table holds `bound` slots (at start; and after a crash emptied the UNLOGGED table)."""
        self._ensured_at = time.monotonic()
        async with self.sessionmaker.begin() as session:
            await session.execute(_ENSURE, {"bound": self.bound})

    async def claim(self, order_id: str) -> int | None:
        """A slot for this order (its own, if it is opening already), or None: busy."""
        async with self.sessionmaker.begin() as session:
            slot = await session.scalar(
                _CLAIM,
                {"order_id": order_id, "holder": self.holder, "bound": self.bound, "lease": self.lease_seconds},
            )
        if slot is None and time.monotonic() - self._ensured_at > ENSURE_EVERY_SECONDS:
            await self.ensure()  # cheap, and rare: only busy answers pay it
        return slot

    async def release(self, slot: int, order_id: str) -> None:
        async with self.sessionmaker.begin() as session:
            await session.execute(_RELEASE, {"slot": slot, "order_id": order_id})

    async def held(self) -> int:
        """Slots held now, across all processes (a gauge, and the tests' check)."""
        async with self.sessionmaker() as session:
            return int(await session.scalar(_HELD, {"bound": self.bound}) or 0)
