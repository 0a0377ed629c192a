"""Stripe: the adapter against a local fake Stripe, webhook signatures cross-checked with the stripe SDK,
the saga end to end, and forged or unwanted webhooks sent to the real notify route."""

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import stripe  # the SDK, a test-only dependency: never imported by miaofa
from sqlalchemy import func, select

from miaofa.db.models import NotifyLog, OrderEvent, Payment
from miaofa.gateways.base import GatewayError, GatewayRefused, InvalidNotify, PaymentRequest, Unsupported
from miaofa.gateways.config import StripeSettings
from miaofa.gateways.stripe import StripeGateway
from tests.conftest import stack_settings
from tests.fakes.stripe import FakeStripe
from tests.servers import bind, serve
from tests.stack import Stack, running_stack

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
    return StripeSettings(**{"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET, "api_base": fake.api_base,
                             **changes})


@pytest.fixture
async def gateway(fake: FakeStripe) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(_settings(fake))
    yield gateway
    await gateway.aclose()


def _request(amount_cents: int = 1980, window: timedelta = timedelta(minutes=15)) -> PaymentRequest:
    return PaymentRequest(order_id=secrets.token_hex(10), amount_cents=amount_cents, currency="USD",
                          subject="Gift card ×2", notify_url="http://shop.invalid/payments/stripe/notify",
                          expires_at=datetime.now(timezone.utc) + window, return_url="https://shop.invalid/o?token=t")


# ---- the API ----------------------------------------------------------------------------------


async def test_create_is_one_idempotent_session_for_the_total(fake: FakeStripe, gateway: StripeGateway) -> None:
    request = _request()
    created = await gateway.create_payment(request)
    again = await gateway.create_payment(request)  # a retried activity: Stripe replays the same session
    assert again == created and created.payment_id.startswith("cs_test_")
    assert created.pay_url == f"https://checkout.stripe.com/c/pay/{created.payment_id}"
    session = fake.sessions[created.payment_id]
    assert [s for s in fake.sessions.values() if s["client_reference_id"] == request.order_id] == [session]
    assert (session["amount_total"], session["currency"], session["metadata"]) == (1980, "usd",
                                                                                   {"order_id": request.order_id})
    assert session["success_url"] == session["cancel_url"] == request.return_url
    # Our 15-minute window is shorter than Stripe's 30-minute minimum: the session outlives it by 31 min.
    assert session["expires_at"] == int((request.expires_at + timedelta(minutes=31)).timestamp())
    assert fake.calls[-2:] == [("POST", "/v1/checkout/sessions", request.order_id)] * 2
    state = await gateway.query(created.payment_id, request.order_id)
    assert (state.status, state.amount_cents, state.currency, state.order_id) == ("pending", 1980, "USD",
                                                                                  request.order_id)


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
        ("POST", "/v1/refunds", "refund-part-1"), ("POST", "/v1/refunds", "refund-part-1"),
        ("POST", "/v1/refunds", "refund-part-2")]
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


async def test_errors_are_retried_or_refused_and_never_name_the_key(fake: FakeStripe,
                                                                    gateway: StripeGateway) -> None:
    request = _request()
    payment_id = (await gateway.create_payment(request)).payment_id
    for status, kind, error in [(500, "api_error", GatewayError), (429, "rate_limit_error", GatewayError),
                                (409, "idempotency_error", GatewayError),
                                (400, "invalid_request_error", GatewayRefused)]:
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
    with pytest.raises(Unsupported):
        await gateway.statement(datetime.now(timezone.utc), datetime.now(timezone.utc))
    assert (gateway.query_channels, gateway.has_statement, gateway.partial_refund) == (("primary",), False, True)


# ---- webhook signatures, cross-checked with the stripe SDK ------------------------------------


def _session_event(fake: FakeStripe, order_id: str = "0123456789abcdef0123", **session: Any) -> dict[str, Any]:
    obj = {"id": "cs_test_a1", "object": "checkout.session", "status": "complete", "payment_status": "paid",
           "amount_total": 990, "currency": "usd", "client_reference_id": order_id,
           "metadata": {"order_id": order_id}, "payment_intent": "pi_test_1", **session}
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
    assert (notice.payment_id, notice.order_id, notice.status, notice.amount_cents, notice.currency,
            notice.merchant_id, notice.event_id) == ("cs_test_a1", "0123456789abcdef0123", "paid", 990, "USD",
                                                     None, event["id"])
    assert notice.paid_at == datetime.fromtimestamp(event["created"], timezone.utc)
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
