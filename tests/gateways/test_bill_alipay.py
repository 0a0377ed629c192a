"""Alipay's trade bill: the adapter's statement against the fake Alipay serving the real zip of GBK
CSV, and the saga case: a notify dropped, the order closed, the buyer paid; the next reconciliation
finds the payment in the bill and refunds it."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from miaofa import contract as c
from miaofa.gateways.alipay import AlipayGateway
from miaofa.gateways.base import GatewayError, PaymentState, StatementNotReady
from miaofa.gateways.bills import SHANGHAI, day_window
from miaofa.gateways.config import AlipaySettings
from tests.conftest import stack_settings
from tests.helpers.fakes.alipay import FORMAT, FakeAlipay, Trade, new_key, private_pem
from tests.helpers.fakes.bill_servers import AlipayBills
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack, stages

APP_ID = "2021000000000002"
SELLER = "2088000000000002"


@pytest.fixture(scope="module")
def app_key():
    return new_key()


@pytest.fixture(scope="module")
async def served(app_key) -> AsyncIterator[tuple[FakeAlipay, AlipayBills, str]]:
    fake = FakeAlipay(APP_ID, app_key.public_key(), SELLER)
    bills = AlipayBills(fake)
    async with serve(fake.app, bind()) as url:
        yield fake, bills, url + "/gateway.do"


def settings(fake: FakeAlipay, url: str, app_key) -> AlipaySettings:
    return AlipaySettings(
        app_id=APP_ID,
        private_key=private_pem(app_key),
        alipay_public_key=fake.public_key_text,
        seller_id=SELLER,
        gateway_url=url,
    )


def days_ago(days: int, hour: int) -> datetime:
    today = datetime.now(SHANGHAI).replace(hour=hour, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def paid_trade(fake: FakeAlipay, total: str, at: datetime) -> Trade:
    no = uuid.uuid4().hex[:20]
    trade = Trade(no, total, "卡密", "http://127.0.0.1:9/n", "TRADE_SUCCESS", gmt_payment=at.strftime(FORMAT))
    fake.trades[no] = trade
    return trade


async def test_statement_reads_the_days_bills_and_leaves_today_for_later(served, app_key) -> None:
    fake, bills, url = served
    gateway = AlipayGateway(settings(fake, url, app_key))
    fake.notify = "drop"  # the refunds' notifies have nowhere to go here
    try:
        paid = paid_trade(fake, "9.90", days_ago(2, 9))
        whole = paid_trade(fake, "20.00", days_ago(2, 10))
        part = paid_trade(fake, "50.00", days_ago(2, 11))
        for trade, amount in ((whole, 2000), (part, 1000)):
            refund = await gateway.refund(trade.out_trade_no, trade.out_trade_no, amount, "r-" + trade.out_trade_no)
            assert refund.status == "refunded"
            trade.refunded_at["r-" + trade.out_trade_no] = days_ago(2, 12).strftime(FORMAT)
        day = days_ago(2, 0).date()
        start, end = day_window(day)
        found = await gateway.statement(start, end)
        assert found == [
            PaymentState(paid.out_trade_no, paid.out_trade_no, "paid", 990, "CNY", days_ago(2, 9).astimezone(UTC)),
            PaymentState(
                whole.out_trade_no, whole.out_trade_no, "refunded", 2000, "CNY", days_ago(2, 10).astimezone(UTC)
            ),
            PaymentState(part.out_trade_no, part.out_trade_no, "paid", 5000, "CNY", days_ago(2, 11).astimezone(UTC)),
            PaymentState(
                part.out_trade_no, part.out_trade_no, "refunded", 1000, "CNY", days_ago(2, 11).astimezone(UTC)
            ),
        ]
        assert (
            "alipay.data.dataservice.bill.downloadurl.query",
            {"bill_type": "trade", "bill_date": str(day)},
        ) in fake.calls
        downloads = bills.downloads
        assert await gateway.statement(start, end) == found  # a past day's bill is kept, not fetched again
        assert bills.downloads == downloads
        with pytest.raises(StatementNotReady) as caught:  # today's bill comes out tomorrow morning
            await gateway.statement(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC))
        assert caught.value.day == str((datetime.now(SHANGHAI) - timedelta(hours=1)).date())
    finally:
        fake.notify = "send"
        await gateway.aclose()


async def test_a_bill_alipay_has_not_made_is_not_ready_then_an_empty_day(served, app_key) -> None:
    fake, bills, url = served
    day = days_ago(1, 0).date()
    bills.not_out.add(str(day))
    early = AlipayGateway(settings(fake, url, app_key), clock=lambda: days_ago(0, 11).astimezone(UTC))
    late = AlipayGateway(settings(fake, url, app_key), clock=lambda: days_ago(-1, 11).astimezone(UTC))
    try:
        with pytest.raises(StatementNotReady):  # isp.bill_not_exist on the morning after: still being made
            await early.statement(*day_window(day))
        assert await late.statement(*day_window(day)) == []  # a day later: a day without a trade
    finally:
        bills.not_out.clear()
        await early.aclose()
        await late.aclose()


async def test_a_download_out_of_format_is_a_gateway_error_naming_no_secret(served, app_key) -> None:
    fake, bills, url = served
    day = days_ago(3, 0).date()
    paid_trade(fake, "9.90", days_ago(3, 9))
    bills.mangle = lambda data: data[:-30]  # cut off on the way
    gateway = AlipayGateway(settings(fake, url, app_key))
    try:
        with pytest.raises(GatewayError, match="^alipay bill: not a zip$"):
            await gateway.statement(*day_window(day))
    finally:
        bills.mangle = None
        await gateway.aclose()


# ---- through the saga ----


@pytest.fixture(scope="module")
async def saga_served(app_key) -> AsyncIterator[tuple[FakeAlipay, AlipayBills, str]]:
    fake = FakeAlipay(APP_ID, app_key.public_key(), SELLER)  # its own: no trades of the tests above
    bills = AlipayBills(fake)
    async with serve(fake.app, bind()) as url:
        yield fake, bills, url + "/gateway.do"


@pytest.fixture(scope="module")
async def stack(dev_env, sessionmaker, sim_url, database_url, smtp, saga_served, app_key) -> AsyncIterator[Stack]:
    fake, _, url = saga_served
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
        alipay=settings(fake, url, app_key),
    ) as running:
        yield running


async def test_a_payment_after_the_order_closed_is_found_in_the_bill_and_refunded(stack: Stack, saga_served) -> None:
    fake, _, _ = saga_served
    sku = await stack.product(1)
    order = await stack.ordered(sku, gateway="alipay")
    async with httpx.AsyncClient() as browser:  # the buyer opens the cashier …
        assert (await browser.get(order["payment"]["pay_url"])).status_code == 200
    fake.failing = {"alipay.trade.close"}  # … and the close fails, so Alipay can still take the money
    assert "close_failed" in stages(await stack.wait_status(order, "expired", timeout=30))
    await stack.handle(order).result()
    fake.failing = set()
    fake.notify = "drop"
    try:
        assert await fake.pay(order["order_id"]) is None  # paid, and nobody tells the shop
    finally:
        fake.notify = "send"
    # The payment went through the evening before yesterday, Beijing time: that day's bill is out.
    fake.trades[order["order_id"]].gmt_payment = days_ago(2, 20).strftime(FORMAT)
    report = await stack.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=3 * 86400, grace_seconds=0, gateway="alipay"),
        id=f"reconcile-alipay-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=c.ReconcileReport,
    )
    assert report.findings.get("paid_order_closed") == 1
    assert report.refunds_started >= 1
    today = datetime.now(SHANGHAI).date()
    assert f"alipay {today}" in report.not_ready  # today's bill: not ready, tried again by a later run
    stray = stack.env.client.get_workflow_handle(c.stray_workflow_id("alipay", order["order_id"]))
    await stray.result()
    trade = fake.trades[order["order_id"]]
    assert (trade.status, trade.refund_fee, trade.total_amount) == ("TRADE_CLOSED", Decimal("9.90"), "9.90")
