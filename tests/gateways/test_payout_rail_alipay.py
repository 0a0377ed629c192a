"""Alipay as a payout rail (单笔转账 uni.transfer + common.query) against the fake Alipay over
loopback, then through PayoutWorkflow on real Temporal and PostgreSQL: paid once under one
out_biz_no whatever is lost on the way, or the money back with the payee-side reason in words; and
reconciled against Alipay's account bill (账务明细)."""

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from urllib.parse import parse_qsl

import httpx
import pytest
from alipay import AliPay

from miaofa import contract as c
from miaofa import steps as s
from miaofa.gateways.base import StatementNotReady
from miaofa.gateways.bills import day_window
from miaofa.payouts.alipay_rail import AlipayRail
from miaofa.payouts.rails import RailTransfer, Transfer
from tests.conftest import stack_settings
from tests.gateways.test_gateway_alipay import settings as alipay_settings
from tests.helpers import payouts as p
from tests.helpers.fakes.alipay import FORMAT, SHANGHAI, AlipayTransfer, FakeAlipay, new_key, private_pem, public_pem
from tests.helpers.fakes.bill_servers import AlipayBills
from tests.helpers.fakes.bills import AlipayAccountRow as AccountRow
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack

APP_ID = "2021000000000001"
SELLER = "2088000000000001"
PAYEE = "payee@example.com"


@pytest.fixture(scope="module")
def app_key():
    return new_key()


@pytest.fixture(scope="module")
async def fake_url(app_key) -> AsyncIterator[tuple[FakeAlipay, str, AlipayBills]]:
    fake = FakeAlipay(APP_ID, app_key.public_key(), SELLER)
    bills = AlipayBills(fake)  # the trade bill and the account bill, for reconciliation
    async with serve(fake.app, bind()) as url:
        yield fake, url + "/gateway.do", bills


@pytest.fixture
def fake(fake_url) -> FakeAlipay:
    fake = fake_url[0]
    fake.transfer_mode, fake.failing, fake.tamper = "SUCCESS", set(), {}
    return fake


@pytest.fixture
async def rail(fake, fake_url, app_key) -> AsyncIterator[AlipayRail]:
    made = AlipayRail(alipay_settings(fake, fake_url[1], app_key))
    yield made
    await made.aclose()


def transfer(amount_cents: int = 950, account: str = PAYEE, currency: str = "CNY") -> Transfer:
    return Transfer("w_" + uuid.uuid4().hex[:20], amount_cents, currency, account, "张三")


async def test_a_transfer_is_paid_and_the_same_number_again_is_the_same_transfer(rail, fake) -> None:
    sent = transfer()
    assert await rail.submit(sent) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")
    assert await rail.submit(sent) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")
    made = fake.transfers[sent.number]
    assert (made.trans_amount, made.submits) == ("9.50", 2)
    assert made.payee == {"identity": PAYEE, "identity_type": "ALIPAY_LOGON_ID", "name": "张三"}
    assert await rail.query(sent.number) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")
    by_id = transfer(account="2088123412341234")
    await rail.submit(by_id)
    assert fake.transfers[by_id.number].payee["identity_type"] == "ALIPAY_USER_ID"


async def test_a_lost_answer_is_unknown_and_the_query_finds_the_one_transfer(rail, fake) -> None:
    fake.transfer_mode = "lost"
    sent = transfer()
    answer = await rail.submit(sent)
    assert (answer.status, answer.definitive) == (s.TRANSFER_UNKNOWN, False)
    assert await rail.query(sent.number) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")
    assert len([t for t in fake.transfers if t == sent.number]) == 1
    fake.failing = {"alipay.fund.trans.uni.transfer"}
    assert (await rail.submit(transfer())).status == s.TRANSFER_UNKNOWN  # 20000: Alipay unsure


async def test_only_a_payee_side_refusal_is_definitive(rail, fake) -> None:
    fake.transfer_mode = "PAYEE_USER_INFO_ERROR"
    refused = transfer()
    answer = await rail.submit(refused)
    assert answer == s.TransferAnswer(
        s.TRANSFER_FAILED,
        code="PAYEE_USER_INFO_ERROR",
        reason="the name given does not match the Alipay account's holder",
        definitive=True,
    )
    assert await rail.query(refused.number) == s.TransferAnswer(
        s.TRANSFER_NOT_FOUND, code="ORDER_NOT_EXIST", reason="Alipay has no such transfer"
    )
    for unfamiliar in ("PAYER_BALANCE_NOT_ENOUGH", "SYSTEM_ERROR", "PAYEE_SOMETHING_NEW"):
        fake.transfer_mode = unfamiliar
        answer = await rail.submit(transfer())
        assert (answer.status, answer.definitive, answer.code) == (s.TRANSFER_UNKNOWN, False, unfamiliar)


async def test_the_query_reports_dealing_returned_and_a_final_fail(rail, fake) -> None:
    fake.transfer_mode = "DEALING"
    sent = transfer()
    assert (await rail.submit(sent)).status == s.TRANSFER_PROCESSING
    fake.transfers[sent.number].status = "REFUND"
    assert await rail.query(sent.number) == s.TransferAnswer(
        s.TRANSFER_RETURNED, code="REFUND", reason="the payee's bank sent it back"
    )
    fake.transfers[sent.number].status, fake.transfers[sent.number].error_code = "FAIL", "PAYEE_ACCOUNT_STATUS_ERROR"
    answer = await rail.query(sent.number)
    assert (answer.status, answer.definitive, answer.reason) == (
        s.TRANSFER_FAILED,
        True,
        "the payee's Alipay account cannot receive money (frozen or closed)",
    )


async def test_an_unverifiable_or_confused_answer_is_unknown_and_other_currencies_never_leave(
    rail, fake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    real_key, fake.key = fake.key, new_key()  # answers signed by someone else
    try:
        assert (await rail.submit(transfer())).status == s.TRANSFER_UNKNOWN
    finally:
        fake.key = real_key
    fake.tamper = {"out_biz_no": "w_someone_else"}
    assert (await rail.submit(transfer())).status == s.TRANSFER_UNKNOWN
    fake.tamper = {"status": "MAYBE"}
    assert (await rail.submit(transfer())).status == s.TRANSFER_UNKNOWN
    fake.tamper = {}
    calls = len(fake.calls)
    dollars = await rail.submit(transfer(currency="USD"))
    assert (dollars.status, dollars.definitive, len(fake.calls)) == (s.TRANSFER_FAILED, True, calls)
    assert PAYEE not in caplog.text


async def test_the_account_bill_is_not_asked_before_it_is_out_and_a_transfer_by_hand_is_unknown(
    fake, fake_url, app_key
) -> None:
    day = (datetime.now(SHANGHAI) - timedelta(days=2)).date()
    morning = datetime.combine(day + timedelta(days=1), time(9, 59), SHANGHAI).astimezone(UTC)
    early = AlipayRail(alipay_settings(fake, fake_url[1], app_key), clock=lambda: morning)
    late = AlipayRail(alipay_settings(fake, fake_url[1], app_key))
    hand = AccountRow("39001", "", "转账", f"{day} 08:00:00", expense="-3.00")  # made in Alipay's own app
    fake_url[2].extra.append(hand)
    try:
        asked = len(fake.calls)
        with pytest.raises(StatementNotReady):  # 09:59 the next morning: Alipay is not even asked
            await early.statement(*day_window(day))
        assert len(fake.calls) == asked
        assert RailTransfer("39001", s.TRANSFER_PAID, 300, "CNY") in await late.statement(*day_window(day))
    finally:
        fake_url[2].extra.remove(hand)
        await early.aclose()
        await late.aclose()


# ---- through the workflow ----


@pytest.fixture(scope="module")
async def alipay_payouts(dev_env, sessionmaker, sim_url, database_url, smtp, fake_url, app_key) -> AsyncIterator[Stack]:
    fake, url, _ = fake_url
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
        alipay=alipay_settings(fake, url, app_key),
        payout_alipay=True,
    ) as stack:
        yield stack


async def _alipay_withdrawal(stack: Stack) -> tuple[p.Shop, str]:
    shop = await p.funded_shop(stack, 5000)
    made = await stack.http.post(
        "/merchant/payout-destinations",
        headers=shop.owner,
        json={"rail": "alipay", "account": PAYEE, "name": "张三"},
    )
    assert made.status_code == 201, made.text
    return shop, await p.withdrawn(stack, shop, 1000, made.json()["destination_id"])


async def test_a_withdrawal_whose_answer_is_lost_is_paid_once_through_alipay(alipay_payouts: Stack, fake) -> None:
    fake.transfer_mode = "lost"
    shop, wid = await _alipay_withdrawal(alipay_payouts)
    seen = await p.wait_status(alipay_payouts, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "approved", "submitted", "checking", "paid"]
    assert (fake.transfers[wid].trans_amount, fake.transfers[wid].submits) == ("9.50", 1)
    assert await p.balance(alipay_payouts, shop) == {
        "pending": 0,
        "available": 4000,
        "reserved": 0,
        "debt": 0,
        "payable": 0,
    }
    await p.clean(alipay_payouts)


async def test_a_payee_refusal_at_alipay_brings_the_money_back_with_the_reason(alipay_payouts: Stack, fake) -> None:
    fake.transfer_mode = "PAYEE_NOT_EXIST"
    shop, wid = await _alipay_withdrawal(alipay_payouts)
    seen = await p.wait_status(alipay_payouts, shop, wid, c.WITHDRAWAL_FAILED)
    assert "the Alipay account does not exist" in seen["timeline"][-1]["note"]
    assert wid not in fake.transfers
    assert (await p.balance(alipay_payouts, shop))["available"] == 5000
    await p.clean(alipay_payouts)


async def test_a_rail_the_deployment_does_not_offer_is_refused(dev_stack: Stack) -> None:
    shop = await p.funded_shop(dev_stack, 100)
    refused = await dev_stack.http.post(
        "/merchant/payout-destinations", headers=shop.owner, json={"rail": "alipay", "account": PAYEE, "name": "张三"}
    )
    assert refused.status_code == 422
    assert refused.json() == {"error": "rail_not_offered", "detail": "rail: not offered here; one of: simulator"}


async def test_python_alipay_sdk_agrees_on_the_transfer_request_and_answer(rail, fake, fake_url, app_key) -> None:
    """The SDK's own signing of a uni.transfer is accepted by the fake, our rail reads the transfer it
    made, and the SDK verifies the answer the rail verified: the three agree on the wire."""
    sdk = AliPay(APP_ID, None, private_pem(app_key), public_pem(fake.key), sign_type="RSA2")
    number = "w_sdk_" + uuid.uuid4().hex[:12]
    biz = {
        "out_biz_no": number,
        "trans_amount": "12.30",
        "product_code": "TRANS_ACCOUNT_NO_PWD",
        "biz_scene": "DIRECT_TRANSFER",
        "payee_info": {"identity": PAYEE, "identity_type": "ALIPAY_LOGON_ID", "name": "张三"},
    }
    body = sdk.sign_data(sdk.build_body("alipay.fund.trans.uni.transfer", biz))
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            fake_url[1], content=body, headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        )
    made = sdk._verify_and_return_sync_response(answer.text, "alipay_fund_trans_uni_transfer_response")
    assert (made["out_biz_no"], made["status"]) == (number, "SUCCESS")
    assert fake.transfers[number].trans_amount == "12.30"
    assert await rail.query(number) == s.TransferAnswer(s.TRANSFER_PAID, code="SUCCESS")

    ours = rail._alipay._signed("alipay.fund.trans.uni.transfer", biz)  # the rail's request, as sent
    unsigned = {k: v for k, v in ours.items() if k != "sign"}
    assert dict(parse_qsl(sdk.sign_data(unsigned)))["sign"] == ours["sign"]


async def test_the_account_bill_finds_an_unknown_transfer_and_a_wrong_amount_not_a_paid_one(
    alipay_payouts: Stack, fake
) -> None:
    """Two days ago (a day whose bill is out whatever the hour): one withdrawal paid as asked, one
    whose transfer left for less, and one transfer our books never asked for."""
    when = (datetime.now(SHANGHAI) - timedelta(days=2)).replace(hour=12).strftime(FORMAT)
    made = []
    for _ in range(2):
        shop, wid = await _alipay_withdrawal(alipay_payouts)
        await p.wait_status(alipay_payouts, shop, wid, c.WITHDRAWAL_PAID)
        fake.transfers[wid].trans_date = when
        made.append(wid)
    paid, short = made
    fake.transfers[short].trans_amount = "9.40"
    unknown = "wd_" + uuid.uuid4().hex[:20]
    fake.transfers[unknown] = AlipayTransfer(unknown, "7.00", {}, "SUCCESS", trans_date=when)

    report = await p.reconcile(alipay_payouts, 3 * 86400, gateway="alipay")
    assert await p.findings(alipay_payouts, paid) == []
    assert await p.findings(alipay_payouts, short) == [("payout:alipay", "payout_amount_mismatch", "flag", 1)]
    assert await p.findings(alipay_payouts, unknown) == [("payout:alipay", "payout_unknown_transfer", "flag", 1)]
    assert f"payout:alipay {datetime.now(SHANGHAI).date()}" in report.not_ready  # today's bill: tomorrow
    assert (
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "signcustomer", "bill_date": when[:10]},
    ) in (fake.calls)
