"""WeChat Pay API v3: the adapter against a fake that speaks the real protocol, the wechatpayv3 SDK as a
second opinion, the whole saga, and forged or odd notifies through the real notify route."""

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import aes_decrypt, build_authorization

from miaofa.db.models import NotifyLog, OrderEvent, Payment
from miaofa.gateways.base import (
    GatewayError,
    GatewayRefused,
    Notice,
    PaymentRequest,
    PaymentState,
    StatementNotReady,
)
from miaofa.gateways.registry import build_gateways
from miaofa.gateways.wechat import WechatGateway
from miaofa.gateways.wechat_crypto import encrypt
from miaofa.settings import Settings
from tests.conftest import stack_settings
from tests.helpers.fakes.wechat import CHINA, FakeWechat, Mode, Trade, WechatKeys, new_rsa_key, private_pem, public_pem
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack


@pytest.fixture(scope="module")
def keys() -> WechatKeys:
    return WechatKeys.generate()


@pytest.fixture(scope="module")
def other_key():
    return new_rsa_key()


@asynccontextmanager
async def running_fake(keys: WechatKeys, mode: Mode = "public_key") -> AsyncIterator[tuple[FakeWechat, str, str]]:
    fake = FakeWechat(keys, mode)
    async with serve(fake.app("primary"), bind()) as primary, serve(fake.app("backup"), bind()) as backup:
        yield fake, primary, backup


@asynccontextmanager
async def gateway_on_fake(
    keys: WechatKeys, mode: Mode = "public_key", **kwargs: Any
) -> AsyncIterator[tuple[WechatGateway, FakeWechat]]:
    async with running_fake(keys, mode) as (fake, primary, backup):
        gateway = WechatGateway(keys.settings(primary, backup, mode), **kwargs)
        try:
            yield gateway, fake
        finally:
            await gateway.aclose()


def _request(order_id: str, amount: int = 990, currency: str = "CNY") -> PaymentRequest:
    return PaymentRequest(
        order_id=order_id,
        amount_cents=amount,
        currency=currency,
        subject="月卡 ✓ " * 40,
        notify_url="http://127.0.0.1:9/payments/wechat/notify",
        expires_at=datetime(2030, 1, 1, 0, 15, tzinfo=UTC),
    )


def _order_id() -> str:
    return secrets.token_hex(10)


# ---- the adapter against the fake ---------------------------------------------------------


async def test_create_query_close_and_refund(keys: WechatKeys) -> None:
    async with gateway_on_fake(keys) as (gateway, fake):
        order_id = _order_id()
        created = await gateway.create_payment(_request(order_id))
        assert created.payment_id == order_id
        assert created.pay_url.startswith("weixin://wxpay/bizpayurl?pr=")
        trade = fake.trades[order_id]
        assert (trade.total, trade.currency, len(trade.description)) == (990, "CNY", 127)
        assert await gateway.create_payment(_request(order_id)) == created  # a retried step: the same QR code
        assert await gateway.query(order_id, order_id) == PaymentState(order_id, order_id, "pending", 990, "CNY")

        fake.drop_notifies = True
        await fake.pay(order_id)
        paid = await gateway.query(order_id, order_id)
        assert (paid.status, paid.amount_cents, paid.currency) == ("paid", 990, "CNY")
        assert paid.paid_at is not None and abs(paid.paid_at - datetime.now(UTC)) < timedelta(seconds=5)
        assert await gateway.close(order_id, order_id) == paid  # paid meanwhile: the close says so

        part = await gateway.refund(order_id, order_id, 300, "refund-part")
        assert (part.status, part.amount_cents, part.paid_at) == ("refunded", 300, paid.paid_at)
        assert await gateway.refund(order_id, order_id, 300, "refund-part") == part  # idempotent on out_refund_no
        rest = await gateway.refund(order_id, order_id, 690, "refund-rest")
        assert (rest.status, rest.amount_cents) == ("refunded", 690)
        with pytest.raises(GatewayRefused):
            await gateway.refund(order_id, order_id, 1, "refund-more")
        assert (await gateway.query(order_id, order_id)).status == "refunded"
        abnormal = _order_id()
        await gateway.create_payment(_request(abnormal))
        await fake.pay(abnormal)
        fake.refund_status = "ABNORMAL"  # the buyer's account cannot take it: a person must look
        with pytest.raises(GatewayRefused, match="ABNORMAL"):
            await gateway.refund(abnormal, abnormal, 990, "refund-abnormal")

        unpaid = _order_id()
        await gateway.create_payment(_request(unpaid))
        assert await gateway.close(unpaid, unpaid) == PaymentState(unpaid, unpaid, "closed", 990, "CNY")
        with pytest.raises(GatewayRefused):
            await gateway.refund(unpaid, unpaid, 990, "refund-unpaid")
        assert (await gateway.query("nosuchorder0", "")).status == "unknown"
        with pytest.raises(GatewayRefused):
            await gateway.create_payment(_request(_order_id(), currency="USD"))
        with pytest.raises(StatementNotReady):  # today's bill comes out tomorrow
            await gateway.statement(datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC))
        assert {path for _, _, path in fake.calls} >= {
            "/v3/pay/transactions/native",
            f"/v3/pay/transactions/out-trade-no/{order_id}",
            "/v3/refund/domestic/refunds",
        }
        assert fake.certificate_fetches == 0  # public-key mode never asks for certificates


async def test_backup_host_answers_when_the_primary_is_down(keys: WechatKeys) -> None:
    async with gateway_on_fake(keys) as (gateway, fake):
        order_id = _order_id()
        await gateway.create_payment(_request(order_id))
        fake.down = {"primary"}
        with pytest.raises(GatewayError, match="HTTP 503"):
            await gateway.query(order_id, order_id)
        assert (await gateway.query(order_id, order_id, "backup")).status == "pending"
        assert fake.calls[-1][0] == "backup"


async def test_answers_not_signed_by_wechat_are_errors(keys: WechatKeys, other_key) -> None:
    async with gateway_on_fake(keys) as (gateway, fake):
        order_id = _order_id()
        await gateway.create_payment(_request(order_id))
        fake.sign_answers = False
        with pytest.raises(GatewayError, match="not signed by WeChat"):
            await gateway.query(order_id, order_id)
        fake.sign_answers, fake.answer_key = True, other_key
        with pytest.raises(GatewayError, match="not signed by WeChat"):
            await gateway.query(order_id, order_id)
        with pytest.raises(GatewayError, match="not signed by WeChat"):
            await gateway.create_payment(_request(_order_id()))


async def test_requests_signed_by_another_merchant_key_are_refused(keys: WechatKeys, other_key) -> None:
    async with running_fake(keys) as (fake, primary, backup):
        gateway = WechatGateway(replace(keys, merchant_key=other_key).settings(primary, backup))
        try:
            with pytest.raises(GatewayError, match="HTTP 401 SIGN_ERROR"):
                await gateway.create_payment(_request(_order_id()))
        finally:
            await gateway.aclose()
        assert fake.trades == {}


async def test_certificate_mode_fetches_certificates_at_most_once_a_minute(keys: WechatKeys, other_key) -> None:
    now = [1000.0]
    async with gateway_on_fake(keys, "certificate", monotonic=lambda: now[0]) as (gateway, fake):
        order_id = _order_id()
        await gateway.create_payment(_request(order_id))  # its answer is checked with the fetched certificate
        assert fake.certificate_fetches == 1
        fake.drop_notifies = True  # nobody listens at the notify_url: the test hands it over itself
        await fake.pay(order_id)
        body, headers = fake.sent[-1]
        notice = await gateway.verify_notify(headers, body, {})
        assert (notice.status, notice.payment_id, notice.merchant_id) == ("paid", order_id, keys.mchid)
        # Unknown serials: the certificates are fetched again at most once a minute, however many arrive.
        forged = [
            fake.notify(fake.transaction(fake.trades[order_id]), key=other_key, serial=f"{i + 1:X}") for i in range(20)
        ]

        async def flood() -> list[str]:
            results = await asyncio.gather(
                *(gateway.verify_notify(h, b, {}) for b, h in forged), return_exceptions=True
            )
            return [str(r) for r in results]

        assert await flood() == ["unknown serial"] * 20
        assert fake.certificate_fetches == 1
        now[0] += 61
        assert await flood() == ["unknown serial"] * 20
        assert fake.certificate_fetches == 2
        now[0] += 30
        assert await flood() == ["unknown serial"] * 20
        assert fake.certificate_fetches == 2
        assert (await gateway.query(order_id, order_id)).status == "paid"  # a known serial: no fetch
        assert fake.certificate_fetches == 2


async def test_registry_builds_wechat_from_its_settings(keys: WechatKeys) -> None:
    settings = Settings(wechat=keys.settings("http://127.0.0.1:9", "http://127.0.0.1:9"), sim_secret="")
    gateways = build_gateways(settings)
    assert list(gateways) == ["wechat"]
    gateway = gateways["wechat"]
    assert (gateway.merchant_id, gateway.query_channels, gateway.has_statement, gateway.partial_refund) == (
        keys.mchid,
        ("primary", "backup"),
        True,
        True,
    )


async def test_a_wechat_nack_never_says_which_check_failed(keys: WechatKeys) -> None:
    """N16: the nack echoed the verification stage ("unknown serial", "signature test probe", "not ours")."""
    gateway = WechatGateway(keys.settings("http://127.0.0.1:9", "http://127.0.0.1:9"))
    try:
        for reason in ("unknown serial", "signature test probe", "not ours", "bad signature", "stale timestamp"):
            nack = gateway.nack(reason)
            assert (nack.status_code, nack.body, nack.media_type) == (
                400,
                '{"code": "FAIL", "message": "失败"}',
                "application/json",
            )
    finally:
        await gateway.aclose()


# ---- the wechatpayv3 SDK as a second opinion -----------------------------------------------


def _sdk(keys: WechatKeys, mode: Mode = "public_key", signer=None, cert_dir: str | None = None) -> WeChatPay:
    """The SDK as a merchant would set it up; signer: whose private key it signs with (default the merchant's)."""
    public = (
        dict(public_key=public_pem(keys.platform_key), public_key_id=keys.public_key_id) if mode == "public_key" else {}
    )
    return WeChatPay(
        WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=private_pem(signer or keys.merchant_key),
        cert_serial_no=keys.merchant_serial,
        appid=keys.appid,
        apiv3_key=keys.apiv3_key,
        cert_dir=cert_dir,
        **public,
    )


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
async def test_the_sdk_accepts_the_fakes_notifies_and_answers(keys: WechatKeys, mode: Mode, tmp_path) -> None:
    # Certificate mode: the SDK reads the platform certificate from its cert_dir instead of fetching it.
    (tmp_path / f"{keys.certificate_serial}.pem").write_bytes(keys.certificate.public_bytes(Encoding.PEM))
    sdk = _sdk(keys, mode, cert_dir=str(tmp_path))
    fake = FakeWechat(keys, mode)
    resource = {
        "appid": keys.appid,
        "mchid": keys.mchid,
        "out_trade_no": _order_id(),
        "trade_state": "SUCCESS",
        "amount": {"total": 990, "currency": "CNY"},
        "success_time": "2026-01-01T08:00:00+08:00",
    }
    body, headers = fake.notify(resource)
    assert sdk.callback(headers, body)["resource"] == resource
    assert (
        sdk.callback({**headers, "Wechatpay-Signature": fake.signed_headers(b"x")["Wechatpay-Signature"]}, body) is None
    )
    # And the fake's answer to a request the SDK signed is one the SDK verifies.
    async with serve(fake.app("primary"), bind()) as url:
        fake.trades["sdk-order-1"] = Trade("sdk-order-1", "d", "http://127.0.0.1:9/n", 990, "CNY", "weixin://x")
        path = f"/v3/pay/transactions/out-trade-no/sdk-order-1?mchid={keys.mchid}"
        auth = build_authorization(path, "GET", keys.mchid, keys.merchant_serial, sdk._core._private_key)
        async with httpx.AsyncClient() as http:
            answer = await http.get(url + path, headers={"Authorization": auth})
    assert (answer.status_code, answer.json()["trade_state"]) == (200, "NOTPAY")
    assert sdk._core._verify_signature(answer.headers, answer.text) is True


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
async def test_notifies_signed_with_the_sdk_verify_with_the_adapter(keys: WechatKeys, mode: Mode) -> None:
    # The SDK signs "a\nb\nc\n" for sign([a, b, c]): exactly WeChat's ts\nnonce\nbody\n, with the platform key.
    platform = _sdk(keys, signer=keys.platform_key)
    nonce, associated, ts = "5K8264ILTKCH", "transaction", str(int(time.time()))
    plain = {
        "appid": keys.appid,
        "mchid": keys.mchid,
        "out_trade_no": "a1b2c3d4e5f6a7b8c9d0",
        "transaction_id": "4200000000202601010000000001",
        "trade_state": "SUCCESS",
        "success_time": "2026-01-01T08:00:00+08:00",
        "amount": {"total": 990, "currency": "CNY"},
    }
    ciphertext = encrypt(keys.apiv3_key.encode(), nonce, associated, json.dumps(plain).encode())
    assert json.loads(aes_decrypt(nonce, ciphertext, associated, keys.apiv3_key)) == plain  # the SDK reads it back
    body = json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2026-01-01T08:00:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": associated,
                "nonce": nonce,
            },
        },
        ensure_ascii=False,
    )
    headers = {
        "Wechatpay-Serial": keys.public_key_id if mode == "public_key" else keys.certificate_serial,
        "Wechatpay-Signature": platform.sign([ts, "NONCE0123456789", body]),
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": "NONCE0123456789",
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    async with gateway_on_fake(keys, mode) as (gateway, _):
        notice = await gateway.verify_notify(headers, body.encode(), {})
    assert notice == Notice(
        payment_id="a1b2c3d4e5f6a7b8c9d0",
        order_id="a1b2c3d4e5f6a7b8c9d0",
        merchant_id=keys.mchid,
        status="paid",
        amount_cents=990,
        currency="CNY",
        paid_at=datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        event_id="EV-2018022511223320873",
    )


# ---- the whole saga ------------------------------------------------------------------------


@dataclass
class Shop:
    stack: Stack
    fake: FakeWechat

    async def order(self, keys: int = 1) -> dict[str, Any]:
        sku = await self.stack.product(keys)
        order = await self.stack.ordered(sku, gateway="wechat")
        order["sku"] = sku
        return order

    async def notify_outcomes(self, order: dict[str, Any]) -> list[tuple[str, str]]:
        async with self.stack.sessionmaker() as session:
            rows = await session.scalars(
                select(NotifyLog).where(NotifyLog.order_id == order["order_id"]).order_by(NotifyLog.id)
            )
            return [(row.outcome, row.detail) for row in rows]

    async def delivered_once(self, order: dict[str, Any]) -> bool:
        async with self.stack.sessionmaker() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(OrderEvent)
                .where(OrderEvent.order_id == order["order_id"], OrderEvent.stage == "delivered")
            )
        view = await self.stack.view(order)
        return (view["status"], count, len(view["keys"])) == ("delivered", 1, 1) and await self.stack.stock(
            order["sku"]
        ) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}


@asynccontextmanager
async def wechat_shop(
    dev_env, sessionmaker, sim_url, database_url, smtp, keys: WechatKeys, mode: Mode = "public_key"
) -> AsyncIterator[Shop]:
    async with (
        running_fake(keys, mode) as (fake, primary, backup),
        running_stack(
            dev_env,
            sessionmaker,
            sim_url,
            **stack_settings(
                database_url,
                smtp[0],
                payment_window_seconds=600,
                callback_grace_seconds=3,
                poll_interval_seconds=1,
                late_payment_watch_seconds=60,
                rejected_notify_log_per_second=1000,
            ),
            wechat=keys.settings(primary, backup, mode),
        ) as stack,
    ):
        yield Shop(stack, fake)


@pytest.fixture(scope="module")
async def module_shop(dev_env, sessionmaker, sim_url, database_url, smtp, keys) -> AsyncIterator[Shop]:
    async with wechat_shop(dev_env, sessionmaker, sim_url, database_url, smtp, keys) as shop:
        yield shop


@pytest.fixture
async def shop(module_shop: Shop) -> AsyncIterator[Shop]:
    yield module_shop
    module_shop.fake.down, module_shop.fake.drop_notifies = set(), False


async def test_paid_order_is_delivered_on_the_notify(shop: Shop) -> None:
    order = await shop.order()
    assert order["payment"]["payment_id"] == order["order_id"]
    assert order["payment"]["pay_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    answer = await shop.fake.pay(order["order_id"])
    assert answer is not None and (answer.status_code, answer.content) == (204, b"")
    await shop.stack.wait_status(order, "delivered")
    assert await shop.delivered_once(order)
    assert "notified" in await shop.stack.stages_of(order)
    assert await shop.notify_outcomes(order) == [("accepted", "paid")]


async def test_lost_notify_is_found_by_the_query(shop: Shop) -> None:
    order = await shop.order()
    shop.fake.drop_notifies = True
    assert await shop.fake.pay(order["order_id"]) is None
    await shop.stack.wait_status(order, "delivered")
    assert await shop.delivered_once(order)
    stages = await shop.stack.stages_of(order)
    assert "polled" in stages and "notified" not in stages
    assert await shop.notify_outcomes(order) == []


async def test_lost_notify_with_the_primary_host_down_is_found_on_the_backup(shop: Shop) -> None:
    order = await shop.order()
    shop.fake.drop_notifies, shop.fake.down = True, {"primary"}
    await shop.fake.pay(order["order_id"])
    await shop.stack.wait_status(order, "delivered")
    assert await shop.delivered_once(order)
    assert "polled_backup" in await shop.stack.stages_of(order)
    assert ("backup", "GET", f"/v3/pay/transactions/out-trade-no/{order['order_id']}") in shop.fake.calls


async def test_late_duplicated_notifies_after_the_query_deliver_once(shop: Shop) -> None:
    order = await shop.order()
    shop.fake.drop_notifies = True
    await shop.fake.pay(order["order_id"])
    await shop.stack.wait_status(order, "delivered")  # by the query; the notify comes late, twice at once
    body, headers = shop.fake.sent[-1]
    answers = await asyncio.gather(
        *(shop.stack.http.post("/payments/wechat/notify", content=body, headers=headers) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [204, 204]
    assert await shop.notify_outcomes(order) == [("duplicate", "paid"), ("duplicate", "paid")]
    assert await shop.delivered_once(order)


async def test_reordered_notifies_deliver_once(shop: Shop) -> None:
    order = await shop.order()
    shop.fake.drop_notifies = True
    await shop.fake.pay(order["order_id"])
    paid = shop.fake.sent[-1]
    refund = _refund_notify(shop.fake, Targets(order, order, paid), None)  # a refund notify overtaking the payment's
    for body, headers in (refund, paid, paid):
        answer = await shop.stack.http.post("/payments/wechat/notify", content=body, headers=headers)
        assert answer.status_code == 204
    await shop.stack.wait_status(order, "delivered")
    outcomes = await shop.notify_outcomes(order)
    assert outcomes[0] == ("ignored", "refunded")
    # Both may be accepted (the order has not taken the first yet) or duplicates (the query was first):
    # the order takes one proof, once.
    assert [detail for _, detail in outcomes[1:]] == ["paid", "paid"]
    assert {outcome for outcome, _ in outcomes[1:]} <= {"accepted", "duplicate"}
    assert await shop.delivered_once(order)


async def test_certificate_mode_saga(dev_env, sessionmaker, sim_url, database_url, smtp, keys) -> None:
    async with wechat_shop(dev_env, sessionmaker, sim_url, database_url, smtp, keys, "certificate") as shop:
        notified = await shop.order()
        answer = await shop.fake.pay(notified["order_id"])
        assert answer is not None and answer.status_code == 204
        polled = await shop.order()
        shop.fake.drop_notifies = True
        await shop.fake.pay(polled["order_id"])
        for order in (notified, polled):
            await shop.stack.wait_status(order, "delivered")
            assert await shop.delivered_once(order)
        assert await shop.notify_outcomes(notified) == [("accepted", "paid")]
        assert "polled" in await shop.stack.stages_of(polled)
        assert 1 <= shop.fake.certificate_fetches <= 2  # once by the API's adapter, once by the worker's


# ---- forged and odd notifies through the real notify route -----------------------------------


@dataclass
class Targets:
    pending: dict[str, Any]  # awaiting payment all along
    delivered: dict[str, Any]  # paid by its notify, delivered once
    delivered_notify: tuple[bytes, dict[str, str]]  # the notify that paid it


@pytest.fixture(scope="module")
async def targets(module_shop: Shop) -> Targets:
    pending, delivered = await module_shop.order(), await module_shop.order()
    await module_shop.fake.pay(delivered["order_id"])
    await module_shop.stack.wait_status(delivered, "delivered")
    return Targets(pending, delivered, module_shop.fake.sent[-1])


Build = Callable[[FakeWechat, Targets, Any], tuple[bytes, dict[str, str]]]


@dataclass(frozen=True)
class Attack:
    id: str
    build: Build
    status: int  # 400 is the nack {"code": "FAIL", "message": "失败"}, 204 the ack
    outcome: str  # the notify_log row's
    detail: str  # the row's detail: the reason is kept in our log, never in the nack
    order: str | None = None  # the order the row names: "pending", "delivered" or none


def _paid(fake: FakeWechat, order: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return fake.transaction(
        fake.trades[order["order_id"]],
        trade_state="SUCCESS",
        transaction_id="4200" + "0" * 24,
        success_time=datetime.now(CHINA).isoformat(timespec="seconds"),
        **changes,
    )


def _valid(fake: FakeWechat, order: dict[str, Any], **changes: Any) -> tuple[bytes, dict[str, str]]:
    return fake.notify(_paid(fake, order, **changes))


def _amount(total: Any, currency: str = "CNY") -> Build:
    return lambda f, t, k: _valid(f, t.pending, amount={"total": total, "currency": currency})


def _header(name: str, value: Callable[[FakeWechat, dict[str, str]], str | None]) -> Build:
    def build(f: FakeWechat, t: Targets, k: Any) -> tuple[bytes, dict[str, str]]:
        body, headers = _valid(f, t.pending)
        changed = value(f, headers)
        return body, {key: v for key, v in {**headers, name: changed}.items() if v is not None}

    return build


def _signed_body(body: bytes) -> Build:
    return lambda f, t, k: (body, {**f.signed_headers(body), "Content-Type": "application/json"})


def _envelope(
    f: FakeWechat, t: Targets, change: Callable[[dict[str, Any]], None], resign: bool
) -> tuple[bytes, dict[str, str]]:
    body, headers = _valid(f, t.pending)
    envelope = json.loads(body)
    change(envelope)
    new_body = json.dumps(envelope, ensure_ascii=False).encode()
    return new_body, ({**f.signed_headers(new_body), "Content-Type": "application/json"} if resign else headers)


def _flip_first_byte(envelope: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(envelope["resource"]["ciphertext"]))
    raw[0] ^= 1
    envelope["resource"]["ciphertext"] = base64.b64encode(raw).decode()


def _refund_notify(f: FakeWechat, t: Targets, k: Any) -> tuple[bytes, dict[str, str]]:
    no = t.delivered["order_id"]
    return f.notify(
        {
            "mchid": f.keys.mchid,
            "out_trade_no": no,
            "transaction_id": "4200" + "0" * 24,
            "out_refund_no": "refund-by-someone",
            "refund_id": "50300000000000000000000000000",
            "refund_status": "SUCCESS",
            "success_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "amount": {"total": 990, "refund": 990, "payer_total": 990, "payer_refund": 990},
            "user_received_account": "支付用户零钱",
        },
        event_type="REFUND.SUCCESS",
        original_type="refund",
    )


REJECTED = "rejected"
WECHAT_NACK = {"code": "FAIL", "message": "失败"}  # WeChat's documented failure answer
ATTACKS = [
    Attack(
        "bad-signature",
        _header("Wechatpay-Signature", lambda f, h: f.signed_headers(b"{}")["Wechatpay-Signature"]),
        400,
        REJECTED,
        "bad signature",
    ),
    Attack(
        "signed-by-another-key", lambda f, t, k: f.notify(_paid(f, t.pending), key=k), 400, REJECTED, "bad signature"
    ),
    Attack("empty-signature", _header("Wechatpay-Signature", lambda f, h: ""), 400, REJECTED, "malformed signature"),
    Attack(
        "unknown-public-key-id",
        lambda f, t, k: f.notify(_paid(f, t.pending), key=k, serial="PUB_KEY_ID_0999"),
        400,
        REJECTED,
        "unknown serial",
    ),
    Attack(
        "certificate-serial-in-public-key-mode",
        lambda f, t, k: f.notify(_paid(f, t.pending), key=k, serial="5157F09EFDC096DE15EBE81A47057A7232F1B8E1"),
        400,
        REJECTED,
        "unknown serial",
    ),
    Attack(
        "signtest-probe",
        _header("Wechatpay-Signature", lambda f, h: "WECHATPAY/SIGNTEST/" + h["Wechatpay-Signature"]),
        400,
        REJECTED,
        "signature test probe",
    ),
    Attack(
        "stale-timestamp",
        lambda f, t, k: f.notify(_paid(f, t.pending), timestamp=int(time.time()) - 301),
        400,
        REJECTED,
        "stale or future timestamp",
    ),
    Attack(
        "future-timestamp",
        lambda f, t, k: f.notify(_paid(f, t.pending), timestamp=int(time.time()) + 301),
        400,
        REJECTED,
        "stale or future timestamp",
    ),
    Attack(
        "no-timestamp", _header("Wechatpay-Timestamp", lambda f, h: None), 400, REJECTED, "missing signature headers"
    ),
    Attack(
        "other-signature-type",
        _header("Wechatpay-Signature-Type", lambda f, h: "WECHATPAY2-SM2-WITH-SM3"),
        400,
        REJECTED,
        "unsupported signature type",
    ),
    Attack(
        "order-A-resource-spliced-into-B-envelope",
        lambda f, t, k: _envelope(
            f, t, lambda e: e.update(resource=json.loads(t.delivered_notify[0])["resource"]), resign=False
        ),
        400,
        REJECTED,
        "bad signature",
    ),
    Attack(
        "tampered-ciphertext-gcm-tag-fails",
        lambda f, t, k: _envelope(f, t, lambda e: _flip_first_byte(e), resign=True),
        400,
        REJECTED,
        "resource does not decrypt",
    ),
    Attack(
        "encrypted-with-another-apiv3-key",
        lambda f, t, k: f.notify(_paid(f, t.pending), apiv3_key="k" * 32),
        400,
        REJECTED,
        "resource does not decrypt",
    ),
    Attack(
        "wrong-app-id", lambda f, t, k: _valid(f, t.pending, appid="wx0000000000000000"), 400, REJECTED, "wrong app id"
    ),
    Attack("amount-as-float", _amount(9.9), 400, REJECTED, "bad amount.total"),
    Attack("amount-as-float-string", _amount("9.90"), 400, REJECTED, "bad amount.total"),
    Attack("amount-as-string", _amount("990"), 400, REJECTED, "bad amount.total"),
    Attack("amount-as-array", _amount([990]), 400, REJECTED, "bad amount.total"),
    Attack("amount-as-bool", _amount(True), 400, REJECTED, "bad amount.total"),
    Attack("amount-huge", _amount(10**30), 400, REJECTED, "bad amount.total"),
    Attack("amount-negative", _amount(-990), 400, REJECTED, "bad amount.total"),
    Attack(
        "NUL-in-out-trade-no",
        lambda f, t, k: _valid(f, t.pending, out_trade_no=t.pending["order_id"] + "\x00"),
        400,
        REJECTED,
        "bad out_trade_no",
    ),
    Attack(
        "non-ASCII-out-trade-no",
        lambda f, t, k: _valid(f, t.pending, out_trade_no="订单" + t.pending["order_id"]),
        400,
        REJECTED,
        "bad out_trade_no",
    ),
    Attack(
        "huge-out-trade-no",
        lambda f, t, k: _valid(f, t.pending, out_trade_no="a" * 20000),
        400,
        REJECTED,
        "bad out_trade_no",
    ),
    Attack(
        "NUL-in-mchid", lambda f, t, k: _valid(f, t.pending, mchid=f.keys.mchid + "\x00"), 400, REJECTED, "bad mchid"
    ),
    Attack("deeply-nested-body", _signed_body(b"[" * 20000 + b"]" * 20000), 400, REJECTED, "malformed JSON"),
    Attack(
        "amount-with-5000-digits",
        lambda f, t, k: f.notify(
            json.dumps(_paid(f, t.pending, amount={"total": 990, "currency": "CNY"}))
            .replace('"total": 990', '"total": 1' + "0" * 4999)
            .encode()
        ),
        400,
        REJECTED,
        "malformed JSON",
    ),
    Attack("body-not-UTF-8", _signed_body(b'{"id":"\xff\xfe"}'), 400, REJECTED, "malformed JSON"),
    Attack(
        "unsupported-event-type",
        lambda f, t, k: f.notify(_paid(f, t.pending), event_type="TRANSACTION.CLOSED"),
        400,
        REJECTED,
        "unsupported event type",
    ),
    # Signed by WeChat and decrypted: judged against the order (miaofa.payments.proof.judge).
    Attack("wrong-amount", _amount(1), 204, "stray", "wrong_amount", "pending"),
    Attack("wrong-currency", _amount(990, "USD"), 204, "stray", "wrong_amount", "pending"),
    Attack(
        "wrong-mchid",
        lambda f, t, k: _valid(f, t.pending, mchid="1900000999"),
        400,
        "foreign",
        "another merchant",
        "pending",
    ),
    Attack(
        "unknown-order", lambda f, t, k: _valid(f, t.pending, out_trade_no=_order_id()), 204, "stray", "unknown_order"
    ),
    Attack(
        "replay-of-order-A-notify-meant-for-B",
        lambda f, t, k: t.delivered_notify,
        204,
        "duplicate",
        "paid",
        "delivered",
    ),
    Attack(
        "trade-state-NOTPAY",
        lambda f, t, k: f.notify(f.transaction(f.trades[t.pending["order_id"]])),
        204,
        "ignored",
        "pending",
        "pending",
    ),
    Attack(
        "trade-state-CLOSED",
        lambda f, t, k: f.notify(f.transaction(f.trades[t.pending["order_id"]], trade_state="CLOSED")),
        204,
        "ignored",
        "closed",
        "pending",
    ),
    Attack(
        "trade-state-PAYERROR",
        lambda f, t, k: f.notify(f.transaction(f.trades[t.pending["order_id"]], trade_state="PAYERROR")),
        204,
        "ignored",
        "closed",
        "pending",
    ),
    Attack("REFUND.SUCCESS-after-delivery", _refund_notify, 204, "ignored", "refunded", "delivered"),
    Attack(
        "duplicate-paid-notify-after-delivery",
        lambda f, t, k: _valid(f, t.delivered),
        204,
        "duplicate",
        "paid",
        "delivered",
    ),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_forged_and_odd_notifies_change_nothing(
    module_shop: Shop, targets: Targets, other_key, attack: Attack
) -> None:
    shop = module_shop
    body, headers = attack.build(shop.fake, targets, other_key)
    async with shop.stack.sessionmaker() as session:
        last = await session.scalar(select(func.coalesce(func.max(NotifyLog.id), 0)))
    answer = await shop.stack.http.post("/payments/wechat/notify", content=body, headers=headers)

    if attack.status == 400:
        # One fixed nack whatever failed: the forger learns nothing of which check stopped them.
        assert (answer.status_code, answer.json()) == (400, WECHAT_NACK)
    else:
        assert (answer.status_code, answer.content) == (204, b"")
    async with shop.stack.sessionmaker() as session:
        rows = list(await session.scalars(select(NotifyLog).where(NotifyLog.id > last, NotifyLog.gateway == "wechat")))
        payment = await session.scalar(select(Payment).where(Payment.order_id == targets.pending["order_id"]))
    named = getattr(targets, attack.order)["order_id"] if attack.order else None
    assert [(row.outcome, row.detail, row.order_id) for row in rows] == [(attack.outcome, attack.detail, named)]
    # Nothing changed: the unpaid order still waits, the paid one was delivered once.
    view = await shop.stack.view(targets.pending)
    assert view["status"] == "awaiting_payment" and "paid" not in [e["stage"] for e in view["timeline"]]
    assert payment is not None and payment.status == "pending"
    assert await shop.stack.stock(targets.pending["sku"]) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
    assert await shop.delivered_once(targets.delivered)
