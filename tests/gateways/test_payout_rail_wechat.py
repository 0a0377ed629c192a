"""WeChat Pay 商家转账 as a payout rail (transfer-bills: submit, the payee's confirmation, cancel,
query) against the fake WeChat over loopback, cross-checked with the wechatpayv3 SDK, then through
PayoutWorkflow: paid once the payee confirms, cancelled with the money back when they never do; and
reconciled against the fund-flow bill's 商家转账 rows."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from wechatpayv3 import WeChatPay, WeChatPayType

from miaofa import contract as c
from miaofa import steps as s
from miaofa.gateways.base import StatementNotReady
from miaofa.gateways.bills import day_window
from miaofa.payouts.rails import RailTransfer, Transfer
from miaofa.payouts.wechat_rail import WechatRail, bill_no
from tests.conftest import stack_settings
from tests.helpers import payouts as p
from tests.helpers.fakes.bill_servers import WechatBills
from tests.helpers.fakes.wechat import CHINA, FakeWechat, WechatKeys, private_pem, public_pem
from tests.helpers.fakes.wechat_transfers import Bill, TransferBills
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
REPORT = {"岗位类型": "店铺经营者", "报酬说明": "店铺销售结算"}


@pytest.fixture(scope="module")
def keys() -> WechatKeys:
    return WechatKeys.generate()


@pytest.fixture(scope="module")
async def fake_urls(keys) -> AsyncIterator[tuple[FakeWechat, TransferBills, str, str, WechatBills]]:
    fake = FakeWechat(keys)
    bills = TransferBills(fake)
    funds = WechatBills(fake, bills)  # the trade and fund-flow bills, for reconciliation
    async with serve(fake.app("primary"), bind()) as primary, serve(fake.app("backup"), bind()) as backup:
        yield fake, bills, primary, backup, funds


@pytest.fixture
def bills(fake_urls) -> TransferBills:
    fake, bills, *_ = fake_urls
    fake.sign_answers, fake.answer_key, bills.mode = True, None, "WAIT_USER_CONFIRM"
    return bills


@pytest.fixture
async def rail(keys, fake_urls) -> AsyncIterator[WechatRail]:
    made = WechatRail(keys.settings(fake_urls[2], fake_urls[3]), "1005", REPORT)
    yield made
    await made.aclose()


def transfer(amount: int = 950, currency: str = "CNY") -> Transfer:
    return Transfer("wd_" + uuid.uuid4().hex[:20], amount, currency, OPENID, "张三")


async def test_a_bill_waits_for_the_payee_and_is_paid_once_they_confirm(rail, bills) -> None:
    sent = transfer()
    assert await rail.submit(sent) == s.TransferAnswer(s.TRANSFER_WAIT_CONFIRM, code="WAIT_USER_CONFIRM")
    assert await rail.submit(sent) == s.TransferAnswer(s.TRANSFER_WAIT_CONFIRM, code="WAIT_USER_CONFIRM")
    bill = bills.bills[bill_no(sent.number)]
    assert (bill.amount, bill.openid, bill.submits, bill.user_name) == (950, OPENID, 2, "")
    bills.confirm(bill.out_bill_no)
    assert await rail.query(sent.number) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")
    # A cancel that comes too late (the payee confirmed) is answered by the bill's state: paid.
    assert await rail.cancel(sent.number) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")


async def test_a_bill_nobody_confirms_is_cancelled_and_a_missing_one_is_not_found(rail, bills) -> None:
    sent = transfer()
    await rail.submit(sent)
    assert await rail.cancel(sent.number) == s.TransferAnswer(s.TRANSFER_CANCELLED, code="CANCELLED")
    assert (await rail.query(sent.number)).status == s.TRANSFER_CANCELLED
    missing = await rail.query(transfer().number)
    assert (missing.status, missing.code) == (s.TRANSFER_NOT_FOUND, "NOT_FOUND")


async def test_a_lost_answer_is_unknown_and_the_query_finds_the_one_bill(rail, bills) -> None:
    bills.mode = "lost"
    sent = transfer()
    answer = await rail.submit(sent)
    assert (answer.status, answer.definitive) == (s.TRANSFER_UNKNOWN, False)
    assert (await rail.query(sent.number)).status == s.TRANSFER_WAIT_CONFIRM
    assert bills.bills[bill_no(sent.number)].submits == 1


async def test_a_failed_bill_is_definitive_with_the_reason_in_words(rail, bills) -> None:
    bills.mode = "FAIL:NAME_NOT_CORRECT"
    answer = await rail.submit(transfer())
    assert answer == s.TransferAnswer(
        s.TRANSFER_FAILED,
        code="NAME_NOT_CORRECT",
        reason="the name given does not match the WeChat account's holder",
        definitive=True,
    )
    bills.mode = "FAIL:SOMETHING_NEW"
    answer = await rail.submit(transfer())
    assert (answer.status, answer.definitive, answer.reason) == (
        s.TRANSFER_FAILED,
        True,
        "WeChat did not pay it (SOMETHING_NEW)",
    )


async def test_from_2000_yuan_the_payees_name_goes_sealed_for_wechat(rail, bills) -> None:
    sent = transfer(amount=200000)
    assert (await rail.submit(sent)).status == s.TRANSFER_WAIT_CONFIRM
    assert bills.bills[bill_no(sent.number)].user_name == "张三"  # decrypted by WeChat's private key only


async def test_an_unsigned_or_confused_answer_is_unknown_and_other_currencies_never_leave(
    rail, bills, fake_urls
) -> None:
    fake = fake_urls[0]
    fake.sign_answers = False
    assert (await rail.submit(transfer())).status == s.TRANSFER_UNKNOWN
    fake.sign_answers = True
    bills.mode = "MAYBE"
    assert (await rail.submit(transfer())).status == s.TRANSFER_UNKNOWN
    calls = len(fake.calls)
    dollars = await rail.submit(transfer(currency="USD"))
    assert (dollars.status, dollars.definitive, len(fake.calls)) == (s.TRANSFER_FAILED, True, calls)


async def test_the_wechatpayv3_sdk_agrees_on_the_transfer_bill(rail, bills, keys, fake_urls) -> None:
    """A bill the SDK makes (its own signing, its own body) is one the fake accepts and the rail reads;
    the fake's answer verifies with the SDK."""
    sdk = WeChatPay(
        WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=private_pem(keys.merchant_key),
        cert_serial_no=keys.merchant_serial,
        appid=keys.appid,
        apiv3_key=keys.apiv3_key,
        public_key=public_pem(keys.platform_key),
        public_key_id=keys.public_key_id,
    )
    sdk._core._gate_way = fake_urls[2]
    number = "wd_" + uuid.uuid4().hex[:20]
    code, message = await asyncio.to_thread(
        sdk.mch_transfer_bills,
        out_bill_no=bill_no(number),
        transfer_scene_id="1005",
        openid=OPENID,
        transfer_amount=300,
        transfer_remark="sdk",
        user_name="李四",
        transfer_scene_report_infos=[{"info_type": k, "info_content": v} for k, v in REPORT.items()],
    )
    assert code == 200, message
    assert bills.bills[bill_no(number)].user_name == "李四"  # the SDK's sealing, our fake's unsealing
    assert await rail.query(number) == s.TransferAnswer(s.TRANSFER_WAIT_CONFIRM, code="WAIT_USER_CONFIRM")
    code, _ = await asyncio.to_thread(sdk.mch_transfer_bills_cancel, bill_no(number))
    assert code == 200
    assert (await rail.query(number)).status == s.TRANSFER_CANCELLED


async def test_a_fund_flow_bill_still_being_made_is_not_ready_then_ties_our_transfer(rail, bills, fake_urls) -> None:
    funds, day = fake_urls[4], (datetime.now(CHINA) - timedelta(days=2)).date()
    sent = transfer()
    await rail.submit(sent)
    bills.confirm(bill_no(sent.number))
    bills.bills[bill_no(sent.number)].at = f"{day} 12:00:00"
    funds.creating.add(str(day))  # STATEMENT_CREATING
    try:
        with pytest.raises(StatementNotReady):
            await rail.statement(*day_window(day), [sent.number])
    finally:
        funds.creating.discard(str(day))
    found = await rail.statement(*day_window(day), [sent.number])  # tied by the query's transfer_bill_no
    assert RailTransfer(sent.number, s.TRANSFER_PAID, 950, "CNY") in found
    with pytest.raises(StatementNotReady):  # today's bill: not asked before 10:00 tomorrow
        await rail.statement(*day_window(datetime.now(CHINA).date()), [])


# ---- through the workflow ----


@pytest.fixture(scope="module")
async def wechat_payouts(dev_env, sessionmaker, sim_url, database_url, smtp, keys, fake_urls) -> AsyncIterator[Stack]:
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
            payout_confirm_timeout_seconds=3,
            payout_fee_cents=50,
        ),
        wechat=keys.settings(fake_urls[2], fake_urls[3]),
        payout_wechat=True,
    ) as stack:
        yield stack


async def _wechat_withdrawal(stack: Stack) -> tuple[p.Shop, str]:
    shop = await p.funded_shop(stack, 5000)
    made = await stack.http.post(
        "/merchant/payout-destinations", headers=shop.owner, json={"rail": "wechat", "account": OPENID, "name": "张三"}
    )
    assert made.status_code == 201, made.text
    return shop, await p.withdrawn(stack, shop, 1000, made.json()["destination_id"])


async def test_a_wechat_withdrawal_is_paid_when_the_payee_confirms(wechat_payouts: Stack, bills) -> None:
    shop, wid = await _wechat_withdrawal(wechat_payouts)

    def waiting() -> bool:
        bill = bills.bills.get(bill_no(wid))
        return bill is not None and bill.state == "WAIT_USER_CONFIRM"

    await eventually(waiting, 10, "the bill to wait for the payee")
    bills.confirm(bill_no(wid))
    seen = await p.wait_status(wechat_payouts, shop, wid, c.WITHDRAWAL_PAID)
    assert (bills.bills[bill_no(wid)].amount, bills.bills[bill_no(wid)].submits) == (950, 1)
    assert (await p.balance(wechat_payouts, shop))["available"] == 4000
    assert seen["rail"] == "wechat"
    await p.clean(wechat_payouts)


async def test_a_wechat_withdrawal_nobody_confirms_is_cancelled_and_the_money_back(
    wechat_payouts: Stack, bills
) -> None:
    shop, wid = await _wechat_withdrawal(wechat_payouts)
    await p.wait_status(wechat_payouts, shop, wid, c.WITHDRAWAL_FAILED, timeout=30)
    assert bills.bills[bill_no(wid)].state == "CANCELLED"
    assert (await p.balance(wechat_payouts, shop))["available"] == 5000
    await p.clean(wechat_payouts)


async def test_the_fund_flow_bill_finds_an_unknown_transfer_and_a_wrong_amount_not_a_paid_one(
    wechat_payouts: Stack, bills
) -> None:
    """Two days ago: one withdrawal paid as asked, one whose money left for less, and one 商家转账
    our books never asked for (the bill names it by WeChat's transfer_bill_no only)."""
    when = (datetime.now(CHINA) - timedelta(days=2)).replace(hour=12).strftime("%Y-%m-%d %H:%M:%S")
    made = []
    for _ in range(2):
        shop, wid = await _wechat_withdrawal(wechat_payouts)
        await eventually(lambda: bill_no(wid) in bills.bills, 10, "the bill to be made")  # noqa: B023
        bills.confirm(bill_no(wid))
        await p.wait_status(wechat_payouts, shop, wid, c.WITHDRAWAL_PAID)
        bills.bills[bill_no(wid)].at = when
        made.append(wid)
    paid, short = made
    bills.bills[bill_no(short)].amount = 940
    unknown = Bill("wd" + uuid.uuid4().hex[:20], 700, OPENID, "SUCCESS", at=when)
    bills.bills[unknown.out_bill_no] = unknown

    report = await p.reconcile(wechat_payouts, 3 * 86400, gateway="wechat")
    assert await p.findings(wechat_payouts, paid) == []
    assert await p.findings(wechat_payouts, short) == [("payout:wechat", "payout_amount_mismatch", "flag", 1)]
    found = await p.findings(wechat_payouts, unknown.transfer_bill_no)
    assert found == [("payout:wechat", "payout_unknown_transfer", "flag", 1)]
    assert f"payout:wechat {datetime.now(CHINA).date()}" in report.not_ready  # today's bill: tomorrow
