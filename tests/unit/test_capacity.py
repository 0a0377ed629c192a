"""The state API processes share, on a real PostgreSQL: order start slots and rate windows.

Two instances stand for two API processes (each its own holder name); one invariant per test."""

import asyncio
import random

import pytest
from sqlalchemy import text

from miaofa.capacity import SharedSlots
from miaofa.errors import TooManyRequests
from miaofa.risk.shared_rates import SharedRates


async def _free_all(sessionmaker) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("UPDATE order_start_slots SET order_id = NULL, holders = 0, lease_until = '-infinity'")
        )


@pytest.fixture
async def slots(sessionmaker):
    await _free_all(sessionmaker)
    yield
    await _free_all(sessionmaker)


async def test_never_more_starts_in_flight_than_the_bound(sessionmaker, slots) -> None:
    processes = [SharedSlots(sessionmaker, 3, 30), SharedSlots(sessionmaker, 3, 30)]
    await processes[0].ensure()
    holding, most, refused = 0, 0, 0

    async def start(number: int) -> None:
        nonlocal holding, most, refused
        gate = processes[number % 2]
        slot = await gate.claim(f"order-{number}")
        if slot is None:
            refused += 1
            return
        holding += 1
        most = max(most, holding)
        assert await gate.held() <= 3
        await asyncio.sleep(random.uniform(0, 0.02))
        holding -= 1
        await gate.release(slot, f"order-{number}")

    await asyncio.gather(*(start(number) for number in range(60)))
    assert most == 3
    assert refused > 0
    assert await processes[0].held() == 0  # none leaked


async def test_a_crashed_holders_slot_frees_when_its_lease_ends(sessionmaker, slots) -> None:
    crashed, alive = SharedSlots(sessionmaker, 1, 0.5), SharedSlots(sessionmaker, 1, 30)
    await crashed.ensure()
    held = await crashed.claim("order-crashed")  # and never released
    assert held == 0
    assert await alive.claim("order-next") is None  # busy while the lease runs
    await asyncio.sleep(0.6)
    assert await alive.claim("order-next") == 0
    await crashed.release(0, "order-crashed")  # a late release of the old holder frees nothing
    assert await alive.held() == 1
    await alive.release(0, "order-next")
    assert await alive.held() == 0


async def test_a_retried_order_shares_its_slot(sessionmaker, slots) -> None:
    first, second = SharedSlots(sessionmaker, 1, 30), SharedSlots(sessionmaker, 1, 30)
    await first.ensure()
    assert await first.claim("order-a") == 0
    assert await second.claim("order-a") == 0  # the same order on another process: admitted, same place
    assert await second.claim("order-b") is None
    await first.release(0, "order-a")
    assert await first.held() == 1  # the retry still opens
    await second.release(0, "order-a")
    assert await first.held() == 0


async def test_slots_come_back_after_the_table_was_emptied(sessionmaker, slots) -> None:
    gate = SharedSlots(sessionmaker, 2, 30)
    async with sessionmaker.begin() as session:
        await session.execute(text("DELETE FROM order_start_slots"))  # as a PostgreSQL crash leaves it
    assert await gate.claim("order-x") is None  # the busy answer puts them back
    assert await gate.claim("order-x") == 0
    await gate.release(0, "order-x")


async def test_a_rate_counts_across_processes(sessionmaker) -> None:
    one, other = SharedRates(sessionmaker), SharedRates(sessionmaker)
    key = f"rate_email:test-{random.getrandbits(40):x}"
    for rates in (one, other, one):
        await rates.hit([(key, 3, "this email")])
    with pytest.raises(TooManyRequests) as refused:
        await other.hit([(key, 3, "this email")])
    assert refused.value.detail.startswith("too many orders from this email; try again in ")
    assert 1 <= refused.value.retry_after <= 60


async def test_a_refused_attempt_counts_on_no_window(sessionmaker) -> None:
    rates = SharedRates(sessionmaker)
    full, spare = (f"rate_{name}:test-{random.getrandbits(40):x}" for name in ("ip", "email"))
    await rates.hit([(full, 1, "your address")])
    for _ in range(3):
        with pytest.raises(TooManyRequests):
            await rates.hit([(full, 1, "your address"), (spare, 2, "this email")])
    await rates.hit([(spare, 2, "this email")])
    await rates.hit([(spare, 2, "this email")])  # two passes: the refusals above counted nothing
    with pytest.raises(TooManyRequests):
        await rates.hit([(spare, 2, "this email")])


async def test_concurrent_attempts_never_pass_the_limit(sessionmaker) -> None:
    processes = [SharedRates(sessionmaker) for _ in range(2)]
    key = f"rate_ip:test-{random.getrandbits(40):x}"

    async def attempt(number: int) -> bool:
        try:
            await processes[number % 2].hit([(key, 5, "your address")])
            return True
        except TooManyRequests:
            return False

    passed = await asyncio.gather(*(attempt(number) for number in range(30)))
    assert passed.count(True) == 5
