"""A whole shop inside the test process: API and worker on a given Temporal env, the simulator over HTTP."""

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import temporalio.activity
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    StartWorkflowUpdateWithStartInput,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from miaofa.contract import order_workflow_id
from miaofa.crypto.vault import Vault
from miaofa.db.models import NotifyLog, Payment
from miaofa.gateways.registry import build_gateways
from miaofa.settings import Settings
from tests.helpers.servers import bind, serve
from tests.helpers.waiting import eventually
from worker import WORKFLOWS, build_worker, saga_activities


def activity_name(fn: Callable) -> str:
    return temporalio.activity._Definition.must_from_callable(fn).name


HISTORIES = Path(__file__).parents[1] / "histories"
RISK_OFF = dict(
    risk_rate_per_ip_per_minute=0,
    risk_rate_per_email_per_minute=0,
    risk_max_open_orders_per_email=0,
    risk_max_open_orders_per_ip=0,
    risk_max_open_units_per_ip=0,
    risk_max_open_orders_per_buyer_product=0,
    risk_max_units_per_buyer_per_product=0,
    risk_max_open_units_per_net56=0,
    risk_max_open_units_per_net48=0,
    risk_max_unpaid_share=0,
    sse_max_streams_per_ip=0,
    check_payment_interval_seconds=0,
    risk_rate_per_device_per_minute=0,
    risk_new_device_review_cents=0,
    risk_history_multiple=0,
)
ADMIN_TOKEN = "adm_test_token_0123456789"
SUPPORT_TOKEN = "sup_test_token_0123456789"


@dataclass
class Stack:
    settings: Settings
    env: WorkflowEnvironment
    http: httpx.AsyncClient
    sim: httpx.AsyncClient
    sessionmaker: async_sessionmaker[AsyncSession]
    task_queue: str
    app: Any = None
    activities: Sequence[Callable] = ()

    def worker(self, workflows: Sequence[type] = WORKFLOWS) -> Worker:
        """Another worker on this stack's task queue (a deploy: a new one replays the open runs)."""
        return build_worker(
            self.env.client, activities=self.activities, task_queue=self.task_queue, workflows=workflows
        )

    @property
    def vault(self) -> Vault:
        return Vault(self.settings.vault_key)

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    support = {"Authorization": f"Bearer {SUPPORT_TOKEN}"}

    async def product(self, keys: list[str] | int, price_cents: int = 990, sla: int = 60, currency: str = "CNY") -> str:
        sku = "p-" + uuid.uuid4().hex[:10]
        created = await self.http.post(
            "/admin/products",
            headers=self.admin,
            json={
                "sku": sku,
                "name": f"Product {sku}",
                "price_cents": price_cents,
                "currency": currency,
                "delivery_sla_seconds": sla,
            },
        )
        assert created.status_code == 201, created.text
        if isinstance(keys, int):
            keys = [f"KEY-{sku}-{i:05d}-{uuid.uuid4().hex[:6]}" for i in range(keys)]
        if keys:
            imported = await self.http.post(
                f"/admin/products/{sku}/keys",
                headers={**self.admin, "Content-Type": "text/plain"},
                content="\n".join(keys),
                params={},
            )
            assert imported.status_code == 200, imported.text
        return sku

    async def order(
        self, sku: str, quantity: int = 1, email: str = "buyer@example.com", **extra: Any
    ) -> httpx.Response:
        headers = extra.pop("headers", {})
        return await self.http.post(
            "/orders",
            headers=headers,
            json={"sku": sku, "quantity": quantity, "email": email, "gateway": "simulator", **extra},
        )

    async def ordered(self, sku: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.order(sku, **kwargs)
        assert response.status_code == 201, response.text
        return response.json()

    async def now(self) -> datetime:
        """The workflows' clock: on the time-skipping server it runs ahead of the wall clock."""
        return await self.env.get_current_time()

    async def skip(self, span: timedelta, step: timedelta = timedelta(hours=12)) -> None:
        """Skip a long span in steps: one skip fires every timer of every open workflow in this
        server (earlier tests' orders too), and one RPC that does all of it can time out."""
        while span > timedelta(0):
            await self.env.sleep(min(span, step))
            span -= step

    async def pay(self, order: dict[str, Any], paid_at: datetime | None = None) -> httpx.Response:
        if paid_at is None and self.env.supports_time_skipping:
            paid_at = await self.now()  # the gateway's clock agrees with the workflows'
        body = {"paid_at": paid_at.isoformat()} if paid_at else None
        return await self.sim.post(f"/pay/{order['payment']['payment_id']}", json=body)

    async def control(self, **knobs: Any) -> None:
        from tests.conftest import SIM_CONTROL_TOKEN

        response = await self.sim.post("/control", json=knobs, headers={"Authorization": f"Bearer {SIM_CONTROL_TOKEN}"})
        assert response.status_code == 200, response.text

    async def view(self, order: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.get(f"/orders/{order['order_id']}", headers={"X-Order-Token": order["access_token"]})
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_status(self, order: dict[str, Any], status: str, timeout: float = 20) -> dict[str, Any]:
        async def reached() -> dict[str, Any]:
            view = await self.view(order)
            assert view["status"] == status, f"order is {view['status']!r}: {stages(view)}"
            return view

        return await eventually(reached, timeout, f"order {order['order_id']} to be {status!r}", interval=0.1)

    async def wait_stage(self, order: dict[str, Any], stage: str, timeout: float = 20) -> dict[str, Any]:
        """The order's view once its timeline shows `stage`."""

        async def reached() -> dict[str, Any]:
            view = await self.view(order)
            assert stage in stages(view), f"{view['status']}: {stages(view)}"
            return view

        return await eventually(reached, timeout, f"a {stage!r} stage on order {order['order_id']}", interval=0.1)

    async def stages_of(self, order: dict[str, Any]) -> list[str]:
        return stages(await self.view(order))

    async def settled(self, order: dict[str, Any], signals: int = 0, timeout: float = 20) -> None:
        """A barrier before asserting that something did *not* happen: wait until the order's
        workflow has handled everything sent to it. At least `signals` signals are in its history, a
        workflow task completed after the last one, and no workflow task or activity is pending."""
        handle = self.handle(order)

        async def idle() -> bool:
            described = (await handle.describe()).raw_description
            assert not described.HasField("pending_workflow_task"), "a workflow task is pending"
            assert not described.pending_activities, f"{len(described.pending_activities)} activities pending"
            events = (await handle.fetch_history()).events
            signalled = [
                i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            ]
            assert len(signalled) >= signals, f"{len(signalled)} of {signals} signals arrived"
            after = events[signalled[-1] + 1 :] if signalled else events
            return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in after)

        await eventually(idle, timeout, f"order {order['order_id']}'s workflow to settle")

    async def refresh_stock(self) -> None:
        """Bring the API's stock hint up to date now instead of at its next once-a-second refresh."""
        await self.app.state.miaofa.hot.refresh()

    async def rival_buys(self, sku: str, email: str = "rival@example.com") -> dict[str, Any]:
        """Another buyer orders the key a release gave back, pays, and gets it."""
        await self.refresh_stock()
        rival = await self.ordered(sku, email=email)
        await self.pay(rival)
        await self.wait_status(rival, "delivered")
        return rival

    async def sim_payment(self, payment_id: str) -> dict[str, Any]:
        """The payment as the gateway simulator's books have it."""
        answer = await self.sim.get(
            f"/api/payments/{payment_id}", headers={"Authorization": f"Bearer {self.settings.sim_secret}"}
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def payment_status(self, order: dict[str, Any]) -> str | None:
        """The order's payment status in the shop's database."""
        async with self.sessionmaker() as session:
            return await session.scalar(select(Payment.status).where(Payment.order_id == order["order_id"]))

    async def last_notify_id(self) -> int:
        """The newest notify-log row's id (0 when none): rows after it are a test's own."""
        async with self.sessionmaker() as session:
            return await session.scalar(select(func.coalesce(func.max(NotifyLog.id), 0))) or 0

    async def stock(self, sku: str) -> dict[str, int]:
        response = await self.http.get(f"/admin/products/{sku}/stock", headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()

    async def record_history(self, order: dict[str, Any], name: str) -> None:
        """With MIAOFA_RECORD_HISTORIES=<version> (v2, v3 …), save this order's history for the replay
        test in tests/histories/<version>/. A released history is never overwritten."""
        version = os.environ.get("MIAOFA_RECORD_HISTORIES", "")
        if not version:
            return
        if not re.fullmatch(r"v[0-9]+", version):
            raise AssertionError(f"MIAOFA_RECORD_HISTORIES must name a version such as v3, not {version!r}")
        path = HISTORIES / version / f"{name}.json"
        if path.exists():
            raise AssertionError(f"{path} is a released history and is never re-recorded: record a new version")
        history = await self.handle(order).fetch_history()
        path.parent.mkdir(exist_ok=True)
        path.write_text(history.to_json())

    def handle(self, order: dict[str, Any]):
        return self.env.client.get_workflow_handle(order_workflow_id(order["order_id"]))


def stages(view: dict[str, Any]) -> list[str]:
    """The stage names of an order view's timeline, in order."""
    return [event["stage"] for event in view["timeline"]]


class _Started(Interceptor):
    """Remembers every workflow a stack's API and activities start."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Recorder(next, self.ids)


class _Recorder(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, ids: set[str]) -> None:
        super().__init__(next)
        self._ids = ids

    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        self._ids.add(input.id)
        return await super().start_workflow(input)

    async def start_update_with_start_workflow(self, input: StartWorkflowUpdateWithStartInput) -> Any:
        self._ids.add(input.start_workflow_input.id)
        return await super().start_update_with_start_workflow(input)


async def _terminate(client: Client, ids: set[str]) -> None:
    """The time-skipping server stops its clock while a workflow task waits for a worker: an order
    left open on a stopped stack's queue would hang every later skip (a 7-day support timer
    firing with nobody to run it). The test server cannot list workflows, hence the recorder."""
    for workflow_id in ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate("the test's stack stopped")
        except RPCError:
            pass  # already closed


@asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment,
    sessionmaker: async_sessionmaker[AsyncSession],
    sim_url: str,
    replace_activities: Sequence[Callable] = (),
    task_queue: str | None = None,
    start_worker: bool = True,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """replace_activities: stand-ins registered under a real activity's name (e.g. a failing one).

    The buyer rate limits and open-order caps are off unless a test sets them: the tests order
    many times from one address and one email (tests/api/test_abuse.py turns them on)."""
    # No bound on order starts in flight either: the tests' bursts are not load (tests/api/test_busy.py sets it).
    settings = {**RISK_OFF, "order_starts_per_process": 0, **settings}
    sock = bind()
    config = Settings(
        api_port=sock.getsockname()[1],
        admin_token=ADMIN_TOKEN,
        support_token=SUPPORT_TOKEN,
        sim_url=sim_url,
        **settings,
    )
    task_queue = task_queue or f"tq-{uuid.uuid4()}"
    started = _Started()
    connected = env.client.config()  # the env's own interceptors (tracing) stay, the recorder joins them
    client = Client(**{**connected, "interceptors": [*connected.get("interceptors", []), started]})
    app = create_app(config, temporal=client, task_queue=task_queue)
    gateways = build_gateways(config)
    activities = saga_activities(
        settings=config,
        sessionmaker=sessionmaker,
        vault=Vault(config.vault_key),
        gateways=gateways,
        temporal=client,
    )
    replaced = {activity_name(fn) for fn in replace_activities}
    activities = [fn for fn in activities if activity_name(fn) not in replaced] + list(replace_activities)
    # Without start_worker the test runs its own (Stack.worker): a client registers one per queue.
    worker = build_worker(env.client, activities=activities, task_queue=task_queue) if start_worker else None
    async with (
        worker or nullcontext(),
        serve(app, sock) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        httpx.AsyncClient(base_url=sim_url, timeout=10) as sim,
    ):
        try:
            yield Stack(config, env, http, sim, sessionmaker, task_queue, app, activities)
        finally:
            if env.supports_time_skipping:
                await _terminate(client, started.ids)
            for gateway in gateways.values():
                await gateway.aclose()  # type: ignore[attr-defined]
