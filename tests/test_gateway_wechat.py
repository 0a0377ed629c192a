"""WeChat Pay API v3: the adapter against a fake that speaks the real protocol, the wechatpayv3 SDK as a
second opinion, the whole saga, and forged or odd notifies through the real notify route."""

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import build_authorization

from miaofa.db.models import NotifyLog, OrderEvent, Payment
from miaofa.gateways.base import (GatewayError, GatewayRefused, InvalidNotify, PaymentRequest, PaymentState,
                                  Unsupported)
from miaofa.gateways.registry import build_gateways
from miaofa.gateways.wechat import WechatGateway
from miaofa.gateways.wechat_crypto import encrypt, rsa_sign, signed_message
from miaofa.settings import Settings
from tests.conftest import stack_settings
from tests.fakes.wechat import FakeWechat, Mode, WechatKeys, new_rsa_key, private_pem, public_pem
from tests.servers import bind, serve
from tests.stack import Stack, running_stack


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
async def gateway_on_fake(keys: WechatKeys, mode: Mode = "public_key", **kwargs: Any
                          ) -> AsyncIterator[tuple[WechatGateway, FakeWechat]]:
    async with running_fake(keys, mode) as (fake, primary, backup):
        gateway = WechatGateway(keys.settings(primary, backup, mode), **kwargs)
        try:
            yield gateway, fake
        finally:
            await gateway.aclose()


def _request(order_id: str, amount: int = 990, currency: str = "CNY") -> PaymentRequest:
    return PaymentRequest(order_id=order_id, amount_cents=amount, currency=currency, subject="月卡 ✓ " * 40,
                          notify_url="http://127.0.0.1:9/payments/wechat/notify",
                          expires_at=datetime(2030, 1, 1, 0, 15, tzinfo=timezone.utc))


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
        assert paid.paid_at is not None and abs(paid.paid_at - datetime.now(timezone.utc)) < timedelta(seconds=5)
        assert await gateway.close(order_id, order_id) == paid  # paid meanwhile: the close says so

        part = await gateway.refund(order_id, order_id, 300, "refund-part")
        assert (part.status, part.amount_cents, part.paid_at) == ("refunded", 300, paid.paid_at)
        assert await gateway.refund(order_id, order_id, 300, "refund-part") == part  # idempotent on out_refund_no
        rest = await gateway.refund(order_id, order_id, 690, "refund-rest")
        assert (rest.status, rest.amount_cents) == ("refunded", 690)
        with pytest.raises(GatewayRefused):
            await gateway.refund(order_id, order_id, 1, "refund-more")
        assert (await gateway.query(order_id, order_id)).status == "refunded"

        unpaid = _order_id()
        await gateway.create_payment(_request(unpaid))
        assert await gateway.close(unpaid, unpaid) == PaymentState(unpaid, unpaid, "closed", 990, "CNY")
        with pytest.raises(GatewayRefused):
            await gateway.refund(unpaid, unpaid, 990, "refund-unpaid")
        assert (await gateway.query("nosuchorder0", "")).status == "unknown"
        with pytest.raises(GatewayRefused):
            await gateway.create_payment(_request(_order_id(), currency="USD"))
        with pytest.raises(Unsupported):
            await gateway.statement(datetime.now(timezone.utc), datetime.now(timezone.utc))
        assert {path for _, _, path in fake.calls} >= {"/v3/pay/transactions/native",
                                                       f"/v3/pay/transactions/out-trade-no/{order_id}",
                                                       "/v3/refund/domestic/refunds"}
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
        forged = [fake.notify(fake.transaction(fake.trades[order_id]), key=other_key, serial=f"{i + 1:X}")
                  for i in range(20)]

        async def flood() -> list[str]:
            results = await asyncio.gather(*(gateway.verify_notify(h, b, {}) for b, h in forged),
                                           return_exceptions=True)
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
    assert (gateway.merchant_id, gateway.query_channels, gateway.has_statement, gateway.partial_refund) == \
        (keys.mchid, ("primary", "backup"), False, True)
