"""An order's status moves only along the transition table (miaofa.orders.TRANSITIONS), checked in the
UPDATE itself: every illegal move leaves the row as it was, a retried move is a no-op, and of two
moves racing from one status exactly one wins. Real PostgreSQL, no workflow."""

import asyncio
import itertools
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError

from activities.db import transaction
from activities.orders import OrderActivities
from miaofa import catalog, orders
from miaofa import contract as c
from miaofa import steps as s
from miaofa.db.models import Order, OrderEvent
from tests.helpers.messaging import make_order, new_email

# The README's diagram, spelled out: a payment after the window (or the cancel) pays the order
# again, and it is then delivered or refunded.
LEGAL = {
    (c.IN_REVIEW, c.AWAITING_PAYMENT),
    (c.IN_REVIEW, c.REJECTED),
    (c.AWAITING_PAYMENT, c.PAID),
    (c.AWAITING_PAYMENT, c.EXPIRED),
    (c.AWAITING_PAYMENT, c.CANCELLED),
    (c.PAID, c.DELIVERED),
    (c.PAID, c.DELIVERY_FAILED),
    (c.PAID, c.REFUNDED),
    (c.DELIVERY_FAILED, c.REFUNDED),
    (c.DELIVERED, c.REFUNDED),
    (c.EXPIRED, c.PAID),
    (c.CANCELLED, c.PAID),
}


def test_the_table_is_the_readme_diagram() -> None:
    assert set(orders.TRANSITIONS) == set(c.STATUSES)
    assert {(old, new) for old, news in orders.TRANSITIONS.items() for new in news} == LEGAL


async def _orders_in(sessionmaker, statuses: list[str]) -> list[str]:
    """One order row per status, written directly (one product, one transaction)."""
    at = datetime.now(UTC)
    ids = [uuid.uuid4().hex[:20] for _ in statuses]
    async with sessionmaker.begin() as session:
        product = await catalog.create_product(
            session, sku="st-" + uuid.uuid4().hex[:10], name="Status test", price_cents=990, currency="CNY"
        )
        for order_id, status in zip(ids, statuses, strict=True):
            session.add(
                Order(
                    id=order_id,
                    product_id=product.id,
                    sku=product.sku,
                    quantity=1,
                    email=new_email(),
                    buyer_hash="b" * 32,
                    amount_cents=990,
                    currency="CNY",
                    gateway="simulator",
                    status=status,
                    expires_at=at,
                    created_at=at,
                )
            )
    return ids


async def _statuses(sessionmaker, ids: list[str]) -> list[str]:
    async with sessionmaker() as session:
        found = dict((await session.execute(select(Order.id, Order.status).where(Order.id.in_(ids)))).all())
    return [found[order_id] for order_id in ids]


async def test_every_pair_moves_only_if_the_table_allows_it(sessionmaker) -> None:
    pairs = list(itertools.product(c.STATUSES, repeat=2))
    ids = await _orders_in(sessionmaker, [old for old, _ in pairs])
    at = datetime.now(UTC)
    answers: dict[tuple[str, str], object] = {}
    for (old, new), order_id in zip(pairs, ids, strict=True):
        try:
            async with sessionmaker.begin() as session:
                answers[old, new] = await orders.move(session, order_id, new, at)
        except orders.IllegalTransition as exc:
            assert (exc.order_id, exc.current, exc.to) == (order_id, old, new)
            answers[old, new] = "refused"
    expected = {(old, new): True if (old, new) in LEGAL else False if old == new else "refused" for old, new in pairs}
    assert answers == expected
    after = await _statuses(sessionmaker, ids)
    assert after == [new if (old, new) in LEGAL else old for old, new in pairs]


async def test_no_order_is_no_move(sessionmaker) -> None:
    async with sessionmaker.begin() as session:
        with pytest.raises(orders.IllegalTransition, match="nowhere"):
            await orders.move(session, "no-such-order", c.PAID, datetime.now(UTC))


async def test_an_illegal_move_fails_its_step_for_good_and_writes_nothing(sessionmaker) -> None:
    [order_id] = await _orders_in(sessionmaker, [c.DELIVERED])
    at = datetime.now(UTC)
    with pytest.raises(ApplicationError) as raised:
        async with transaction(sessionmaker) as session:
            await orders.add_event(session, order_id, "expired", at)
            await orders.move(session, order_id, c.EXPIRED, at)
    assert (raised.value.type, raised.value.non_retryable) == (s.DATA_ERROR, True)
    assert raised.value.message == f"order {order_id} cannot move from delivered to expired"
    assert await _statuses(sessionmaker, [order_id]) == [c.DELIVERED]
    async with sessionmaker() as session:  # the step's other writes went with it
        assert await session.scalar(select(OrderEvent.id).where(OrderEvent.order_id == order_id)) is None


async def test_a_retried_step_moves_once_and_does_not_fail(sessionmaker) -> None:
    order_id = await make_order(sessionmaker, new_email(), status=c.AWAITING_PAYMENT)
    step = s.ReleaseStep(order_id, c.EXPIRED, datetime.now(UTC))
    activities = OrderActivities(sessionmaker)
    await activities.release_stock(step)
    await activities.release_stock(step)  # its first run committed, the answer was lost: Temporal retries it
    assert await _statuses(sessionmaker, [order_id]) == [c.EXPIRED]
    async with sessionmaker() as session:
        stages = list(await session.scalars(select(OrderEvent.stage).where(OrderEvent.order_id == order_id)))
    assert stages == [c.EXPIRED]


@pytest.mark.parametrize(
    ("start", "one", "other"),
    [
        (c.AWAITING_PAYMENT, c.EXPIRED, c.CANCELLED),  # the window's end and support's cancel
        (c.IN_REVIEW, c.AWAITING_PAYMENT, c.REJECTED),  # approve and reject
        (c.PAID, c.DELIVERED, c.DELIVERY_FAILED),
        (c.AWAITING_PAYMENT, c.PAID, c.PAID),  # the same move twice: one writes, the other finds it done
    ],
)
async def test_of_two_moves_racing_from_one_status_exactly_one_wins(
    sessionmaker, start: str, one: str, other: str
) -> None:
    [order_id] = await _orders_in(sessionmaker, [start])
    at = datetime.now(UTC)
    both_started = asyncio.Barrier(2)

    async def attempt(to: str) -> object:
        try:
            async with sessionmaker.begin() as session:
                await session.execute(select(1))  # a connection of its own, before the race
                await both_started.wait()
                moved = await orders.move(session, order_id, to, at)
                await asyncio.sleep(0.2)  # hold the row while the other one tries
            return moved
        except orders.IllegalTransition:
            return "refused"

    answers = await asyncio.gather(attempt(one), attempt(other))
    loser = False if one == other else "refused"
    assert sorted(answers, key=str) == sorted([True, loser], key=str)
    winner = one if answers[0] is True else other
    assert await _statuses(sessionmaker, [order_id]) == [winner]


async def test_a_payment_racing_the_windows_end_leaves_the_order_paid(sessionmaker) -> None:
    """Paid first: the expiry is refused. Expired first: the payment is a late one (expired → paid).
    Either way the order ends paid; never expired after its payment."""
    for _ in range(5):
        [order_id] = await _orders_in(sessionmaker, [c.AWAITING_PAYMENT])
        at = datetime.now(UTC)
        both_started = asyncio.Barrier(2)

        async def attempt(
            to: str, oid: str = order_id, barrier: asyncio.Barrier = both_started, at: object = at
        ) -> object:
            try:
                async with sessionmaker.begin() as session:
                    await session.execute(select(1))
                    await barrier.wait()
                    return await orders.move(session, oid, to, at)
            except orders.IllegalTransition:
                return "refused"

        paid, expired = await asyncio.gather(attempt(c.PAID), attempt(c.EXPIRED))
        assert (paid, expired) in ((True, "refused"), (True, True))
        assert await _statuses(sessionmaker, [order_id]) == [c.PAID]
