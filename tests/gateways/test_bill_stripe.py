"""Stripe's balance transactions: the adapter's statement against the fake listing them by time, paged
(limit, starting_after, has_more, created[gte]/[lt]), tied to our Checkout Sessions; and the saga
case: a webhook lost, the order closed, the buyer paid; the next reconciliation refunds it."""

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from miaofa import contract as c
from miaofa.gateways import stripe_bill
from miaofa.gateways.base import PaymentRequest, PaymentState
from miaofa.gateways.config import StripeSettings
from miaofa.gateways.stripe import StripeGateway
from tests.conftest import stack_settings
from tests.helpers.fakes.bill_servers import StripeBills
from tests.helpers.fakes.stripe import FakeStripe
from tests.helpers.servers import bind, serve
from tests.helpers.stack import running_stack, stages

SECRET_KEY = "sk_test_" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeStripe, StripeBills]]:
    fake = FakeStripe(SECRET_KEY, WEBHOOK_SECRET)
    bills = StripeBills(fake)
    async with serve(fake.app, bind()) as url:
        fake.api_base = url
        yield fake, bills


def settings(fake: FakeStripe) -> StripeSettings:
    return StripeSettings(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET, api_base=fake.api_base)


async def paid_session(fake: FakeStripe, gateway: StripeGateway, amount: int) -> tuple[str, str]:
    order_id = secrets.token_hex(10)
    request = PaymentRequest(
        order_id, amount, "USD", "Gift card", "http://shop.invalid/n", datetime.now(UTC) + timedelta(minutes=15)
    )
    created = await gateway.create_payment(request)
    await fake.pay(created.payment_id, deliver=False)
    return created.payment_id, order_id


async def test_statement_pages_balance_transactions_and_ties_them_to_our_sessions(fake, monkeypatch) -> None:
    fake, bills = fake
    monkeypatch.setattr(stripe_bill, "PAGE", 2)  # three payments and a refund take several pages
    gateway = StripeGateway(settings(fake))
    try:
        start = datetime.now(UTC) - timedelta(seconds=5)
        first = await paid_session(fake, gateway, 1980)
        second = await paid_session(fake, gateway, 500)
        third = await paid_session(fake, gateway, 700)
        refund = await gateway.refund(second[0], second[1], 200, "refund-part")
        assert refund.status == "refunded"
        # A charge of another integration on the same account: no session of ours, left out.
        fake.charges["ch_other"] = {**fake.charge_of(first[0]), "id": "ch_other", "payment_intent": "pi_other"}
        end = datetime.now(UTC) + timedelta(seconds=5)
        found = await gateway.statement(start, end)
        at = {cs: datetime.fromtimestamp(fake.charge_of(cs)["created"], UTC) for cs, _ in (first, second, third)}
        assert sorted(found, key=lambda s: (s.order_id, s.status)) == sorted(
            [
                PaymentState(first[0], first[1], "paid", 1980, "USD", at[first[0]]),
                PaymentState(second[0], second[1], "paid", 500, "USD", at[second[0]]),
                PaymentState(second[0], second[1], "refunded", 200, "USD", at[second[0]]),
                PaymentState(third[0], third[1], "paid", 700, "USD", at[third[0]]),
            ],
            key=lambda s: (s.order_id, s.status),
        )
        assert bills.pages >= 4  # sessions and balance transactions, two to a page
        listed = [(m, p) for m, p, _ in fake.calls if p in ("/v1/balance_transactions", "/v1/checkout/sessions")]
        assert ("GET", "/v1/balance_transactions") in listed
        later = await gateway.statement(end, end + timedelta(minutes=1))
        assert later == []
    finally:
        await gateway.aclose()


async def test_a_payment_after_the_order_closed_is_found_and_refunded(
    fake, dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    fake, _ = fake
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=2,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=1,
            support_window_seconds=1,
        ),
        stripe=settings(fake),
    ) as stack:
        sku = await stack.product(1, currency="USD")
        order = await stack.ordered(sku, gateway="stripe")
        fake.fail_next = [(500, "api_error")] * 10_000  # Stripe is down: the session cannot be expired
        assert "close_failed" in stages(await stack.wait_status(order, "expired", timeout=30))
        await stack.handle(order).result()
        fake.fail_next = []
        session_id = order["payment"]["payment_id"]
        await fake.pay(session_id, deliver=False)  # paid, and the webhook never arrives
        report = await stack.env.client.execute_workflow(
            c.RECONCILE_WORKFLOW,
            c.ReconcileInput(lookback_seconds=600, grace_seconds=0, gateway="stripe"),
            id=f"reconcile-stripe-{uuid.uuid4().hex[:8]}",
            task_queue=stack.task_queue,
            result_type=c.ReconcileReport,
        )
        assert report.findings.get("paid_order_closed") == 1 and report.refunds_started == 1
        assert report.not_ready == []  # balance transactions exist as the money moves
        await stack.env.client.get_workflow_handle(c.stray_workflow_id("stripe", session_id)).result()
        charge = fake.charge_of(session_id)
        assert (charge["amount_refunded"], charge["refunded"]) == (order["amount_cents"], True)
        assert time.time() - charge["created"] < 600
