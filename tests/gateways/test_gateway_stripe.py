"""Stripe: the adapter against a local fake Stripe, webhook signatures cross-checked with the stripe SDK,
the saga end to end, and forged or unwanted webhooks sent to the real notify route."""

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe  # the SDK, a test-only dependency: never imported by miaofa
from sqlalchemy import func, select

from miaofa.db.models import NotifyLog, OrderEvent, Payment
from miaofa.gateways.base import GatewayError, GatewayRefused, InvalidNotify, PaymentRequest, Unsupported
from miaofa.gateways.config import StripeSettings
from miaofa.gateways.stripe import StripeGateway
from tests.conftest import stack_settings
from tests.helpers.fakes.stripe import FakeStripe
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack, stages

SECRET_KEY = "sk_test_" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
NOTIFY_URL = "/payments/stripe/notify"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe(SECRET_KEY, WEBHOOK_SECRET)
    sock = bind()
    async with serve(fake.app, sock) as url:
        fake.api_base = url
        yield fake


def _settings(fake: FakeStripe, **changes: Any) -> StripeSettings:
    return StripeSettings(
        **{"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET, "api_base": fake.api_base, **changes}
    )


@pytest.fixture
async def gateway(fake: FakeStripe) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(_settings(fake))
    yield gateway
    await gateway.aclose()


def _request(amount_cents: int = 1980, window: timedelta = timedelta(minutes=15)) -> PaymentRequest:
    return PaymentRequest(
        order_id=secrets.token_hex(10),
        amount_cents=amount_cents,
        currency="USD",
        subject="Gift card ×2",
        notify_url="http://shop.invalid/payments/stripe/notify",
        expires_at=datetime.now(UTC) + window,
        return_url="https://shop.invalid/o?token=t",
    )


# ---- the API ----------------------------------------------------------------------------------


async def test_create_is_one_idempotent_session_for_the_total(fake: FakeStripe, gateway: StripeGateway) -> None:
    request = _request()
    created = await gateway.create_payment(request)
    again = await gateway.create_payment(request)  # a retried activity: Stripe replays the same session
    assert again == created and created.payment_id.startswith("cs_test_")
    assert created.pay_url == f"https://checkout.stripe.com/c/pay/{created.payment_id}"
    session = fake.sessions[created.payment_id]
    assert [s for s in fake.sessions.values() if s["client_reference_id"] == request.order_id] == [session]
    assert (session["amount_total"], session["currency"], session["metadata"]) == (
        1980,
        "usd",
        {"order_id": request.order_id},
    )
    assert session["success_url"] == session["cancel_url"] == request.return_url
    # Our 15-minute window is shorter than Stripe's 30-minute minimum: the session outlives it by 31 min.
    assert session["expires_at"] == int((request.expires_at + timedelta(minutes=31)).timestamp())
    assert fake.calls[-2:] == [("POST", "/v1/checkout/sessions", request.order_id)] * 2
    state = await gateway.query(created.payment_id, request.order_id)
    assert (state.status, state.amount_cents, state.currency, state.order_id) == (
        "pending",
        1980,
        "USD",
        request.order_id,
    )


async def test_paid_close_and_partial_refunds(fake: FakeStripe, gateway: StripeGateway) -> None:
    request = _request()
    payment_id = (await gateway.create_payment(request)).payment_id
    await fake.pay(payment_id, deliver=False)
    calls = len(fake.calls)
    paid = await gateway.query(payment_id, request.order_id)
    assert (paid.status, paid.amount_cents, paid.currency) == ("paid", 1980, "USD")
    assert fake.calls[calls:] == [("GET", f"/v1/checkout/sessions/{payment_id}", None)]  # one request
    # The window's close lost the race: Stripe refuses to expire a complete session, so it is the paid state.
    assert (await gateway.close(payment_id, request.order_id)).status == "paid"
    refunded = await gateway.refund(payment_id, request.order_id, 500, "refund-part-1")
    assert (refunded.status, refunded.amount_cents, refunded.currency) == ("refunded", 500, "USD")
    assert await gateway.refund(payment_id, request.order_id, 500, "refund-part-1") == refunded  # replayed key
    await gateway.refund(payment_id, request.order_id, 1480, "refund-part-2")
    charge = fake.charge_of(payment_id)
    assert (charge["amount_refunded"], charge["refunded"]) == (1980, True)
    assert [call for call in fake.calls if call[1] == "/v1/refunds"] == [
        ("POST", "/v1/refunds", "refund-part-1"),
        ("POST", "/v1/refunds", "refund-part-1"),
        ("POST", "/v1/refunds", "refund-part-2"),
    ]
    with pytest.raises(GatewayRefused, match="invalid_request_error amount_too_large"):
        await gateway.refund(payment_id, request.order_id, 1, "refund-part-3")


async def test_close_expires_an_open_session(fake: FakeStripe, gateway: StripeGateway) -> None:
    request = _request()
    payment_id = (await gateway.create_payment(request)).payment_id
    closed = await gateway.close(payment_id, request.order_id)
    assert (closed.status, fake.sessions[payment_id]["status"]) == ("closed", "expired")
    assert (await gateway.close(payment_id, request.order_id)).status == "closed"  # a retried close
    with pytest.raises(GatewayRefused, match="no paid payment"):
        await gateway.refund(payment_id, request.order_id, 1980, "refund-never")


async def test_errors_are_retried_or_refused_and_never_name_the_key(fake: FakeStripe, gateway: StripeGateway) -> None:
    request = _request()
    payment_id = (await gateway.create_payment(request)).payment_id
    for status, kind, error in [
        (500, "api_error", GatewayError),
        (429, "rate_limit_error", GatewayError),
        (409, "idempotency_error", GatewayError),
        (400, "invalid_request_error", GatewayRefused),
    ]:
        fake.fail_next.append((status, kind))
        with pytest.raises(GatewayError) as raised:
            await gateway.query(payment_id, request.order_id)
        assert (type(raised.value), str(raised.value)) == (error, f"stripe query: HTTP {status} {kind}")
    wrong_key = StripeGateway(_settings(fake, secret_key="sk_test_" + "x" * 24))
    with pytest.raises(GatewayError) as raised:
        await wrong_key.query(payment_id, request.order_id)
    assert (type(raised.value), str(raised.value)) == (GatewayError, "stripe query: HTTP 401 invalid_request_error")
    await wrong_key.aclose()
    unreachable = StripeGateway(_settings(fake, api_base="http://127.0.0.1:9"))
    with pytest.raises(GatewayError) as raised:
        await unreachable.create_payment(request)
    assert str(raised.value) == "stripe create: transport error (ConnectError)"
    await unreachable.aclose()
    missing = await gateway.query("cs_test_nosuchsession", request.order_id)
    assert (missing.status, missing.amount_cents) == ("unknown", 0)
    with pytest.raises(GatewayError, match="another payment"):
        await gateway.query(payment_id, "someotherorder")
    with pytest.raises(Unsupported):
        await gateway.query(payment_id, request.order_id, "backup")
    assert (gateway.query_channels, gateway.has_statement, gateway.partial_refund) == (("primary",), True, True)


# ---- webhook signatures, cross-checked with the stripe SDK ------------------------------------


def _session_event(fake: FakeStripe, order_id: str = "0123456789abcdef0123", **session: Any) -> dict[str, Any]:
    obj = {
        "id": "cs_test_a1",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 990,
        "currency": "usd",
        "client_reference_id": order_id,
        "metadata": {"order_id": order_id},
        "payment_intent": "pi_test_1",
        **session,
    }
    return fake.event("checkout.session.completed", obj)


async def test_our_fake_signs_as_stripe_does(fake: FakeStripe) -> None:
    event = _session_event(fake)
    body = fake.body(event)
    parsed = stripe.Webhook.construct_event(body, fake.sign(body), WEBHOOK_SECRET)
    assert (parsed.id, parsed.type, parsed.data.object.amount_total) == (event["id"], event["type"], 990)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, fake.sign(body, secret="whsec_other"), WEBHOOK_SECRET)


async def test_a_header_signed_by_the_sdk_verifies(fake: FakeStripe, gateway: StripeGateway) -> None:
    event = _session_event(fake)
    body = fake.body(event)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), WEBHOOK_SECRET, int(time.time()))
    notice = await gateway.verify_notify({"Stripe-Signature": header}, body, {})
    assert (
        notice.payment_id,
        notice.order_id,
        notice.status,
        notice.amount_cents,
        notice.currency,
        notice.merchant_id,
        notice.event_id,
    ) == ("cs_test_a1", "0123456789abcdef0123", "paid", 990, "USD", None, event["id"])
    assert notice.paid_at == datetime.fromtimestamp(event["created"], UTC)
    # While the secret is rolled Stripe signs with both; an unknown scheme (v0) is ignored.
    t, v1 = header.split(",")
    old = fake.sign(body, int(t[2:]), secret="whsec_old").split(",")[1]
    rolled = f"{t},{old},{v1},v0={'0' * 64},x=1"
    assert (await gateway.verify_notify({"stripe-signature": rolled}, body, {})).status == "paid"


def _mutated(**session: Any) -> Callable[[FakeStripe], dict[str, Any]]:
    return lambda fake: _session_event(fake, **session)


MALFORMED = {
    "NUL in order id": _mutated(client_reference_id="ab\x00cd", metadata={"order_id": "ab\x00cd"}),
    "non-ASCII order id": _mutated(client_reference_id="订单", metadata={"order_id": "订单"}),
    "huge order id": _mutated(client_reference_id="a" * 5000, metadata={}),
    "huge amount": _mutated(amount_total=10**40),
    "negative amount": _mutated(amount_total=-990),
    "amount true": _mutated(amount_total=True),
    "amount null": _mutated(amount_total=None),
    "currency upper case": _mutated(currency="USD"),
    "currency object": _mutated(currency={"code": "usd"}),
    "session id with a slash": _mutated(id="cs_test_a/../b"),
    "no order id": _mutated(client_reference_id=None, metadata={}),
    "references disagree": _mutated(metadata={"order_id": "another"}),
    "not a session": _mutated(object="charge"),
    "created as string": lambda fake: {**_session_event(fake), "created": "1700000000"},
    "event id non-ASCII": lambda fake: {**_session_event(fake), "id": "evt_é"},
    "livemode missing": lambda fake: {k: v for k, v in _session_event(fake).items() if k != "livemode"},
    "a list": lambda fake: [_session_event(fake)],
}


@pytest.mark.parametrize("build", MALFORMED.values(), ids=MALFORMED.keys())
async def test_signed_but_malformed_events_are_invalid(fake: FakeStripe, gateway: StripeGateway, build) -> None:
    body = fake.body(build(fake))
    with pytest.raises(InvalidNotify):
        await gateway.verify_notify({"Stripe-Signature": fake.sign(body)}, body, {})


async def test_undecodable_bodies_are_invalid(fake: FakeStripe, gateway: StripeGateway) -> None:
    for body in [b"\xff\xfe{}", b'{"object": "event", "amount": NaN}', b"", b"[" * 10000]:
        with pytest.raises(InvalidNotify):
            await gateway.verify_notify({"Stripe-Signature": fake.sign(body)}, body, {})


# ---- the saga, over HTTP: API + worker + Temporal + PostgreSQL, the fake as Stripe --------------


@pytest.fixture(scope="module")
async def shop(dev_env, sessionmaker, sim_url, database_url, smtp, fake: FakeStripe) -> AsyncIterator[Stack]:
    # A long window (forged webhooks must find their order still open), short grace and polls.
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=600,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
            rejected_notify_log_per_second=1000,
        ),
        stripe=_settings(fake),
    ) as stack:
        fake.webhook_url = str(stack.http.base_url).rstrip("/") + NOTIFY_URL
        yield stack


async def _notifies(shop: Stack, order_id: str) -> list[tuple[str, str]]:
    async with shop.sessionmaker() as session:
        rows = await session.scalars(select(NotifyLog).where(NotifyLog.order_id == order_id).order_by(NotifyLog.id))
        return [(row.outcome, row.detail) for row in rows]


async def test_a_paid_session_is_delivered_by_its_webhook(shop: Stack, fake: FakeStripe) -> None:
    sku = await shop.product(1, currency="USD")
    order = await shop.ordered(sku, gateway="stripe")
    session = fake.sessions[order["payment"]["payment_id"]]
    assert (session["client_reference_id"], session["amount_total"], session["currency"]) == (
        order["order_id"],
        990,
        "usd",
    )
    assert order["payment"]["pay_url"] == session["url"]
    await fake.pay(session["id"])
    assert fake.deliveries[-1] == ("checkout.session.completed", 200)
    view = await shop.wait_status(order, "delivered")
    assert len(view["keys"]) == 1 and "notified" in stages(view)
    assert await _notifies(shop, order["order_id"]) == [("accepted", "paid")]


async def test_a_lost_webhook_is_found_by_the_query(shop: Stack, fake: FakeStripe) -> None:
    sku = await shop.product(1, currency="USD")
    order = await shop.ordered(sku, gateway="stripe")
    await fake.pay(order["payment"]["payment_id"], deliver=False)
    view = await shop.wait_status(order, "delivered")
    assert "polled" in stages(view) and "notified" not in stages(view)
    assert len(view["keys"]) == 1 and await _notifies(shop, order["order_id"]) == []


async def test_duplicated_and_reordered_webhooks_deliver_once(shop: Stack, fake: FakeStripe) -> None:
    sku = await shop.product(2, currency="USD")
    order = await shop.ordered(sku, gateway="stripe")
    session_id = order["payment"]["payment_id"]
    completed = await fake.pay(session_id, duplicate=True)
    await fake.deliver(
        fake.event(
            "checkout.session.expired", {**fake.sessions[session_id], "status": "expired", "payment_status": "unpaid"}
        )
    )
    await fake.deliver(completed)  # Stripe's retry of the same event, freshly signed
    assert fake.deliveries[-4:] == [("checkout.session.completed", 200)] * 2 + [
        ("checkout.session.expired", 200),
        ("checkout.session.completed", 200),
    ]
    view = await shop.wait_status(order, "delivered")
    assert len(view["keys"]) == 1 and stages(view).count("delivered") == 1
    outcomes = await _notifies(shop, order["order_id"])
    assert outcomes[0] == ("accepted", "paid") and outcomes[2] == ("ignored", "closed")
    assert {outcomes[1], outcomes[3]} <= {("accepted", "paid"), ("duplicate", "paid")}
    assert await shop.stock(sku) == {"available": 1, "reserved": 0, "sold": 1, "refunded": 0}


async def test_support_refund_and_cancel_reach_stripe(shop: Stack, fake: FakeStripe) -> None:
    sku = await shop.product(2, currency="USD")
    paid, unpaid = [await shop.ordered(sku, gateway="stripe", email=f"r{i}@example.com") for i in range(2)]
    await fake.pay(paid["payment"]["payment_id"])
    await shop.wait_status(paid, "delivered")
    answer = await shop.http.post(f"/support/orders/{paid['order_id']}/refund", headers=shop.support)
    assert answer.status_code == 200, answer.text
    intent = fake.sessions[paid["payment"]["payment_id"]]["payment_intent"]
    refunds = [r for r in fake.refunds.values() if r["payment_intent"] == intent]
    assert [(r["amount"], r["status"]) for r in refunds] == [(990, "succeeded")]
    assert ("POST", "/v1/refunds", f"refund-{paid['order_id']}") in fake.calls
    answer = await shop.http.post(f"/support/orders/{unpaid['order_id']}/cancel", headers=shop.support)
    assert answer.status_code == 200, answer.text
    assert fake.sessions[unpaid["payment"]["payment_id"]]["status"] == "expired"


# ---- attacks on the real notify route -----------------------------------------------------------


@dataclass
class Target:
    sku: str
    open: dict[str, Any]  # awaiting payment
    other: dict[str, Any]  # awaiting payment too
    delivered: dict[str, Any]  # paid by webhook and delivered
    completed: dict[str, Any]  # the delivered order's checkout.session.completed event


@pytest.fixture(scope="module")
async def target(shop: Stack, fake: FakeStripe) -> Target:
    sku = await shop.product(3, currency="USD")
    orders = [await shop.ordered(sku, gateway="stripe", email=f"t{i}@example.com") for i in range(3)]
    completed = await fake.pay(orders[2]["payment"]["payment_id"])
    await shop.wait_status(orders[2], "delivered")
    return Target(sku, *orders, completed)


Signed = tuple[bytes, dict[str, str]]


def _signed(fake: FakeStripe, event: Any, **sign: Any) -> Signed:
    body = fake.body(event)
    return body, {"Stripe-Signature": fake.sign(body, **sign), "Content-Type": "application/json"}


def _forged(
    fake: FakeStripe, order: dict[str, Any], kind: str = "checkout.session.completed", **changes: Any
) -> dict[str, Any]:
    """An event about the order's real session that Stripe never sent."""
    session = {
        **fake.sessions[order["payment"]["payment_id"]],
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": "pi_test_forged",
        **changes,
    }
    return fake.event(kind, session)


def _replayed_onto_other(fake: FakeStripe, t: Target) -> Signed:
    body, headers = _signed(fake, _forged(fake, t.open))
    for a, b in [
        (t.open["order_id"], t.other["order_id"]),
        (t.open["payment"]["payment_id"], t.other["payment"]["payment_id"]),
    ]:
        body = body.replace(a.encode(), b.encode())
    return body, headers


def _delivered_session(fake: FakeStripe, t: Target, **changes: Any) -> dict[str, Any]:
    return {**fake.sessions[t.delivered["payment"]["payment_id"]], **changes}


REJECTED = (400, "rejected")
NOW = lambda: int(time.time())  # noqa: E731
# name: (the webhook, expected answer and notify-log outcome, its detail)
ATTACKS: dict[str, tuple[Callable[[FakeStripe, Target], Signed], tuple[int, str], str]] = {
    "bad signature": (
        lambda f, t: (f.body(_forged(f, t.open)), {"Stripe-Signature": f"t={NOW()},v1={'ab' * 32}"}),
        REJECTED,
        "bad signature",
    ),
    "signed with another secret": (
        lambda f, t: _signed(f, _forged(f, t.open), secret="whsec_" + "0" * 32),
        REJECTED,
        "bad signature",
    ),
    "signed with an empty secret": (lambda f, t: _signed(f, _forged(f, t.open), secret=""), REJECTED, "bad signature"),
    "no Stripe-Signature": (lambda f, t: (f.body(_forged(f, t.open)), {}), REJECTED, "missing Stripe-Signature"),
    "only a v0 signature": (
        lambda f, t: (f.body(_forged(f, t.open)), {"Stripe-Signature": f"t={NOW()},v0={'0' * 64}"}),
        REJECTED,
        "no v1 signature",
    ),
    "stale t": (lambda f, t: _signed(f, _forged(f, t.open), timestamp=NOW() - 400), REJECTED, "stale timestamp"),
    "future t": (
        lambda f, t: _signed(f, _forged(f, t.open), timestamp=NOW() + 400),
        REJECTED,
        "timestamp in the future",
    ),
    "replay onto another order": (_replayed_onto_other, REJECTED, "bad signature"),
    "amount as string": (lambda f, t: _signed(f, _forged(f, t.open, amount_total="990")), REJECTED, "bad amount"),
    "amount as float": (lambda f, t: _signed(f, _forged(f, t.open, amount_total=990.0)), REJECTED, "bad amount"),
    "amount as float string": (
        lambda f, t: _signed(f, _forged(f, t.open, amount_total="9.90")),
        REJECTED,
        "bad amount",
    ),
    "amount as array": (lambda f, t: _signed(f, _forged(f, t.open, amount_total=[990])), REJECTED, "bad amount"),
    "livemode mismatch": (
        lambda f, t: _signed(f, {**_forged(f, t.open), "livemode": True}),
        REJECTED,
        "livemode does not match the key",
    ),
    "NUL in order id": (
        lambda f, t: _signed(f, _forged(f, t.open, client_reference_id="a\x00b")),
        REJECTED,
        "bad order id",
    ),
    "non-ASCII order id": (
        lambda f, t: _signed(f, _forged(f, t.open, client_reference_id="订单", metadata={"order_id": "订单"})),
        REJECTED,
        "bad order id",
    ),
    "huge amount_total": (lambda f, t: _signed(f, _forged(f, t.open, amount_total=10**40)), REJECTED, "bad amount"),
    "metadata names another order": (
        lambda f, t: _signed(f, _forged(f, t.open, metadata={"order_id": t.other["order_id"]})),
        REJECTED,
        "client_reference_id and metadata disagree",
    ),
    # Signed by Stripe (or by someone holding the secret) but not this order's payment: acknowledged,
    # and the money, if any, goes to a review that asks Stripe (the session is unpaid: nothing to do).
    "wrong amount_total": (lambda f, t: _signed(f, _forged(f, t.open, amount_total=1)), (200, "stray"), "wrong_amount"),
    "wrong currency": (lambda f, t: _signed(f, _forged(f, t.open, currency="eur")), (200, "stray"), "wrong_amount"),
    "unknown order": (
        lambda f, t: _signed(
            f,
            _forged(
                f, t.open, client_reference_id="nosuchorder000000000", metadata={"order_id": "nosuchorder000000000"}
            ),
        ),
        (200, "stray"),
        "unknown_order",
    ),
    "completed but unpaid": (
        lambda f, t: _signed(f, _forged(f, t.open, payment_status="unpaid")),
        (200, "ignored"),
        "pending",
    ),
    "expired before payment": (
        lambda f, t: _signed(
            f, _forged(f, t.open, "checkout.session.expired", status="expired", payment_status="unpaid")
        ),
        (200, "ignored"),
        "closed",
    ),
    "async payment failed": (
        lambda f, t: _signed(f, _forged(f, t.open, "checkout.session.async_payment_failed", payment_status="unpaid")),
        (200, "ignored"),
        "closed",
    ),
    "unknown event type": (
        lambda f, t: _signed(f, f.event("customer.created", {"id": "cus_test_1", "object": "customer"})),
        (200, "ignored"),
        "unknown",
    ),
    # After delivery: duplicates and reordering deliver nothing more, a refund event changes nothing.
    "duplicated event id": (lambda f, t: _signed(f, t.completed), (200, "duplicate"), "paid"),
    "async succeeded after completed": (
        lambda f, t: _signed(f, f.event("checkout.session.async_payment_succeeded", _delivered_session(f, t))),
        (200, "duplicate"),
        "paid",
    ),
    "expired after completed": (
        lambda f, t: _signed(
            f, f.event("checkout.session.expired", _delivered_session(f, t, status="expired", payment_status="unpaid"))
        ),
        (200, "ignored"),
        "closed",
    ),
    "charge.refunded after delivery": (
        lambda f, t: _signed(
            f,
            f.event(
                "charge.refunded",
                {**f.charge_of(t.delivered["payment"]["payment_id"]), "amount_refunded": 990, "refunded": True},
            ),
        ),
        (200, "ignored"),
        "refunded",
    ),
}


@pytest.mark.parametrize("name", ATTACKS.keys(), ids=ATTACKS.keys())
async def test_attack_changes_nothing(shop: Stack, fake: FakeStripe, target: Target, name: str) -> None:
    build, (status, outcome), detail = ATTACKS[name]
    body, headers = build(fake, target)
    async with shop.sessionmaker() as session:
        last = await session.scalar(select(func.coalesce(func.max(NotifyLog.id), 0)))
    answer = await shop.http.post(NOTIFY_URL, content=body, headers=headers)
    assert (answer.status_code, answer.json()) == (status, {"received": status == 200})
    async with shop.sessionmaker() as session:
        logged = list(await session.scalars(select(NotifyLog).where(NotifyLog.id > last)))
        payments = dict(
            (
                await session.execute(
                    select(Payment.order_id, Payment.status).where(
                        Payment.order_id.in_(
                            [target.open["order_id"], target.other["order_id"], target.delivered["order_id"]]
                        )
                    )
                )
            ).all()
        )
        delivered = await session.scalar(
            select(func.count()).where(
                OrderEvent.order_id == target.delivered["order_id"], OrderEvent.stage == "delivered"
            )
        )
    assert [(row.gateway, row.outcome, row.detail) for row in logged] == [("stripe", outcome, detail)]
    if name == "charge.refunded after delivery":  # logged against its order, via the charge's metadata
        assert logged[0].order_id == target.delivered["order_id"]
    if outcome == "stray":
        review = shop.env.client.get_workflow_handle(f"stray-stripe-{target.open['payment']['payment_id']}")
        assert await review.result() == "nothing"
    assert payments == {
        target.open["order_id"]: "pending",
        target.other["order_id"]: "pending",
        target.delivered["order_id"]: "paid",
    }
    for order in (target.open, target.other):
        view = await shop.view(order)
        assert view["status"] == "awaiting_payment" and "paid" not in stages(view)
    view = await shop.view(target.delivered)
    assert (view["status"], len(view["keys"]), delivered) == ("delivered", 1, 1)
    assert await shop.stock(target.sku) == {"available": 0, "reserved": 2, "sold": 1, "refunded": 0}
