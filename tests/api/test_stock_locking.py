"""Issue 17, N4: stock locking must not grow with the addresses an attacker holds.

The per-address caps let 5 addresses lock 100 keys (20 units each). The product's own cap
(RISK_MAX_UNPAID_SHARE, miaofa/risk/admission.py) does not grow with addresses; honest buyers, each
a newcomer, still buy every key.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from miaofa.settings import Settings
from tests.api.test_abuse import email, ip, unique_ip
from tests.conftest import stack_settings
from tests.helpers.stack import RISK_OFF, Stack, running_stack
from tests.helpers.waiting import eventually


@pytest.fixture(scope="module")
async def shop_defaults(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """Every risk rule at its shipped default, many clients through a trusted proxy, a 15 s window."""
    defaults = {name: Settings.model_fields[name].default for name in RISK_OFF}
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=15,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
        **{**defaults, "trusted_proxies": "127.0.0.1/32"},
    ) as stack:
        yield stack


async def _honest_buyers(stack: Stack, sku: str, count: int) -> Counter:
    """`count` buyers, each with an email and an address of their own, at once; those who get a key pay."""
    answers = await asyncio.gather(*(stack.order(sku, email=email(), headers=ip(unique_ip())) for _ in range(count)))
    opened = [answer.json() for answer in answers if answer.status_code == 201]
    await asyncio.gather(*(stack.pay(order) for order in opened))
    await asyncio.gather(*(stack.wait_status(order, "delivered", timeout=60) for order in opened))
    return Counter((answer.status_code, answer.json().get("error")) for answer in answers)


async def test_five_addresses_cannot_lock_the_stock_and_honest_buyers_buy_it_all(shop_defaults: Stack) -> None:
    """Issue 17, N4: the per-address caps let 5 addresses lock 100 keys (20 units each). The product's
    own cap does not grow with addresses: past half its unsold keys held unpaid, only a buyer and an
    address holding none of it get one unit. Honest buyers are such newcomers: they buy everything."""
    stack = shop_defaults
    sku = await stack.product(100)
    answers = []
    for address in [unique_ip() for _ in range(5)]:
        for quantity in (10, 10, 10, 1, 1):  # a fresh email each time: the per-email caps do not bind
            answer = await stack.order(sku, quantity=quantity, email=email(), headers=ip(address))
            answers.append((answer.status_code, answer.json().get("error")))
    assert (
        answers[:10]
        == [(201, None)] * 2
        + [(403, "too_many_open_orders")] * 3
        + [(201, None)] * 2
        + [(403, "too_many_open_orders")] * 3
    )  # 20 units each: the per-address cap
    assert answers[10:15] == [(201, None)] + [(403, "too_many_open_orders")] * 4  # 50 held: half the stock
    newcomer = [(403, "quantity_limit")] * 3 + [(201, None), (403, "too_many_open_orders")]
    assert answers[15:] == newcomer * 2  # one unit for an address that held none, then nothing
    assert await stack.stock(sku) == {"available": 48, "reserved": 52, "sold": 0, "refunded": 0}
    refused = await stack.order(sku, quantity=2, email=email(), headers=ip(unique_ip()))
    assert refused.json() == {
        "error": "quantity_limit",
        "detail": "most of this product's stock is waiting for payment: one unit per order until it is paid for "
        "or released",
    }

    # Honest buyers, each a newcomer, take every key the attack left.
    assert await _honest_buyers(stack, sku, 60) == {(201, None): 48, (409, "sold_out"): 12}

    # The attack's orders are never paid: at the end of their window the keys come back …
    async def released() -> bool:
        return (await stack.stock(sku))["reserved"] == 0

    await eventually(released, 60, "the attack's unpaid orders to expire", interval=0.5)
    await stack.refresh_stock()
    # … and honest buyers take those too.
    assert await _honest_buyers(stack, sku, 60) == {(201, None): 52, (409, "sold_out"): 8}
    assert await stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 100, "refunded": 0}
