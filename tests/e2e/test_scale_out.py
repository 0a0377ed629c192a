"""Issue 21, section 3: two API processes on one port and two workers (`miaofa up` with UP_APIS=2,
UP_WORKERS=2), on real PostgreSQL and Temporal. A buyer over the rate is refused across both APIs;
a flash sale of 2,000 buyers for 200 keys sells exactly 200, each key once; both APIs then agree
that it is sold out. Buyers answered busy retry as told, with the same Idempotency-Key.

About two minutes on 2 cores (a stack of its own, 2,000 buyers): marked chaos, run with `pytest -m chaos`.
"""

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from miaofa.devstack.procs import free_port
from tests.helpers.chaos_stack import ChaosStack, Order, log

pytestmark = pytest.mark.chaos

SALE_NET = "10.99.0.0/16"  # the flash-sale buyers: exempt from the per-buyer rules, as a load generator is
RATED_IP = "203.0.113.9"  # the buyer the rates apply to
ENV = {
    "MIAOFA_UP_APIS": "2",
    "MIAOFA_UP_WORKERS": "2",
    "MIAOFA_TRUSTED_PROXIES": "127.0.0.1/32",  # the test speaks for many clients through X-Forwarded-For
    "MIAOFA_RISK_EXEMPT_NETWORKS": SALE_NET,
    "MIAOFA_RISK_RATE_PER_EMAIL_PER_MINUTE": "3",
    "MIAOFA_RISK_MAX_OPEN_ORDERS_PER_BUYER_PRODUCT": "0",  # the rate, not this cap, stops the 4th
    "MIAOFA_ORDER_STARTS_PER_PROCESS": "8",
    "MIAOFA_ORDER_STARTS_TOTAL": "12",
}


@pytest.fixture
def two_apis(tmp_path: Path):
    stack = ChaosStack(tmp_path, {**ENV, "MIAOFA_MAIL_CATCHER_PORT": str(free_port())})
    log(f"miaofa up (2 APIs, 2 workers) healthy in {stack.start():.1f} s")
    try:
        yield stack
    finally:
        stack.stop()


async def _pinned(api: str, count: int) -> dict[str, list[httpx.AsyncClient]]:
    """Clients of one connection each, grouped by the API process that connection reached."""
    by_instance: dict[str, list[httpx.AsyncClient]] = {}
    for _ in range(count * 4):
        client = httpx.AsyncClient(
            base_url=api, timeout=60, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
        )
        instance = (await client.get("/healthz")).json()["instance"]
        by_instance.setdefault(instance, []).append(client)
        if len(by_instance) == 2 and all(len(group) >= count // 2 for group in by_instance.values()):
            break
    assert len(by_instance) == 2, f"one API process answered every connection: {list(by_instance)}"
    return by_instance


async def _instance(client: httpx.AsyncClient) -> str:
    return (await client.get("/healthz")).json()["instance"]


async def _opened_per_process(api: str) -> dict[str, float]:
    """Each process's own count of orders opened, read from its /metrics on a fresh connection (a pinned
    one may have idled out and reached the other process since)."""
    opened: dict[str, float] = {}
    for _ in range(40):
        async with httpx.AsyncClient(base_url=api, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
            instance = await _instance(client)
            metrics = (await client.get("/metrics")).text
            if await _instance(client) != instance:
                continue
        opened[instance] = sum(
            float(v) for v in re.findall(r'^miaofa_orders_opened_total\{outcome="created"\} (\S+)$', metrics, re.M)
        )
        if len(opened) == 2:
            break
    return opened


def _buyer(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def test_two_apis_share_the_rates_and_sell_a_flash_sale_exactly(two_apis: ChaosStack) -> None:
    stack = two_apis
    by_instance = await _pinned(stack.api, 20)
    (one, *ones), (other, *others) = by_instance.values()

    # A buyer over the rate, refused by the API process that has seen only one of their attempts.
    sku = stack.create_product(10)
    email = f"fast-{uuid.uuid4().hex[:8]}@example.com"
    body = {"sku": sku, "quantity": 1, "email": email, "gateway": "simulator"}
    answers = []
    for client in (one, one, other, other):
        seen = await _instance(client)
        answers.append(await client.post("/orders", json=body, headers=_buyer(RATED_IP)))
        assert await _instance(client) == seen  # the same process answered the order
    assert [a.status_code for a in answers] == [201, 201, 201, 429], answers[-1].text
    assert answers[-1].json()["error"] == "too_many_requests" and int(answers[-1].headers["Retry-After"]) >= 1

    # The flash sale: 2,000 buyers for 200 keys, spread over both processes.
    sku = stack.create_product(200)
    clients = [one, *ones, other, *others]
    answered: Counter = Counter()
    orders: list[Order] = []
    sold_out_at: list[float] = []
    opened_at: list[float] = []

    async def buyer(index: int) -> None:
        client = clients[index % len(clients)]
        headers = {**_buyer(f"10.99.{index // 250}.{index % 250 + 1}"), "Idempotency-Key": f"sale-{sku}-{index:06d}"}
        body = {"sku": sku, "quantity": 1, "email": f"sale{index}@example.com", "gateway": "simulator"}
        began = time.monotonic()
        for attempt in range(1, 200):
            answer = await client.post("/orders", json=body, headers=headers)
            error = answer.json().get("error", "") if answer.status_code >= 400 else ""
            answered[f"{answer.status_code} {error}".strip()] += 1
            if answer.status_code == 201:
                opened_at.append(time.monotonic())
                made = answer.json()
                orders.append(
                    Order(index, made["order_id"], made["payment"]["payment_id"], body["email"], 1, 0.0, attempt)
                )
                return
            if answer.status_code == 409 and error == "sold_out":
                sold_out_at.append(time.monotonic())
                return
            assert answer.status_code == 503, answer.text  # busy, or a timeout to retry with the same key
            await asyncio.sleep(int(answer.headers.get("Retry-After", "1")) * random.uniform(0.5, 1.5))
        raise AssertionError(f"buyer {index} was never answered ({time.monotonic() - began:.0f} s)")

    began = time.monotonic()
    # Each pinned client carries one request at a time: as many buyers at once as there are clients.
    await asyncio.gather(*(buyer(index) for index in range(2000)))
    log(f"flash sale answered in {time.monotonic() - began:.1f} s: {dict(answered)}")
    assert len(orders) == 200
    early = sum(1 for at in sold_out_at if at < max(opened_at))
    log(f"sold-out answers before the last key was reserved: {early} of {len(sold_out_at)}")

    # Both processes opened orders; both now say sold out, alike.
    opened = await _opened_per_process(stack.api)
    log(f"orders opened per API process: {opened}")
    assert len(opened) == 2 and all(count > 0 for count in opened.values()), opened
    late_body = {"sku": sku, "quantity": 1, "email": "late@example.com", "gateway": "simulator"}
    for client in (one, other):
        late = await client.post("/orders", json=late_body, headers=_buyer("10.99.200.1"))
        assert (late.status_code, late.json()) == (409, {"error": "sold_out", "detail": "this product is sold out"})

    await stack.pay_all(orders)
    await stack.wait_settled(orders)
    report = await stack.check_invariants(sku, orders)  # each key sold once, every paid order delivered once
    assert report["keys"] == {"sold": 200}
    assert report["statuses"] == {"delivered": 200}
    for group in by_instance.values():
        for client in group:
            await client.aclose()
