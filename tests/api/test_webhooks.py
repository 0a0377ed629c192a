"""Merchant webhooks: signed events a receiver verifies with the README's check, retried with the same
event id until a 2xx, sent once however many dispatchers race, and bad URLs refused at every door."""

import asyncio
import json
import time

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from miaofa.cli.common import settings_problems
from miaofa.crypto.vault import Vault
from miaofa.db.models import OutboxMessage, Product
from miaofa.messaging import outbox
from miaofa.settings import Settings
from tests.conftest import TEST_VAULT_KEY
from tests.helpers.messaging import (
    LOOPBACK,
    WEBHOOK_SECRET,
    Receiver,
    dispatcher,
    drain,
    emit,
    make_order,
    new_email,
    readme_verify,
    rows,
)
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually
from worker import outbox_dispatcher

pytestmark = pytest.mark.usefixtures("quiet_outbox")


async def test_an_order_sends_signed_events_that_the_readmes_check_accepts(dev_stack: Stack) -> None:
    verify = readme_verify()
    receiver = Receiver()
    email = new_email()
    sku = await dev_stack.product(["WEBHOOK-KEY-SECRET-4242"])
    order = await dev_stack.ordered(sku, email=email)
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    sock = bind()
    async with serve(receiver.app(), sock) as url:
        # Wired as worker.py wires it, from the settings.
        settings = dev_stack.settings.model_copy(
            update={"webhook_url": f"{url}/hook", "webhook_secret": WEBHOOK_SECRET, "webhook_allow_networks": LOOPBACK}
        )
        d = outbox_dispatcher(settings, dev_stack.sessionmaker, dev_stack.vault)
        await drain(d, lambda: len(receiver.for_order(order["order_id"])) == 2)
        await d.aclose()
    hits = receiver.for_order(order["order_id"])
    events = [json.loads(hit.body) for hit in hits]
    assert sorted(event["type"] for event in events) == ["order.delivered", "order.paid"]
    queued = {r.topic: r.event_id for r in await rows(dev_stack.sessionmaker, order["order_id"])}
    for hit, event in zip(hits, events, strict=True):
        assert verify(WEBHOOK_SECRET, hit.headers, hit.body) is True
        assert verify("another-secret-0123456789", hit.headers, hit.body) is False
        assert verify(WEBHOOK_SECRET, hit.headers, hit.body.replace(b'"quantity":1', b'"quantity":9')) is False
        assert hit.headers["miaofa-event-id"] == event["id"] == queued[event["type"]]
        assert abs(int(hit.headers["miaofa-timestamp"]) - time.time()) < 30
        assert hit.headers["content-type"] == "application/json"
        data = event["data"]
        assert (
            data["order_id"],
            data["sku"],
            data["quantity"],
            data["amount_cents"],
            data["currency"],
            data["gateway"],
            data["buyer_hash"],
        ) == (order["order_id"], sku, 1, 990, "CNY", "simulator", Vault(TEST_VAULT_KEY).buyer_hash(email))
        assert email.encode() not in hit.body and b"WEBHOOK-KEY-SECRET-4242" not in hit.body
    stale = dict(hits[0].headers)
    stale["miaofa-timestamp"] = str(int(time.time()) - 301)
    assert verify(WEBHOOK_SECRET, stale, hits[0].body) is False  # an old (replayed) delivery


async def test_a_failing_receiver_gets_the_same_event_until_it_answers_2xx(sessionmaker) -> None:
    verify = readme_verify()
    receiver = Receiver(answers=[500, 503, 404, 200], delay=lambda n: 6.0 if n == 1 else 0.0)  # and one timeout
    order_id = await make_order(sessionmaker, new_email())
    await emit(sessionmaker, order_id, outbox.Event.REFUNDED)
    sock = bind()
    async with serve(receiver.app(), sock) as url:
        d = dispatcher(sessionmaker, webhook_url=f"{url}/hook")
        errors = []

        async def sent() -> bool:
            await d.run_once()
            [row] = [r for r in await rows(sessionmaker, order_id) if r.channel == "webhook"]
            if row.last_error and row.last_error not in errors:
                errors.append(row.last_error)
            return len(receiver.for_order(order_id)) == 4

        await eventually(sent, timeout=30, message="four attempts at the webhook")
        await d.aclose()
    hits = receiver.for_order(order_id)
    assert len({hit.headers["miaofa-event-id"] for hit in hits}) == 1  # one idempotency key, every attempt
    assert all(verify(WEBHOOK_SECRET, hit.headers, hit.body) for hit in hits)
    # The first answer (a 500) came after the timeout; answers are kept as their class only.
    assert errors == ["timeout", "http_5xx", "http_4xx"]
    [row] = [r for r in await rows(sessionmaker, order_id) if r.channel == "webhook"]
    assert (row.status, row.attempts, row.last_error) == ("sent", 4, "")
    assert [hits[i + 1].at - hits[i].at >= 0.15 for i in range(len(hits) - 1)] == [True] * 3  # backed off


async def test_racing_dispatchers_deliver_each_event_once(sessionmaker) -> None:
    # Three dispatchers loop on their own; every third request is slow, so the others come round for
    # more rows while one is still sending (a row sent twice would show as a repeated event id).
    receiver = Receiver(delay=lambda n: 0.8 if n % 3 == 1 else 0.01)
    order_ids = [await make_order(sessionmaker, new_email()) for _ in range(5)]
    for order_id in order_ids:
        for event in outbox.Event:
            await emit(sessionmaker, order_id, event)
    sock = bind()
    async with serve(receiver.app(), sock) as url:
        racers = [dispatcher(sessionmaker, webhook_url=f"{url}/hook", batch=2, poll_seconds=0.01) for _ in range(3)]
        stop = asyncio.Event()
        running = [asyncio.create_task(racer.run(stop)) for racer in racers]

        async def all_sent() -> bool:
            statuses = [
                r.status for order_id in order_ids for r in await rows(sessionmaker, order_id) if r.channel == "webhook"
            ]
            assert statuses == ["sent"] * 20, statuses
            return True

        await eventually(all_sent, timeout=30, message="every webhook row sent")
        stop.set()
        await asyncio.gather(*running)  # a stopped dispatcher has finished its sends: no duplicate is on its way
        for racer in racers:
            await racer.aclose()
    ids = [hit.headers["miaofa-event-id"] for order_id in order_ids for hit in receiver.for_order(order_id)]
    assert len(ids) == len(set(ids)) == 20
    queued = [r for order_id in order_ids for r in await rows(sessionmaker, order_id) if r.channel == "webhook"]
    assert sorted(r.event_id for r in queued) == sorted(ids)


async def test_a_products_own_url_wins_and_no_url_sends_nothing(sessionmaker) -> None:
    own, shared = Receiver(), Receiver()
    sock_own, sock_shared = bind(), bind()
    async with serve(own.app(), sock_own) as own_url, serve(shared.app(), sock_shared) as shared_url:
        mine = await make_order(sessionmaker, new_email(), webhook_url=f"{own_url}/hook")
        other = await make_order(sessionmaker, new_email())
        await emit(sessionmaker, mine, outbox.Event.PAID)
        await emit(sessionmaker, other, outbox.Event.PAID)
        d = dispatcher(sessionmaker, webhook_url=f"{shared_url}/hook")
        await drain(d, lambda: own.for_order(mine) != [] and shared.for_order(other) != [])
        await d.aclose()
        assert (own.for_order(other), shared.for_order(mine)) == ([], [])

        nowhere = await make_order(sessionmaker, new_email())
        await emit(sessionmaker, nowhere, outbox.Event.PAID)
        d = dispatcher(sessionmaker)  # no global URL, and the product has none
        await d.run_once()
        await d.aclose()
    [row] = await rows(sessionmaker, nowhere)
    assert (row.status, row.attempts) == ("skipped", 0)  # marked in bulk, never claimed


async def test_bad_webhook_urls_are_refused_by_the_admin_api_and_change_nothing(
    dev_env, sessionmaker, sim_url, database_url
) -> None:
    from tests.conftest import stack_settings

    async with running_stack(
        dev_env, sessionmaker, sim_url, webhook_secret=WEBHOOK_SECRET, **stack_settings(database_url, "")
    ) as stack:
        sku = "p-wh-" + str(int(time.time() * 1000))
        for bad in ("ftp://merchant.example/hook", "javascript:alert(1)", "https://", "http://a b/c", "", "x" * 501):
            answer = await stack.http.post(
                "/admin/products",
                headers=stack.admin,
                json={"sku": sku, "name": "n", "price_cents": 100, "currency": "CNY", "webhook_url": bad},
            )
            assert (answer.status_code, answer.json()["error"]) == (422, "invalid_input"), bad
            assert answer.json()["detail"].startswith("webhook_url")
        assert (await stack.http.get(f"/admin/products/{sku}/stock", headers=stack.admin)).status_code == 404

        created = await stack.http.post(
            "/admin/products",
            headers=stack.admin,
            json={
                "sku": sku,
                "name": "n",
                "price_cents": 100,
                "currency": "CNY",
                "webhook_url": "https://merchant.example/hook",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["webhook_url"] == "https://merchant.example/hook"
        bad = await stack.http.put(
            f"/admin/products/{sku}/webhook", headers=stack.admin, json={"webhook_url": "file:///etc/passwd"}
        )
        assert (bad.status_code, bad.json()["detail"]) == (422, "webhook_url: must be an http:// or https:// URL")
        assert await _product_url(sessionmaker, sku) == "https://merchant.example/hook"
        missing = await stack.http.put(
            "/admin/products/nosuchsku/webhook",
            headers=stack.admin,
            json={"webhook_url": "https://merchant.example/other"},
        )
        assert missing.status_code == 404
        cleared = await stack.http.put(
            f"/admin/products/{sku}/webhook", headers=stack.admin, json={"webhook_url": None}
        )
        assert (cleared.status_code, cleared.json()["webhook_url"]) == (200, None)
        assert await _product_url(sessionmaker, sku) is None
        unauthorized = await stack.http.put(f"/admin/products/{sku}/webhook", json={"webhook_url": None})
        assert unauthorized.status_code == 401


async def test_a_product_webhook_needs_the_signing_secret(dev_stack: Stack) -> None:
    assert dev_stack.settings.webhook_secret == ""
    sku = "p-nosecret-" + str(int(time.time() * 1000))
    answer = await dev_stack.http.post(
        "/admin/products",
        headers=dev_stack.admin,
        json={
            "sku": sku,
            "name": "n",
            "price_cents": 100,
            "currency": "CNY",
            "webhook_url": "https://merchant.example/h",
        },
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "error": "invalid_input",
        "detail": "webhook_url: set MIAOFA_WEBHOOK_SECRET first; every webhook is signed",
    }
    assert await _product_url(dev_stack.sessionmaker, sku, must_exist=False) is None


async def _product_url(sessionmaker, sku: str, must_exist: bool = True) -> str | None:
    async with sessionmaker() as session:
        product = await session.scalar(select(Product).where(Product.sku == sku))
    assert (product is not None) == must_exist
    return product.webhook_url if product else None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"webhook_url": "ftp://merchant.example/hook", "webhook_secret": WEBHOOK_SECRET},
            "MIAOFA_WEBHOOK_URL must be an http:// or https:// URL",
        ),
        (
            {"webhook_url": "merchant.example/hook", "webhook_secret": WEBHOOK_SECRET},
            "MIAOFA_WEBHOOK_URL must be an http:// or https:// URL",
        ),
        (
            {"webhook_url": "https://merchant.example/hook"},
            "MIAOFA_WEBHOOK_URL is set without MIAOFA_WEBHOOK_SECRET; webhooks must be signed",
        ),
        ({"webhook_secret": "short"}, "MIAOFA_WEBHOOK_SECRET must be at least 16 characters"),
        ({"webhook_secret": "changeme"}, "MIAOFA_WEBHOOK_SECRET is a placeholder; set a real random secret"),
    ],
)
def test_bad_webhook_settings_stop_the_start(values: dict, problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(**values)
    assert settings_problems(raised.value) == [problem]


def test_good_webhook_settings_start() -> None:
    settings = Settings(webhook_url="https://merchant.example/hook", webhook_secret=WEBHOOK_SECRET)
    assert (settings.webhook_url, settings.webhook_secret) == ("https://merchant.example/hook", WEBHOOK_SECRET)


async def test_no_outbox_row_holds_a_buyers_email(sessionmaker) -> None:
    email = new_email()
    order_id = await make_order(sessionmaker, email)
    for event in outbox.Event:
        await emit(sessionmaker, order_id, event)
    async with sessionmaker() as session:
        dumped = [
            str(row)
            for row in (
                await session.execute(select(OutboxMessage.__table__).where(OutboxMessage.order_id == order_id))
            ).all()
        ]
    assert len(dumped) == 6 and not [row for row in dumped if email in row]
