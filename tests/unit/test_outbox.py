"""The transactional outbox: rows come and go with their stage's transaction, a row is held by one
dispatcher at a time, failures back off and give up after a day (counted), a dead sender's row is
taken over after its lease."""

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select, text
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from miaofa import contract as c
from miaofa import orders
from miaofa.db.models import OutboxMessage
from miaofa.devstack.procs import free_port
from miaofa.messaging import outbox
from tests.helpers.messaging import (
    Receiver,
    dispatcher,
    drain,
    emit,
    make_order,
    new_email,
    rows,
)
from tests.helpers.servers import bind, serve
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.usefixtures("quiet_outbox")


async def test_an_event_is_queued_in_the_transaction_that_makes_it_true(sessionmaker) -> None:
    order_id = await make_order(sessionmaker, new_email())  # delivered
    at = datetime.now(UTC)
    async with sessionmaker() as session:  # a step that fails after moving the order
        assert await orders.move(session, order_id, c.REFUNDED, at)
        await session.flush()
        pending = (await session.scalars(select(OutboxMessage).where(OutboxMessage.order_id == order_id))).all()
        assert len(pending) == 2
        await session.rollback()
    assert await rows(sessionmaker, order_id) == []  # rolled back: nothing to send

    for _ in range(2):  # a retried step: the order is refunded once, and says so once
        async with sessionmaker.begin() as session:
            await orders.move(session, order_id, c.REFUNDED, at)
            await orders.add_event(session, order_id, "refunded", at)  # a timeline stage sends nothing itself
    queued = await rows(sessionmaker, order_id)
    assert [(r.channel, r.topic, r.status, r.attempts) for r in queued] == [
        ("webhook", "order.refunded", "pending", 0),
        ("email", "email.refunded", "pending", 0),
    ]
    assert queued[0].event_id != queued[1].event_id
    assert all(r.buyer_hash is None for r in queued)  # ids only
    # The webhook keeps the URL it is queued for (the product has none: MIAOFA_WEBHOOK_URL's).
    assert [r.detail for r in queued] == [{"at": at.isoformat(), "url": None}, {"at": at.isoformat()}]


async def test_each_event_queues_what_it_sends(sessionmaker) -> None:
    order_id = await make_order(sessionmaker, new_email(), status=c.AWAITING_PAYMENT)
    unpaid = await make_order(sessionmaker, new_email(), status=c.AWAITING_PAYMENT)
    at = datetime.now(UTC)
    async with sessionmaker.begin() as session:
        for status in (c.PAID, c.DELIVERED, c.REFUNDED):  # the status changes the outside hears about
            await orders.move(session, order_id, status, at)
        outbox.emit(session, outbox.Event.COUPON_ISSUED, order_id, at)  # the late-delivery coupon's step
        await orders.move(session, unpaid, c.EXPIRED, at)  # news to nobody
    assert [(r.channel, r.topic) for r in await rows(sessionmaker, order_id)] == [
        ("webhook", "order.paid"),
        ("webhook", "order.delivered"),
        ("webhook", "order.refunded"),
        ("email", "email.refunded"),
        ("webhook", "order.coupon_issued"),
        ("email", "email.coupon"),
    ]
    assert await rows(sessionmaker, unpaid) == []


async def test_two_dispatchers_never_send_one_row_twice(sessionmaker) -> None:
    # Every fourth request is slow: one dispatcher is still sending while the other comes round again
    # (and again) for more rows. Without the lease it would take the slow one's rows a second time.
    receiver = Receiver(delay=lambda n: 1.0 if n % 4 == 1 else 0.02)
    order_ids = [await make_order(sessionmaker, new_email()) for _ in range(8)]
    sock = bind()
    async with serve(receiver.app(), sock) as url:
        dispatchers = [
            dispatcher(sessionmaker, webhook_url=f"{url}/hook", batch=2, poll_seconds=0.01) for _ in range(2)
        ]
        for order_id in order_ids:
            await emit(sessionmaker, order_id, outbox.Event.PAID)
            await emit(sessionmaker, order_id, outbox.Event.DELIVERED)
        expected = sorted([r.event_id for order_id in order_ids for r in await rows(sessionmaker, order_id)])
        assert len(expected) == 16
        stop = asyncio.Event()
        running = [asyncio.create_task(d.run(stop)) for d in dispatchers]

        async def all_sent() -> bool:
            statuses = [r.status for order_id in order_ids for r in await rows(sessionmaker, order_id)]
            assert statuses == ["sent"] * 16, statuses
            return True

        await eventually(all_sent, timeout=30, message="every row sent")
        stop.set()
        await asyncio.gather(*running)  # a stopped dispatcher has finished its sends: no duplicate is on its way
        for d in dispatchers:
            await d.aclose()
    delivered = sorted(hit.headers["miaofa-event-id"] for order_id in order_ids for hit in receiver.for_order(order_id))
    assert delivered == expected  # each event exactly once
    attempts = [r.attempts for order_id in order_ids for r in await rows(sessionmaker, order_id)]
    assert attempts == [1] * 16


async def test_failures_back_off_then_fail_for_good_after_a_day_counted(sessionmaker) -> None:
    port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))
    receiver = Receiver(answers=[500] * 10)
    order_id = await make_order(sessionmaker, new_email())
    sock = bind()
    async with serve(receiver.app(), sock) as url:
        d = dispatcher(
            sessionmaker,
            webhook_url=f"{url}/hook",
            meter=runtime.metric_meter,
            backoff=outbox.Backoff(base_seconds=30, max_seconds=600, give_up_seconds=86400),
        )
        await emit(sessionmaker, order_id, outbox.Event.PAID)
        await drain(d, lambda: len(receiver.for_order(order_id)) == 1)
        async with sessionmaker() as session:
            *row, wait = (
                await session.execute(
                    text(
                        "SELECT status, attempts, last_error, extract(epoch FROM next_attempt_at - now()) "
                        "FROM outbox WHERE order_id = :o"
                    ),
                    {"o": order_id},
                )
            ).one()
        assert row == ["pending", 1, "http_5xx"]
        assert 30 * 0.8 - 1 <= float(wait) <= 30 * 1.2  # the first backoff, with its jitter
        await d.run_once()
        assert len(receiver.for_order(order_id)) == 1  # not due again yet

        # A day later, one more failure gives up.
        async with sessionmaker.begin() as session:
            await session.execute(
                text(
                    "UPDATE outbox SET created_at = now() - interval '1 day 1 second', "
                    "next_attempt_at = now() WHERE order_id = :o"
                ),
                {"o": order_id},
            )
        await drain(d, lambda: len(receiver.for_order(order_id)) == 2)
        await d.aclose()
    [row] = await rows(sessionmaker, order_id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "http_5xx")
    async with httpx.AsyncClient() as http:
        scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    failed = [line for line in scraped.splitlines() if line.startswith("miaofa_outbox_failed")]
    assert failed == ['miaofa_outbox_failed{channel="webhook",service_name="temporal-core-sdk",topic="order.paid"} 1']


async def test_a_row_whose_sender_died_is_sent_by_another_after_its_lease(sessionmaker) -> None:
    receiver = Receiver()
    order_id = await make_order(sessionmaker, new_email())
    await emit(sessionmaker, order_id, outbox.Event.DELIVERED)
    async with sessionmaker.begin() as session:  # a dispatcher claims it, then dies before sending
        await session.execute(
            text("UPDATE outbox SET next_attempt_at = now() - interval '1 second' WHERE order_id = :o"), {"o": order_id}
        )
    async with sessionmaker.begin() as session:
        claimed = [c for c in await outbox.claim(session, 1000, 0.5) if c.order_id == order_id]
    assert len(claimed) == 1
    sock = bind()
    async with serve(receiver.app(), sock) as url:
        d = dispatcher(sessionmaker, webhook_url=f"{url}/hook")
        await d.run_once()
        assert receiver.for_order(order_id) == []  # still leased
        await drain(d, lambda: len(receiver.for_order(order_id)) == 1)  # once the half-second lease ends
        await d.aclose()
    [row] = await rows(sessionmaker, order_id)
    assert (row.status, row.attempts) == ("sent", 2)
    async with sessionmaker.begin() as session:  # the dead sender's late word changes nothing
        assert await outbox.finish(session, claimed[0], outbox.SENT) is False
