"""WeChat Pay's trade bill: the adapter's statement against the fake serving /v3/bill/tradebill (signed
JSON with the SHA1) and the gzip file, and the saga case: a notify dropped, the order closed, the buyer
paid; the next reconciliation finds the payment in the bill and refunds it."""

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from miaofa import contract as c
from miaofa.gateways.base import GatewayError, PaymentState, StatementNotReady
from miaofa.gateways.bills import SHANGHAI, day_window
from miaofa.gateways.wechat import WechatGateway
from tests.conftest import stack_settings
from tests.helpers.fakes.bill_servers import WechatBills
from tests.helpers.fakes.wechat import FakeWechat, Trade, WechatKeys
from tests.helpers.servers import bind, serve
from tests.helpers.stack import running_stack, stages


@pytest.fixture(scope="module")
def keys() -> WechatKeys:
    return WechatKeys.generate()


@asynccontextmanager
async def served(keys: WechatKeys) -> AsyncIterator[tuple[FakeWechat, WechatBills, str, str]]:
    fake = FakeWechat(keys)
    bills = WechatBills(fake)  # before the apps are made: they take the routes then
    async with serve(fake.app("primary"), bind()) as primary, serve(fake.app("backup"), bind()) as backup:
        yield fake, bills, primary, backup


def days_ago(days: int, hour: int) -> datetime:
    return datetime.now(SHANGHAI).replace(hour=hour, minute=0, second=0, microsecond=0) - timedelta(days=days)


def paid_trade(fake: FakeWechat, total: int, at: datetime) -> Trade:
    no = secrets.token_hex(10)
    trade = Trade(
        no, "卡密", "http://127.0.0.1:9/n", total, "CNY", "weixin://x", "SUCCESS", at.isoformat(), "4200" + no
    )
    fake.trades[no] = trade
    return trade


async def test_statement_reads_the_days_bill_checked_against_its_hash(keys) -> None:
    async with served(keys) as (fake, bills, primary, backup):
        gateway = WechatGateway(keys.settings(primary, backup))
        try:
            paid = paid_trade(fake, 990, days_ago(2, 9))
            part = paid_trade(fake, 5000, days_ago(2, 10))
            refund = await gateway.refund(part.out_trade_no, part.out_trade_no, 2000, "refund-part")
            assert (refund.status, refund.amount_cents) == ("refunded", 2000)
            part.refunds["refund-part"]["create_time"] = days_ago(2, 11).isoformat()
            day = days_ago(2, 0).date()
            found = await gateway.statement(*day_window(day))
            assert found == [
                PaymentState(paid.out_trade_no, paid.out_trade_no, "paid", 990, "CNY", days_ago(2, 9).astimezone(UTC)),
                PaymentState(
                    part.out_trade_no, part.out_trade_no, "paid", 5000, "CNY", days_ago(2, 10).astimezone(UTC)
                ),
                PaymentState(
                    part.out_trade_no, part.out_trade_no, "refunded", 2000, "CNY", days_ago(2, 10).astimezone(UTC)
                ),
            ]
            assert ("primary", "GET", "/v3/bill/tradebill") in fake.calls
            assert ("primary", "GET", "/v3/billdownload/file") in fake.calls  # signed by us, as WeChat asks

            bills.corrupt = True
            fresh = WechatGateway(keys.settings(primary, backup))
            try:
                with pytest.raises(GatewayError, match="^wechat bill: the download does not match its hash$"):
                    await fresh.statement(*day_window(day))
            finally:
                bills.corrupt = False
                await fresh.aclose()
            with pytest.raises(StatementNotReady):  # today's bill comes out tomorrow after 10:00
                await gateway.statement(datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC))
        finally:
            await gateway.aclose()


async def test_statement_creating_is_not_ready_and_a_quiet_day_long_past_is_empty(keys) -> None:
    async with served(keys) as (fake, bills, primary, backup):
        day = days_ago(2, 0).date()
        bills.creating.add(str(day))
        morning = WechatGateway(keys.settings(primary, backup))
        try:
            with pytest.raises(StatementNotReady) as caught:
                await morning.statement(*day_window(day))
            assert (caught.value.gateway, caught.value.day) == ("wechat", str(day))
            bills.creating.clear()
            assert await morning.statement(*day_window(day - timedelta(days=5))) == []  # NO_STATEMENT_EXIST, long past
        finally:
            await morning.aclose()


# ---- through the saga ----


async def test_a_payment_after_the_order_closed_is_found_in_the_bill_and_refunded(
    keys, dev_env, sessionmaker, sim_url, database_url, smtp
) -> None:
    async with (
        served(keys) as (fake, bills, primary, backup),
        running_stack(
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
            wechat=keys.settings(primary, backup),
        ) as stack,
    ):
        sku = await stack.product(1)
        order = await stack.ordered(sku, gateway="wechat")
        fake.down = {"primary", "backup"}  # WeChat cannot be reached: the close fails, the code stays payable
        assert "close_failed" in stages(await stack.wait_status(order, "expired", timeout=30))
        await stack.handle(order).result()
        fake.down = set()
        fake.drop_notifies = True
        assert await fake.pay(order["order_id"]) is None  # paid, and nobody tells the shop
        # Paid the evening before yesterday, Beijing time: that day's bill is out.
        fake.trades[order["order_id"]].success_time = days_ago(2, 20).isoformat(timespec="seconds")
        report = await stack.env.client.execute_workflow(
            c.RECONCILE_WORKFLOW,
            c.ReconcileInput(lookback_seconds=3 * 86400, grace_seconds=0, gateway="wechat"),
            id=f"reconcile-wechat-{uuid.uuid4().hex[:8]}",
            task_queue=stack.task_queue,
            result_type=c.ReconcileReport,
        )
        assert report.findings.get("paid_order_closed") == 1 and report.refunds_started == 1
        assert f"wechat {datetime.now(SHANGHAI).date()}" in report.not_ready
        await stack.env.client.get_workflow_handle(c.stray_workflow_id("wechat", order["order_id"])).result()
        refunds = fake.trades[order["order_id"]].refunds
        assert [r["amount"]["refund"] for r in refunds.values()] == [order["amount_cents"]]
