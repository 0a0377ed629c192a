"""The state and steps the order workflow's parts share, declared once so a type checker sees them.

OrderWorkflow (workflows/order.py) sets every field in its `@workflow.init` and implements every
step; its mixins (workflows/proofs.py, workflows/support.py) read and write them through this base.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime

from temporalio.common import SearchAttributeUpdate

from miaofa import contract as c
from miaofa import steps as s


class SagaState:
    _input: c.OrderInput | None
    _status: str
    _amount_cents: int
    _expires_at: datetime | None
    _payment: c.PaymentLink | None
    _paid: s.PaymentVerdict | None
    _proofs: list[s.AcceptPaymentStep]
    _look_requested: bool
    _strays: set[str]
    _cancel_requested: bool
    _cancel_actor: str
    _support_lock: asyncio.Lock
    # The review's outcome: "" while undecided, then APPROVE_UPDATE, REJECT_UPDATE or TIMED_OUT.
    _review_outcome: str
    _review_request: c.SupportRequest | None

    @property
    def _order(self) -> c.OrderInput:
        assert self._input is not None
        return self._input

    @property
    def _order_id(self) -> str:
        return self._order.order_id

    async def _record(self, step: s.StageStep) -> None:
        raise NotImplementedError

    async def _release(self, status: str, actor: str | None = None, reason: str = "") -> None:
        raise NotImplementedError

    async def _refund(self, reason: str, actor: str) -> None:
        raise NotImplementedError

    def _set_status(self, status: str, *also: SearchAttributeUpdate) -> None:
        raise NotImplementedError

    async def _send_delivery_email(self) -> None:
        raise NotImplementedError

    @staticmethod
    async def _wait_until(condition: Callable[[], bool], until: datetime) -> None:
        raise NotImplementedError
