"""Stripe Connect transfers as a payout rail against the fake Stripe over loopback, cross-checked
with the stripe SDK, then through PayoutWorkflow: paid once under one transfer group whatever is
lost on the way, or the money back when the account cannot take it; and reconciled against Stripe's
list of transfers."""

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import stripe  # the SDK, a test-only dependency

from miaofa import contract as c
from miaofa import steps as s
from miaofa.gateways.config import StripeSettings
from miaofa.payouts.rails import Transfer
from miaofa.payouts.stripe_rail import StripeRail
from tests.conftest import stack_settings
from tests.helpers import payouts as p
from tests.helpers.fakes.bill_servers import StripeBills
from tests.helpers.fakes.stripe import FakeStripe
from tests.helpers.fakes.stripe_transfers import StripeTransfers
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack

SECRET_KEY = "sk_test_" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[tuple[FakeStripe, StripeTransfers]]:
    fake = FakeStripe(SECRET_KEY, WEBHOOK_SECRET)
    transfers = StripeTransfers(fake)
    StripeBills(fake)  # balance transactions, for the payment side of a reconciliation
    async with serve(fake.app, bind()) as url:
        fake.api_base = url
        yield fake, transfers


@pytest.fixture
def connect(served) -> StripeTransfers:
    fake, transfers = served
    fake.fail_next, transfers.lost = [], False
    return transfers


def _settings(fake: FakeStripe) -> StripeSettings:
    return StripeSettings(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET, api_base=fake.api_base)


@pytest.fixture
async def rail(served) -> AsyncIterator[StripeRail]:
    made = StripeRail(_settings(served[0]))
    yield made
    await made.aclose()


def transfer(account: str, amount: int = 950) -> Transfer:
    return Transfer("wd_" + uuid.uuid4().hex[:20], amount, "CNY", account, "Tea House Ltd")


async def test_a_transfer_is_paid_and_the_same_number_again_is_the_same_transfer(rail, connect) -> None:
    account = connect.connect()
    sent = transfer(account)
    assert await rail.submit(sent) == s.TransferAnswer(s.TRANSFER_PAID, code="transfer")
    assert await rail.submit(sent) == s.TransferAnswer(s.TRANSFER_PAID, code="transfer")  # the key replays
    [made] = [t for t in connect.transfers.values() if t["transfer_group"] == sent.number]
    assert (made["amount"], made["currency"], made["destination"]) == (950, "cny", account)
    assert made["metadata"] == {"withdrawal_id": sent.number}
    assert await rail.query(sent.number) == s.TransferAnswer(s.TRANSFER_PAID, code="transfer")
    connect.reverse(made["id"])
    assert await rail.query(sent.number) == s.TransferAnswer(
        s.TRANSFER_RETURNED, code="reversed", reason="the transfer was reversed at Stripe"
    )


async def test_a_lost_answer_is_unknown_and_the_query_finds_the_one_transfer(rail, connect, served) -> None:
    account = connect.connect()
    connect.lost = True
    sent = transfer(account)
    answer = await rail.submit(sent)
    assert (answer.status, answer.code) == (s.TRANSFER_UNKNOWN, "api_error")
    assert await rail.query(sent.number) == s.TransferAnswer(s.TRANSFER_PAID, code="transfer")
    assert (await rail.query(transfer(account).number)).status == s.TRANSFER_NOT_FOUND
    served[0].fail_next = [(429, "rate_limit_error"), (500, "api_error")]
    assert (await rail.submit(transfer(account))).status == s.TRANSFER_UNKNOWN
    assert (await rail.query(sent.number)).status == s.TRANSFER_UNKNOWN


async def test_only_an_account_that_cannot_take_it_is_definitive(rail, connect) -> None:
    missing = await rail.submit(transfer("acct_" + "0" * 16))
    assert missing == s.TransferAnswer(
        s.TRANSFER_FAILED,
        code="resource_missing",
        reason="the Stripe account does not exist or is not connected to the platform",
        definitive=True,
    )
    restricted = "acct_" + secrets.token_hex(8)
    connect.restricted.add(restricted)
    answer = await rail.submit(transfer(restricted))
    assert (answer.status, answer.definitive, answer.code) == (
        s.TRANSFER_FAILED,
        True,
        "insufficient_capabilities_for_transfer",
    )
    poor = connect.connect(balance=0)
    connect.balance["cny"] = 0  # the platform's own balance is short: ours to fix, never the merchant's loss
    answer = await rail.submit(transfer(poor))
    assert (answer.status, answer.definitive, answer.code) == (s.TRANSFER_UNKNOWN, False, "balance_insufficient")
    connect.balance["cny"] = 10**9
    not_an_account = await rail.submit(transfer("someone@example.com"))
    assert (not_an_account.status, not_an_account.definitive) == (s.TRANSFER_FAILED, True)


async def test_the_stripe_sdk_agrees_on_transfers(rail, connect, served) -> None:
    """A transfer the SDK makes is one the rail finds; one the rail makes parses in the SDK."""
    fake = served[0]
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake.api_base})
    account = connect.connect()
    group = "wd_" + uuid.uuid4().hex[:20]
    made = await asyncio.to_thread(
        client.v1.transfers.create,
        params={"amount": 1234, "currency": "cny", "destination": account, "transfer_group": group},
        options={"idempotency_key": group},
    )
    assert isinstance(made, stripe.Transfer) and made.amount == 1234
    assert await rail.query(group) == s.TransferAnswer(s.TRANSFER_PAID, code="transfer")
    ours = transfer(account)
    await rail.submit(ours)
    listed = await asyncio.to_thread(client.v1.transfers.list, params={"transfer_group": ours.number})
    [seen] = listed.data
    assert (seen.amount, seen.destination, seen.transfer_group, seen.reversed) == (950, account, ours.number, False)


# ---- through the workflow ----


async def test_the_transfer_list_is_read_page_by_page_within_the_window(rail, connect) -> None:
    at, tag = int(time.time()) - 7200, secrets.token_hex(4)  # two hours ago: outside other tests' windows
    made = {f"tr_{tag}{n:04d}": f"wd_{tag}{n:04d}" for n in range(105)}
    for transfer_id, group in made.items():
        connect.transfers[transfer_id] = {"id": transfer_id, "object": "transfer", "amount": 950, "amount_reversed": 0}
        connect.transfers[transfer_id] |= {"currency": "cny", "created": at, "reversed": False, "transfer_group": group}
    pages = connect.pages
    try:
        found = await rail.statement(datetime.fromtimestamp(at, UTC), datetime.fromtimestamp(at + 1, UTC))
        assert sorted(t.number for t in found) == sorted(made.values())  # 105: two pages of 100
        assert connect.pages - pages == 2
        assert await rail.statement(datetime.fromtimestamp(at + 1, UTC), datetime.fromtimestamp(at + 2, UTC)) == []
    finally:
        for transfer_id in made:
            del connect.transfers[transfer_id]


@pytest.fixture(scope="module")
async def stripe_payouts(dev_env, sessionmaker, sim_url, database_url, smtp, served) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payout_new_destination_delay_seconds=0,
            payout_query_interval_seconds=0.2,
            payout_query_max_interval_seconds=1,
            payout_fee_cents=50,
        ),
        stripe=_settings(served[0]),
        payout_stripe=True,
    ) as stack:
        yield stack


async def _stripe_withdrawal(stack: Stack, account: str) -> tuple[p.Shop, str]:
    shop = await p.funded_shop(stack, 5000)
    made = await stack.http.post(
        "/merchant/payout-destinations", headers=shop.owner, json={"rail": "stripe", "account": account, "name": "Tea"}
    )
    assert made.status_code == 201, made.text
    return shop, await p.withdrawn(stack, shop, 1000, made.json()["destination_id"])


async def test_a_stripe_withdrawal_whose_answer_is_lost_is_paid_once(stripe_payouts: Stack, connect) -> None:
    account = connect.connect()
    connect.lost = True
    shop, wid = await _stripe_withdrawal(stripe_payouts, account)
    seen = await p.wait_status(stripe_payouts, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen)[-2:] == ["checking", "paid"]
    assert [t["amount"] for t in connect.transfers.values() if t["transfer_group"] == wid] == [950]
    assert (await p.balance(stripe_payouts, shop))["available"] == 4000
    await p.clean(stripe_payouts)


async def test_a_stripe_account_that_cannot_take_it_brings_the_money_back(stripe_payouts: Stack, connect) -> None:
    restricted = "acct_" + secrets.token_hex(8)
    connect.restricted.add(restricted)
    shop, wid = await _stripe_withdrawal(stripe_payouts, restricted)
    seen = await p.wait_status(stripe_payouts, shop, wid, c.WITHDRAWAL_FAILED)
    assert "cannot receive transfers yet" in seen["timeline"][-1]["note"]
    assert (await p.balance(stripe_payouts, shop))["available"] == 5000
    await p.clean(stripe_payouts)


async def test_the_transfer_list_finds_an_unknown_transfer_and_a_wrong_amount_not_a_paid_one(
    stripe_payouts: Stack, connect
) -> None:
    """Stripe's list is live: one withdrawal paid as asked, one whose transfer was partly reversed
    (it pays less), and one transfer our books never asked for, all in the last minutes."""
    account = connect.connect()
    made = []
    for _ in range(2):
        shop, wid = await _stripe_withdrawal(stripe_payouts, account)
        await p.wait_status(stripe_payouts, shop, wid, c.WITHDRAWAL_PAID)
        made.append(wid)
    paid, short = made
    [transfer] = [t for t in connect.transfers.values() if t["transfer_group"] == short]
    transfer["amount_reversed"] = 10
    unknown = "wd_" + uuid.uuid4().hex[:20]
    created = dict(transfer, id="tr_" + uuid.uuid4().hex[:24], transfer_group=unknown, amount_reversed=0)
    connect.transfers[created["id"]] = created
    pages = connect.pages

    report = await p.reconcile(stripe_payouts, 600, gateway="stripe")
    assert await p.findings(stripe_payouts, paid) == []
    assert await p.findings(stripe_payouts, short) == [("payout:stripe", "payout_amount_mismatch", "flag", 1)]
    assert await p.findings(stripe_payouts, unknown) == [("payout:stripe", "payout_unknown_transfer", "flag", 1)]
    assert not [day for day in report.not_ready if day.startswith("payout:stripe")]  # a live list: never late
    assert connect.pages > pages
