"""Issue 7, items 1, 2, 4 and 11, replayed over HTTP against a real stack: each attack is refused
with its status and code, and changes nothing — the stock stays with real buyers."""

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import suppress
from functools import partial

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import event, func, select

from api import order_client
from api.ordering import OrderDesk
from api.schemas import OrderCreate
from miaofa import contract as c
from miaofa import steps
from miaofa.db.models import Order, OrderAdmission
from miaofa.devstack.procs import free_port
from miaofa.messaging.mailer import Mailer
from miaofa.settings import Settings
from tests.conftest import stack_settings
from tests.helpers.stack import RISK_OFF, Stack, running_stack
from tests.helpers.waiting import eventually

GUARDS = dict(
    trusted_proxies="127.0.0.1/32",  # the tests speak for many clients through X-Forwarded-For
    risk_rate_per_ip_per_minute=30,
    risk_rate_per_email_per_minute=10,
    risk_max_open_orders_per_email=3,
    risk_max_open_orders_per_ip=5,
    risk_max_open_units_per_ip=12,
    risk_max_open_orders_per_buyer_product=2,
    risk_max_units_per_buyer_per_product=5,
    risk_max_open_units_per_net56=20,
    risk_max_open_units_per_net48=30,
    sse_max_streams_per_ip=2,
    check_payment_interval_seconds=5,
)


@pytest.fixture(scope="module")
async def guarded(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """A stack with the buyer rules on, as a real shop runs (small numbers, to reach them fast)."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=60,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
        **GUARDS,
    ) as stack:
        yield stack


def ip(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def unique_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def email() -> str:
    return f"b-{uuid.uuid4().hex[:10]}@example.com"


async def open_admissions(stack: Stack) -> int:
    async with stack.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(OrderAdmission)) or 0


# ---- item 1: nobody locks the stock for free --------------------------------------------------------


async def test_one_address_cannot_lock_the_stock(guarded: Stack) -> None:
    sku = await guarded.product(20)
    attacker = unique_ip()
    answers = await asyncio.gather(*(guarded.order(sku, email=email(), headers=ip(attacker)) for _ in range(20)))
    codes = Counter((a.status_code, a.json().get("error")) for a in answers)
    assert codes == {(201, None): 5, (403, "too_many_open_orders"): 15}
    refusal = next(a.json() for a in answers if a.status_code == 403)
    assert refusal == {
        "error": "too_many_open_orders",
        "detail": "too many unpaid orders from your network; pay one, or wait until it expires",
    }
    assert await guarded.stock(sku) == {"available": 15, "reserved": 5, "sold": 0, "refunded": 0}
    # Quantity instead of count: 12 units per address.
    sku2 = await guarded.product(30)
    other = unique_ip()
    answers = [await guarded.order(sku2, quantity=4, email=email(), headers=ip(other)) for _ in range(5)]
    assert [a.status_code for a in answers] == [201, 201, 201, 403, 403]
    assert await guarded.stock(sku2) == {"available": 18, "reserved": 12, "sold": 0, "refunded": 0}
    # A real buyer elsewhere still gets the stock.
    real = await guarded.order(sku, email=email(), headers=ip(unique_ip()))
    assert real.status_code == 201, real.text
    assert await guarded.stock(sku) == {"available": 14, "reserved": 6, "sold": 0, "refunded": 0}
    listed = {p["sku"]: p["available"] for p in (await guarded.http.get("/products")).json()}
    assert listed[sku] == 14


async def test_one_email_cannot_lock_the_stock(guarded: Stack) -> None:
    skus = [await guarded.product(10) for _ in range(3)]
    buyer = email()
    answers = await asyncio.gather(*(guarded.order(skus[0], email=buyer, headers=ip(unique_ip())) for _ in range(5)))
    assert Counter(a.status_code for a in answers) == {201: 2, 403: 3}
    assert {a.json()["error"] for a in answers if a.status_code == 403} == {"too_many_open_orders"}
    assert (await guarded.order(skus[1], email=buyer, headers=ip(unique_ip()))).status_code == 201
    third = await guarded.order(skus[2], email=buyer, headers=ip(unique_ip()))
    assert (third.status_code, third.json()["error"]) == (403, "too_many_open_orders")
    assert "3 unpaid orders" in third.json()["detail"]
    # The email's letter case changes nothing: it is one buyer.
    upper = await guarded.order(skus[2], email=buyer.upper(), headers=ip(unique_ip()))
    assert upper.status_code == 403
    assert [await guarded.stock(s) for s in skus] == [
        {"available": 8, "reserved": 2, "sold": 0, "refunded": 0},
        {"available": 9, "reserved": 1, "sold": 0, "refunded": 0},
        {"available": 10, "reserved": 0, "sold": 0, "refunded": 0},
    ]
    # Paying settles an order: it stops counting, and the buyer may order again.
    paid = answers[[a.status_code for a in answers].index(201)].json()
    await guarded.pay(paid)
    await guarded.wait_status(paid, "delivered")
    assert (await guarded.order(skus[2], email=buyer, headers=ip(unique_ip()))).status_code == 201


async def test_an_ipv6_home_counts_by_its_56_and_its_48(guarded: Stack) -> None:
    """Issue 17, N4: a /56 is 256 /64s and a /48 65,536; each is counted as a whole too."""
    sku = await guarded.product(200)  # large: the product's own share stays out of the way

    async def held(address: str, orders: int) -> list[int]:
        return [
            (await guarded.order(sku, quantity=4, email=email(), headers=ip(address))).status_code
            for _ in range(orders)
        ]

    assert await held("2001:db8:0:101::1", 4) == [201, 201, 201, 403]  # 12 units: the /64's cap
    assert await held("2001:db8:0:102::1", 3) == [201, 201, 403]  # the /56 holds 20: its cap
    assert await held("2001:db8:0:1ff::7", 1) == [403]  # another /64 of the same /56
    assert await held("2001:db8:0:201::1", 3) == [201, 201, 403]  # another /56: the /48 holds 28, cap 30
    refused = await guarded.order(sku, quantity=4, email=email(), headers=ip("2001:db8:0:ff01::1"))
    assert (refused.status_code, refused.json()) == (
        403,
        {
            "error": "too_many_open_orders",
            "detail": "too many units held unpaid from your network; pay for them first",
        },
    )
    assert await held("2001:db8:1:101::1", 1) == [201]  # another /48
    assert await guarded.stock(sku) == {"available": 168, "reserved": 32, "sold": 0, "refunded": 0}


async def test_quantity_cap_per_buyer_and_product(guarded: Stack) -> None:
    sku = await guarded.product(20)
    buyer = email()
    too_many = await guarded.order(sku, quantity=6, email=buyer, headers=ip(unique_ip()))
    assert too_many.status_code == 403
    assert too_many.json() == {
        "error": "quantity_limit",
        "detail": "at most 5 units of this product per buyer at a time (0 already held in unpaid orders)",
    }
    assert (await guarded.order(sku, quantity=3, email=buyer, headers=ip(unique_ip()))).status_code == 201
    again = await guarded.order(sku, quantity=3, email=buyer, headers=ip(unique_ip()))
    assert (again.status_code, again.json()["error"]) == (403, "quantity_limit")
    assert (await guarded.order(sku, quantity=2, email=buyer, headers=ip(unique_ip()))).status_code == 201
    assert await guarded.stock(sku) == {"available": 15, "reserved": 5, "sold": 0, "refunded": 0}


async def test_rate_limits_answer_429_with_retry_after(guarded: Stack) -> None:
    attacker = unique_ip()
    # Made-up SKUs: each attempt still counts, before any lookup.
    answers = [await guarded.order("no-such-sku", email=email(), headers=ip(attacker)) for _ in range(31)]
    assert [a.status_code for a in answers] == [404] * 30 + [429]
    assert answers[-1].json()["error"] == "too_many_requests"
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    buyer = email()
    answers = [await guarded.order("no-such-sku", email=buyer, headers=ip(unique_ip())) for _ in range(11)]
    assert [a.status_code for a in answers] == [404] * 10 + [429]
    assert "this email" in answers[-1].json()["detail"]
    assert (await guarded.order("no-such-sku", email=email(), headers=ip(unique_ip()))).status_code == 404


async def test_refusals_do_not_count_against_the_buyer(guarded: Stack) -> None:
    empty = await guarded.product(0)
    buyer, where = email(), ip(unique_ip())
    for _ in range(4):
        sold_out = await guarded.order(empty, email=buyer, headers=where)
        assert (sold_out.status_code, sold_out.json()["error"]) == (409, "sold_out")
    stocked = await guarded.product(3)
    assert (await guarded.order(stocked, email=buyer, headers=where)).status_code == 201


async def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(
    dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    async with running_stack(
        dev_env, sessionmaker, sim_url, **stack_settings(database_url, smtp[0]), risk_max_open_orders_per_ip=2
    ) as stack:
        sku = await stack.product(5)
        answers = [await stack.order(sku, email=email(), headers=ip(unique_ip())) for _ in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 403]  # all from 127.0.0.1, whatever they claim


async def test_an_exempt_network_runs_the_acceptance_load(dev_env, sessionmaker, sim_url, database_url, smtp) -> None:
    """MIAOFA_RISK_EXEMPT_NETWORKS=127.0.0.1/32 and the default rules: 100 concurrent orders from one address."""
    defaults = {name: Settings.model_fields[name].default for name in RISK_OFF}
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(database_url, smtp[0]),
        risk_exempt_networks="127.0.0.1/32",
        **defaults,
    ) as stack:
        assert stack.settings.risk_max_open_orders_per_ip > 0
        sku = await stack.product(30)  # 30 keys, light on two shared cores: the rest hear sold_out, not 403/429
        answers = await asyncio.gather(
            *(stack.order(sku, email=f"fan{i}-{uuid.uuid4().hex[:6]}@example.com") for i in range(100))
        )
        assert Counter((a.status_code, a.json().get("error")) for a in answers) == {
            (201, None): 30,
            (409, "sold_out"): 70,
        }
        assert await stack.stock(sku) == {"available": 0, "reserved": 30, "sold": 0, "refunded": 0}


# ---- item 2: control characters, one recipient, a wait that ends, a claim always released ------------


async def test_a_nul_in_any_field_is_refused_at_the_edge(dev_stack: Stack) -> None:
    sku = await dev_stack.product(2)
    hot = dev_stack.app.state.miaofa.hot
    product = await hot.product(sku)
    before = (hot.available(product.id), dict(hot._claims))
    cases = {
        "email": {"email": "a\u0000@x.io"},
        "sku": {"sku": sku + "\u0000"},
        "coupon_code": {"coupon_code": "MF\u0000X"},
        "gateway": {"gateway": "simulator\u200b"},
    }
    for field, change in cases.items():
        body = {"sku": sku, "quantity": 1, "email": "nul@example.com", "gateway": "simulator", **change}
        answer = await dev_stack.http.post("/orders", json=body)
        assert answer.status_code == 422, field
        assert answer.json() == {"error": "invalid_input", "detail": f"{field}: must not contain control characters"}
        assert "\\u0000" not in answer.text and "\x00" not in answer.text
    header = await dev_stack.http.post(
        "/orders", json={"sku": sku, "email": "nul@example.com"}, headers={"Idempotency-Key": b"key\x85tail-0123456789"}
    )
    assert header.json() == {"error": "invalid_input", "detail": "Idempotency-Key: must not contain control characters"}
    path = await dev_stack.http.get("/orders/abc%00def", headers={"X-Order-Token": "x"})
    assert path.json() == {"error": "invalid_input", "detail": "order_id: must not contain control characters"}
    for other in (
        "me@example.com,evil.com",
        "me@example.com evil@example.com",
        "a@b.co;c@d.co",
        "<me@example.com>",
        "Me <me@example.com>",
    ):
        answer = await dev_stack.http.post("/orders", json={"sku": sku, "email": other})
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_input"), other
        assert answer.json()["detail"].startswith("email: must be one address")
    assert await dev_stack.stock(sku) == {"available": 2, "reserved": 0, "sold": 0, "refunded": 0}
    assert (hot.available(product.id), dict(hot._claims)) == before
    async with dev_stack.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order).where(Order.sku == sku)) == 0
    assert (await dev_stack.order(sku, email="nul@example.com")).status_code == 201


async def test_a_data_error_past_the_edge_ends_the_order_invalid(dev_stack: Stack) -> None:
    """Were a NUL to slip past the API, the database refuses it once and the order ends — no retry loop."""
    sku = await dev_stack.product(1)
    state = dev_stack.app.state.miaofa
    product = await state.hot.product(sku)
    body = OrderCreate.model_construct(sku=sku, quantity=1, email="a\u0000@x.io", gateway="simulator", coupon_code=None)
    order_id = uuid.uuid4().hex[:20]
    order = OrderDesk(state).order_input(product, body, order_id, state.vault.buyer_hash(body.email))
    opening = asyncio.create_task(order_client.open_order(state, order, product.merchant_id))
    try:
        opened = await asyncio.wait_for(opening, timeout=10)
    finally:
        if not opening.done() or opening.exception() is not None:  # still retrying: stop it
            with suppress(Exception):
                await dev_stack.handle({"order_id": order_id}).terminate("test: data error retried")
    assert (opened.outcome, opened.error) == (c.INVALID_ORDER, "invalid_input")
    handle = dev_stack.env.client.get_workflow_handle(c.order_workflow_id(order_id), result_type=c.OrderResult)
    assert await handle.result() == c.OrderResult(order_id, c.INVALID_ORDER, "")
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}


async def test_the_api_wait_ends_and_the_claim_goes_back(dev_env, sessionmaker, sim_url, database_url, smtp) -> None:
    """No worker polls the task queue: the workflow never answers. 503 within the timeout, stock intact."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        start_worker=False,
        **stack_settings(database_url, smtp[0], update_timeout_seconds=1),
    ) as stack:
        sku = await stack.product(1)
        hot = stack.app.state.miaofa.hot
        product = await hot.product(sku)
        started = time.monotonic()
        answer = await stack.order(sku)
        assert time.monotonic() - started < 2.5
        assert answer.status_code == 503
        assert answer.json()["error"] == "order_timeout"
        assert hot._claims == {} and hot.available(product.id) == 1
        listed = {p["sku"]: p["available"] for p in (await stack.http.get("/products")).json()}
        assert listed[sku] == 1
        later = await stack.order(sku, email="later@example.com")
        assert (later.status_code, later.json()["error"]) == (503, "order_timeout")  # not sold_out

        # The client goes away mid-wait (the request task is cancelled): the claim goes back too.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app), base_url="http://shop") as inproc:
            request = asyncio.create_task(inproc.post("/orders", json={"sku": sku, "email": "gone@example.com"}))
            await eventually(lambda: len(hot._claims) == 1, message="the request to claim its key")
            request.cancel()
            with suppress(BaseException):
                await request
        assert hot._claims == {} and hot.available(product.id) == 1
        with suppress(Exception):  # tidy up: nobody will ever run these workflows
            async for info in stack.env.client.list_workflows(f"TaskQueue = '{stack.task_queue}'"):
                await stack.env.client.get_workflow_handle(info.id).terminate("test: no worker")


class Envelopes:
    def __init__(self) -> None:
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


async def test_a_delivery_email_has_exactly_one_recipient() -> None:
    envelopes = Envelopes()
    port = free_port()
    controller = Controller(envelopes, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = Mailer(f"smtp://127.0.0.1:{port}", "Miaofa <shop@miaofa.localhost>")
        await mailer.send("me@example.com", "Your order", "keys")
        with suppress(Exception):  # a relay may refuse the odd address; it must never split it
            await mailer.send("me@example.com,evil@example.net", "Your order", "keys")
        with suppress(Exception):
            await mailer.send("me@example.com, Evil <evil@example.net>", "Your order", "keys")
    finally:
        controller.stop()
    assert envelopes.recipients[0] == ["me@example.com"]
    assert all(len(rcpt) == 1 for rcpt in envelopes.recipients)
    assert not any("evil@example.net" == r for rcpt in envelopes.recipients for r in rcpt)


# ---- item 4: an Idempotency-Key is not a password ---------------------------------------------------


async def test_a_replayed_idempotency_key_gets_no_token(dev_stack: Stack) -> None:
    sku = await dev_stack.product(2)
    key = {"Idempotency-Key": "checkout-7f3a-0001"}  # guessable, as real integrations make them
    victim = await dev_stack.order(sku, email="victim@example.com", headers=key)
    assert victim.status_code == 201 and victim.json()["access_token"]
    order = victim.json()
    replay = await dev_stack.order(sku, email="victim@example.com", headers=key)  # the attacker, or a retry
    assert replay.status_code == 200
    answer = replay.json()
    assert answer["access_token"] is None and answer["replayed"] is True and "keys" not in answer
    assert (answer["order_id"], answer["status"], answer["payment"]) == (
        order["order_id"],
        "awaiting_payment",
        order["payment"],
    )  # enough for the buyer to pay
    assert (await dev_stack.http.get(f"/orders/{order['order_id']}")).status_code == 404
    await dev_stack.pay(order)
    delivered = await dev_stack.wait_status(order, "delivered")
    after = await dev_stack.order(sku, email="victim@example.com", headers=key)
    assert after.status_code == 200 and after.json()["access_token"] is None
    assert after.json()["status"] == "delivered"
    assert not any(k in after.text for k in delivered["keys"])
    changed = await dev_stack.order(sku, quantity=2, email="victim@example.com", headers=key)
    assert (changed.status_code, changed.json()["error"]) == (409, "idempotency_key_reused")
    short = await dev_stack.order(sku, email="victim@example.com", headers={"Idempotency-Key": "order-1"})
    assert (short.status_code, short.json()["error"]) == (422, "invalid_input")  # 16+ characters: not guessable
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 1, "refunded": 0}


# ---- item 11: cheap ways to load the database -----------------------------------------------------


class Statements:
    def __init__(self, stack: Stack) -> None:
        self.engine = stack.app.state.miaofa.engine.sync_engine
        self.seen: list[str] = []

    def _listen(self, *args) -> None:
        self.seen.append(args[2])

    def __enter__(self) -> "Statements":
        event.listen(self.engine, "before_cursor_execute", self._listen)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._listen)


async def test_unknown_skus_and_the_catalog_cost_no_full_refresh(dev_stack: Stack) -> None:
    sku = await dev_stack.product(3)
    hot = dev_stack.app.state.miaofa.hot
    await hot.stop()  # its once-a-second refresh is background work, not these requests'
    try:
        with Statements(dev_stack) as burst:
            answers = await asyncio.gather(*(dev_stack.order("made-up-sku") for _ in range(30)))
        assert {a.status_code for a in answers} == {404}
        assert len(burst.seen) <= 2 and not any("card_keys" in s for s in burst.seen)  # one lookup of that SKU
        with Statements(dev_stack) as again:
            assert (await dev_stack.order("made-up-sku")).status_code == 404
        assert again.seen == []  # remembered as unknown
        with Statements(dev_stack) as listing:
            listed = (await dev_stack.http.get("/products")).json()
        assert listing.seen == []
        assert {"sku": sku, "available": 3}.items() <= next(p for p in listed if p["sku"] == sku).items()
    finally:
        hot.start()


async def test_event_streams_are_capped_per_address_and_end_when_settled(guarded: Stack) -> None:
    sku = await guarded.product(3)
    where = ip(unique_ip())
    orders = [(await guarded.order(sku, email=email(), headers=ip(unique_ip()))).json() for _ in range(2)]

    def events(order, headers):
        return guarded.http.stream(
            "GET", f"/orders/{order['order_id']}/events", headers={"X-Order-Token": order["access_token"], **headers}
        )

    async with events(orders[0], where) as one, events(orders[1], where) as two:
        assert (one.status_code, two.status_code) == (200, 200)
        third = await guarded.http.get(
            f"/orders/{orders[0]['order_id']}/events", headers={"X-Order-Token": orders[0]["access_token"], **where}
        )
        assert (third.status_code, third.json()["error"]) == (429, "too_many_requests")
        assert third.headers["Retry-After"]
        async with events(orders[0], ip(unique_ip())) as elsewhere:
            assert elsewhere.status_code == 200
        # Cancelled is final for the stream: it ends by itself.
        cancel = await guarded.http.post(f"/support/orders/{orders[0]['order_id']}/cancel", headers=guarded.support)
        assert cancel.status_code == 200
        statuses = []

        async def read() -> None:
            async for line in one.aiter_lines():
                if line.startswith("data: "):
                    statuses.append(json.loads(line[6:])["status"])

        await asyncio.wait_for(read(), timeout=10)
        assert statuses == ["awaiting_payment", "cancelled"]

    async def slot_back() -> bool:  # the closed streams give their slots back (once the server sees the disconnect)
        async with events(orders[1], where) as back:
            assert back.status_code == 200, back.status_code
        return True

    await eventually(slot_back, timeout=5, interval=0.1, message="a stream slot given back")


async def _polled(handle) -> bool:
    return any(
        e.activity_task_scheduled_event_attributes.activity_type.name == steps.QUERY_PAYMENT
        for e in (await handle.fetch_history()).events
    )


async def test_check_payment_is_rate_limited_per_order(guarded: Stack) -> None:
    sku = await guarded.product(1)
    order = await guarded.ordered(sku, email=email(), headers=ip(unique_ip()))
    handle = guarded.handle(order)
    await eventually(partial(_polled, handle), message="the workflow's first poll")
    await guarded.settled(order)  # past the first poll's history
    before = len((await handle.fetch_history()).events)
    token = {"X-Order-Token": order["access_token"]}
    answers = await asyncio.gather(
        *(guarded.http.post(f"/orders/{order['order_id']}/check-payment", headers=token) for _ in range(100))
    )
    assert Counter(a.status_code for a in answers) == {200: 1, 429: 99}
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"] == "too_many_requests" and 1 <= int(refused.headers["Retry-After"]) <= 5
    added = len((await handle.fetch_history()).events) - before
    assert added < 40, added  # one check (and the workflow's own polls), not a hundred
