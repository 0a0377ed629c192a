"""Direct settlement: a merchant's own gateway credentials, its orders paid, polled and refunded with
them, its notifies verified with its keys only, and its secrets nowhere but the vault."""

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from sqlalchemy import func, select
from temporalio.api.common.v1 import Payload

from miaofa import contract as c
from miaofa.db.models import AuditLog, MerchantGatewayCredential, NotifyLog, ReconcileFinding
from miaofa.direct import credentials
from miaofa.gateways.config import AlipaySettings, StripeSettings
from miaofa.gateways.sim_protocol import SIGNATURE_HEADER, TIMESTAMP_HEADER, make_signature
from miaofa.temporal.client import codec_for
from tests.api.test_merchants import Shop, shop_product
from tests.cli.test_notify_cli import _cli
from tests.conftest import SIM_CONTROL_TOKEN, stack_settings
from tests.helpers.fakes.alipay import FakeAlipay, new_key, now_text, private_pem
from tests.helpers.fakes.epay import EpayOrder, FakeEpay
from tests.helpers.fakes.epusdt import FakeEpusdt, go_json
from tests.helpers.fakes.stripe import FakeStripe
from tests.helpers.fakes.wechat import FakeWechat, WechatKeys, new_rsa_key, self_signed_certificate
from tests.helpers.fakes.wechat import private_pem as wechat_private_pem
from tests.helpers.fakes.wechat import public_pem as wechat_public_pem
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack

STRIPE_B = ("sk_test_merchant_b_" + secrets.token_hex(8), "whsec_merchant_b_" + secrets.token_hex(8))
STRIPE_PLATFORM = ("sk_test_platform_" + secrets.token_hex(8), "whsec_platform_" + secrets.token_hex(8))


@pytest.fixture(scope="module")
async def stripe_b() -> AsyncIterator[FakeStripe]:
    """Merchant B's Stripe account. The API host is the platform's setting, shared by every account."""
    fake = FakeStripe(*STRIPE_B)
    async with serve(fake.app, bind()) as url:
        fake.api_base = url
        yield fake


APP_KEY_B, APP_KEY_A = new_key(), new_key()


@pytest.fixture(scope="module")
async def alipay_b() -> AsyncIterator[FakeAlipay]:
    """Merchant B's Alipay app. The gateway host is the platform's setting, shared by every app."""
    fake = FakeAlipay("2021000000000b01", APP_KEY_B.public_key(), "2088000000000b01")
    async with serve(fake.app, bind()) as url:
        fake.url = url + "/gateway.do"  # type: ignore[attr-defined]
        yield fake


WECHAT_B = WechatKeys.generate()
WECHAT_A = WechatKeys(
    new_rsa_key(), (platform := new_rsa_key()), self_signed_certificate(platform, 7), mchid="1900000a01", appid="wxa01"
)


@pytest.fixture(scope="module")
async def wechat_b() -> AsyncIterator[FakeWechat]:
    """Merchant B's WeChat Pay account. The API hosts are the platform's settings, shared by every account."""
    fake = FakeWechat(WECHAT_B)
    async with serve(fake.app("primary"), bind()) as primary, serve(fake.app("backup"), bind()) as backup:
        fake.urls = (primary, backup)  # type: ignore[attr-defined]
        yield fake


@pytest.fixture(scope="module")
async def stack(
    dev_env, sessionmaker, sim_url, database_url, smtp, stripe_b, alipay_b, wechat_b
) -> AsyncIterator[Stack]:
    """The dev stack's clocks; merchants' own gateway hosts may be on loopback (the protocol fakes)."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=60,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
        rejected_notify_log_per_second=1000,
        webhook_allow_networks="127.0.0.0/8",
        stripe=StripeSettings(
            secret_key=STRIPE_PLATFORM[0], webhook_secret=STRIPE_PLATFORM[1], api_base=stripe_b.api_base
        ),
        alipay=AlipaySettings(
            app_id="2021000000000p01",
            private_key=private_pem(new_key()),
            alipay_public_key=alipay_b.public_key_text,
            seller_id="2088000000000p01",
            gateway_url=alipay_b.url,  # type: ignore[attr-defined]
        ),
        wechat=WechatKeys.generate().settings(*wechat_b.urls),  # type: ignore[attr-defined]
    ) as running:
        yield running


@dataclass
class SimAccount:
    merchant_id: str
    secret: str

    @property
    def fields(self) -> dict[str, str]:
        return {"merchant_id": self.merchant_id, "secret": self.secret}


async def direct_shop(stack: Stack, settlement: str = "direct") -> Shop:
    slug = "d-" + uuid.uuid4().hex[:10]
    made = await stack.http.post(
        "/admin/merchants", headers=stack.admin, json={"slug": slug, "name": "Direct", "settlement": settlement}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return Shop(slug, body["merchant_id"], {"Authorization": f"Bearer {body['owner_token']}"})


async def sim_account(stack: Stack) -> SimAccount:
    """The merchant's own account at the simulator (a second account of the same gateway)."""
    account = SimAccount("acct-" + uuid.uuid4().hex[:8], "msec_" + secrets.token_urlsafe(24))
    opened = await stack.sim.post(
        "/control/merchants", json=account.fields, headers={"Authorization": f"Bearer {SIM_CONTROL_TOKEN}"}
    )
    assert opened.status_code == 201, opened.text
    assert account.secret not in opened.text
    return account


async def with_simulator(stack: Stack) -> tuple[Shop, SimAccount]:
    shop, account = await direct_shop(stack), await sim_account(stack)
    saved = await stack.http.put("/merchant/gateways/simulator", headers=shop.owner, json=account.fields)
    assert saved.status_code == 200, saved.text
    return shop, account


async def sim_payment(stack: Stack, payment_id: str, secret: str) -> httpx.Response:
    return await stack.sim.get(f"/api/payments/{payment_id}", headers={"Authorization": f"Bearer {secret}"})


async def decoded_history(stack: Stack, order: dict[str, Any]) -> bytes:
    """Every payload of the order's history, decrypted, with the raw history: what Temporal holds."""
    history = await stack.handle(order).fetch_history()
    payloads: list[Payload] = []

    def walk(message: Message) -> None:
        if isinstance(message, Payload):
            payloads.append(message)
            return
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if isinstance(value, Message):
                items = [value]
            elif field.message_type.GetOptions().map_entry:
                items = [v for v in value.values() if isinstance(v, Message)]
            else:
                items = list(value)
            for item in items:
                walk(item)

    for event in history.events:
        walk(event)
    decoded = await codec_for(stack.vault).decode(payloads)
    return history.to_json().encode() + b"".join(p.data for p in decoded)


# ---- the saga on the merchant's own account ------------------------------------------------


async def test_a_direct_merchants_order_runs_on_its_own_credentials(stack: Stack, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    shop, account = await direct_shop(stack), await sim_account(stack)
    saved = await stack.http.put("/merchant/gateways/simulator", headers=shop.owner, json=account.fields)
    assert saved.status_code == 200, saved.text
    assert saved.json()["checked"] is True
    assert saved.json()["summary"] == f"{account.merchant_id} secret …{account.secret[-4:]}"
    listed = await stack.http.get("/merchant/gateways", headers=shop.owner)
    assert [g["gateway"] for g in listed.json()["gateways"]] == ["simulator"]
    answers += [saved.text, listed.text]

    sku = await shop_product(stack, shop, [f"K-{uuid.uuid4().hex[:8]}" for _ in range(3)])
    first = await stack.ordered(sku, merchant=shop.slug)
    answers.append(json.dumps(first))
    payment_id = first["payment"]["payment_id"]
    # The payment lives in the merchant's account: the platform's key cannot even see it.
    assert (await sim_payment(stack, payment_id, account.secret)).json()["status"] == "pending"
    assert (await sim_payment(stack, payment_id, stack.settings.sim_secret)).status_code == 404

    before = await stack.last_notify_id()
    await stack.pay(first)  # the simulator notifies /payments/simulator/notify/m/<merchant>, signed with its key
    view = await stack.wait_status(first, "delivered")
    answers.append(json.dumps(view))
    async with stack.sessionmaker() as session:
        outcomes = list(
            await session.scalars(
                select(NotifyLog.outcome).where(NotifyLog.id > before, NotifyLog.order_id == first["order_id"])
            )
        )
    assert "accepted" in outcomes

    # A lost notify: the order asks the gateway itself, with the merchant's key.
    await stack.control(notify="drop")
    second = await stack.ordered(sku, merchant=shop.slug)
    await stack.pay(second)
    answers.append(json.dumps(await stack.wait_status(second, "delivered")))
    await stack.control(notify="normal")

    refunded = await stack.http.post(
        f"/merchant/orders/{first['order_id']}/refund", headers=shop.owner, json={"reason": "changed mind"}
    )
    assert refunded.status_code == 200, refunded.text
    answers.append(json.dumps(await stack.wait_status(first, "refunded")))
    assert (await sim_payment(stack, payment_id, account.secret)).json()["status"] == "refunded"

    # The secret is nowhere: not in an answer, a log line, the audit log or a workflow's history.
    for order in (first, second):
        history = await decoded_history(stack, order)
        assert b'"gateway":"simulator"' in history  # the payloads were decoded: the search means something
        assert account.secret.encode() not in history
    answers.append((await stack.http.get("/merchant/gateways", headers=shop.owner)).text)
    assert not [a for a in answers if account.secret in a]
    assert not [r for r in caplog.records if account.secret in r.getMessage()]
    async with stack.sessionmaker() as session:
        audited = list(await session.scalars(select(AuditLog).where(AuditLog.merchant_id == shop.merchant_id)))
    saves = [a for a in audited if a.action == "merchant.gateway_save"]
    assert len(saves) == 1 and saves[0].actor.endswith("owner")
    assert not [a for a in audited if account.secret in json.dumps(a.detail) + a.target]


# ---- whose keys speak for which order -------------------------------------------------------


def _sim_notice(order: dict[str, Any], merchant_id: str) -> dict[str, Any]:
    return {
        "payment_id": order["payment"]["payment_id"],
        "order_id": order["order_id"],
        "merchant_id": merchant_id,
        "status": "paid",
        "amount_cents": order["amount_cents"],
        "currency": order["currency"],
        "paid_at": "2026-01-01T00:00:00+00:00",
    }


def _sim_signed(payload: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    ts = int(time.time())
    return body, {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: make_signature(secret, ts, body)}


async def test_one_merchants_keys_never_speak_for_another_merchants_order(stack: Stack) -> None:
    shop_a, account_a = await with_simulator(stack)
    shop_b, account_b = await with_simulator(stack)
    order_b = await stack.ordered(await shop_product(stack, shop_b, ["B-KEY-1"]), merchant=shop_b.slug)
    platform_sku = await stack.product(1)
    platform_order = await stack.ordered(platform_sku)
    before = await stack.last_notify_id()
    forged = {
        # A's own key, at A's own URL, for B's order: verified, and still not A's order.
        "a's key at a's url": (f"/m/{shop_a.merchant_id}", _sim_notice(order_b, account_a.merchant_id), account_a),
        # A's key at B's URL: B's keys do not verify it.
        "a's key at b's url": (f"/m/{shop_b.merchant_id}", _sim_notice(order_b, account_b.merchant_id), account_a),
        # The platform's key, at the platform's URL, for a direct merchant's order.
        "platform key for b": ("", _sim_notice(order_b, stack.settings.sim_merchant_id), None),
        # B's genuine key at the platform's URL.
        "b's key at the platform url": ("", _sim_notice(order_b, account_b.merchant_id), account_b),
        # B's key at B's URL, for a platform merchant's order.
        "b's key for a platform order": (
            f"/m/{shop_b.merchant_id}",
            _sim_notice(platform_order, account_b.merchant_id),
            account_b,
        ),
    }
    for name, (suffix, notice, account) in forged.items():
        body, headers = _sim_signed(notice, account.secret if account else stack.settings.sim_secret)
        answer = await stack.http.post(f"/payments/simulator/notify{suffix}", content=body, headers=headers)
        assert (name, answer.status_code) == (name, 400)
    unknown = await stack.http.post(f"/payments/simulator/notify/m/{shop_a.merchant_id[:-1]}x", content=b"{}")
    assert unknown.status_code == 404
    for order in (order_b, platform_order):
        assert (await stack.view(order))["status"] == "awaiting_payment"
    async with stack.sessionmaker() as session:
        logged = list(await session.scalars(select(NotifyLog).where(NotifyLog.id > before).order_by(NotifyLog.id)))
    assert [row.outcome for row in logged] == ["foreign", "rejected", "foreign", "rejected", "foreign"]
    assert {row.order_id for row in logged} == {None}  # nothing lands on the orders' own notify logs
    await stack.pay(order_b)  # the real payment, in B's account, still goes through
    await stack.wait_status(order_b, "delivered")


EPAY_NOTIFY = "/payments/epay/notify/m/"


@pytest.fixture(scope="module")
async def operators() -> AsyncIterator[tuple[FakeEpay, FakeEpay]]:
    """Two epay operators' accounts, one per merchant."""
    a, b = (
        FakeEpay("2001", "epay-key-a-" + secrets.token_hex(8)),
        FakeEpay("2002", "epay-key-b-" + secrets.token_hex(8)),
    )
    async with serve(a.app, bind()) as url_a, serve(b.app, bind()) as url_b:
        a.url, b.url = url_a, url_b  # type: ignore[attr-defined]
        yield a, b
    await a.aclose()
    await b.aclose()


async def _epay_shop(stack: Stack, operator: FakeEpay) -> Shop:
    shop = await direct_shop(stack)
    fields = {"api_url": operator.url + "/", "pid": operator.pid, "key": operator.key}  # type: ignore[attr-defined]
    bad = await stack.http.put("/merchant/gateways/epay", headers=shop.owner, json={**fields, "key": "wrong-key-0000"})
    assert (bad.status_code, bad.json()["error"]) == (422, "bad_credentials")
    assert "wrong-key" not in bad.text
    saved = await stack.http.put("/merchant/gateways/epay", headers=shop.owner, json=fields)
    assert saved.status_code == 200, saved.text
    assert operator.key not in saved.text
    return shop


async def test_epay_a_notify_signed_with_merchant_a_key_for_merchant_b_changes_nothing(
    stack: Stack, operators: tuple[FakeEpay, FakeEpay]
) -> None:
    op_a, op_b = operators
    shop_a, shop_b = await _epay_shop(stack, op_a), await _epay_shop(stack, op_b)
    order = await stack.ordered(await shop_product(stack, shop_b, ["EB-1"]), merchant=shop_b.slug, gateway="epay")
    async with httpx.AsyncClient() as browser:  # the buyer opens B's signed link at B's operator
        assert (await browser.get(order["payment"]["pay_url"])).status_code == 200
    assert f"{EPAY_NOTIFY}{shop_b.merchant_id}" in op_b.orders[order["order_id"]].notify_url
    at_b = op_b.orders[order["order_id"]]
    as_if_a = EpayOrder("77", at_b.out_trade_no, at_b.type, at_b.name, at_b.money, "", "")
    for url, status in (
        (f"{EPAY_NOTIFY}{shop_a.merchant_id}", 400),  # A's account, B's order
        (f"{EPAY_NOTIFY}{shop_b.merchant_id}", 400),  # A's signature at B's URL
        ("/payments/epay/notify", 404),  # no platform epay at all
    ):
        answer = await stack.http.get(url, params=op_a.notify_fields(as_if_a))
        assert (url, answer.status_code) == (url, status)
    assert (await stack.view(order))["status"] == "awaiting_payment"
    assert (await op_b.pay(order["order_id"])).text == "success"  # B's own notify, at B's URL
    await stack.wait_status(order, "delivered")


async def test_stripe_a_webhook_signed_with_merchant_a_secret_for_merchant_b_changes_nothing(
    stack: Stack, stripe_b: FakeStripe
) -> None:
    shop_a, shop_b = await direct_shop(stack), await direct_shop(stack)
    fields_a = {
        "secret_key": "sk_test_merchant_a_" + secrets.token_hex(8),
        "webhook_secret": "whsec_merchant_a_" + secrets.token_hex(8),
    }
    # A's key is not an account at this Stripe: the harmless query says so, and nothing is saved.
    refused = await stack.http.put("/merchant/gateways/stripe", headers=shop_a.owner, json=fields_a)
    assert (refused.status_code, refused.json()["error"]) == (422, "bad_credentials")
    assert fields_a["secret_key"] not in refused.text
    async with stack.sessionmaker.begin() as session:  # A's webhook secret verifies A's notifies all the same
        await credentials.save(
            session,
            stack.vault,
            shop_a.merchant_id,
            "stripe",
            credentials.check("stripe", fields_a, stack.settings.stripe),
            "test",
        )
    saved = await stack.http.put(
        "/merchant/gateways/stripe",
        headers=shop_b.owner,
        json={"secret_key": STRIPE_B[0], "webhook_secret": STRIPE_B[1]},
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["checked"] is True and STRIPE_B[0] not in saved.text and STRIPE_B[1] not in saved.text
    stripe_b.webhook_url = str(stack.http.base_url) + f"/payments/stripe/notify/m/{shop_b.merchant_id}"
    assert saved.json()["notify_url"].endswith(f"/payments/stripe/notify/m/{shop_b.merchant_id}")

    order = await stack.ordered(await shop_product(stack, shop_b, ["SB-1"]), merchant=shop_b.slug, gateway="stripe")
    session_id = order["payment"]["payment_id"]
    session = {**stripe_b.sessions[session_id], "status": "complete", "payment_status": "paid"}
    event = stripe_b.event("checkout.session.completed", {**session, "payment_intent": "pi_test_forged"})
    body = stripe_b.body(event)
    for url, secret in (
        (f"/payments/stripe/notify/m/{shop_a.merchant_id}", fields_a["webhook_secret"]),  # A's account, B's order
        (f"/payments/stripe/notify/m/{shop_b.merchant_id}", fields_a["webhook_secret"]),  # A's signature at B's URL
        ("/payments/stripe/notify", STRIPE_PLATFORM[1]),  # the platform's secret, B's order
        ("/payments/stripe/notify", STRIPE_B[1]),  # B's secret at the platform's URL
    ):
        headers = {"Stripe-Signature": stripe_b.sign(body, secret=secret), "Content-Type": "application/json"}
        answer = await stack.http.post(url, content=body, headers=headers)
        assert (url, answer.status_code) == (url, 400)
    assert (await stack.view(order))["status"] == "awaiting_payment"
    await stripe_b.pay(session_id)  # B's own webhook, at B's URL
    await stack.wait_status(order, "delivered")


@pytest.fixture(scope="module")
async def usdt_servers() -> AsyncIterator[tuple[FakeEpusdt, FakeEpusdt]]:
    """Two epusdt servers, one per merchant (each runs its own)."""
    a, b = FakeEpusdt("usdt-token-a-" + secrets.token_hex(8)), FakeEpusdt("usdt-token-b-" + secrets.token_hex(8))
    async with serve(a.app, bind()) as url_a, serve(b.app, bind()) as url_b:
        a.url, b.url = url_a, url_b
        yield a, b
    await a.aclose()
    await b.aclose()


async def test_epusdt_a_callback_signed_with_merchant_a_token_for_merchant_b_changes_nothing(
    stack: Stack, usdt_servers: tuple[FakeEpusdt, FakeEpusdt]
) -> None:
    server_a, server_b = usdt_servers
    shops = []
    for server in usdt_servers:
        shop = await direct_shop(stack)
        fields = {"api_url": server.url, "api_token": server.api_token}
        saved = await stack.http.put("/merchant/gateways/epusdt", headers=shop.owner, json=fields)
        assert saved.status_code == 200, saved.text
        assert saved.json()["checked"] is False  # epusdt has no harmless authenticated call
        shops.append(shop)
    shop_a, shop_b = shops
    order = await stack.ordered(await shop_product(stack, shop_b, ["UB-1"]), merchant=shop_b.slug, gateway="epusdt")
    trade = server_b.trade_of(order["order_id"])
    assert trade.notify_url.endswith(f"/payments/epusdt/notify/m/{shop_b.merchant_id}")
    paid = {"status": 2, "block_transaction_id": "0xforged"}
    forged = go_json(server_b.callback_fields(trade, api_token=server_a.api_token, **paid))
    for url, status in (
        (f"/payments/epusdt/notify/m/{shop_a.merchant_id}", 400),  # A's account, B's order
        (f"/payments/epusdt/notify/m/{shop_b.merchant_id}", 400),  # A's signature at B's URL
        ("/payments/epusdt/notify", 404),  # no platform epusdt at all
    ):
        answer = await stack.http.post(url, content=forged, headers={"Content-Type": "application/json"})
        assert (url, answer.status_code) == (url, status)
    assert (await stack.view(order))["status"] == "awaiting_payment"
    assert (await server_b.pay(trade.trade_id)).text == "ok"  # B's own callback, at B's URL
    await stack.wait_status(order, "delivered")


def _alipay_fields(app_id: str, app_key: Any, alipay_public_key: str, seller_id: str) -> dict[str, str]:
    return {
        "app_id": app_id,
        "private_key": private_pem(app_key),
        "alipay_public_key": alipay_public_key,
        "seller_id": seller_id,
    }


async def test_alipay_a_notify_signed_with_merchant_a_key_for_merchant_b_changes_nothing(
    stack: Stack, alipay_b: FakeAlipay
) -> None:
    alipay_a = FakeAlipay("2021000000000a01", APP_KEY_A.public_key(), "2088000000000a01")  # only signs
    shop_a, shop_b = await direct_shop(stack), await direct_shop(stack)
    fields_a = _alipay_fields(alipay_a.app_id, APP_KEY_A, alipay_a.public_key_text, alipay_a.seller_id)
    refused = await stack.http.put("/merchant/gateways/alipay", headers=shop_a.owner, json=fields_a)
    assert (refused.status_code, refused.json()["error"]) == (422, "bad_credentials")  # not an app of this host
    assert "PRIVATE KEY" not in refused.text
    async with stack.sessionmaker.begin() as session:  # A's Alipay key still verifies A's own notifies
        creds = credentials.check("alipay", fields_a, stack.settings.alipay)
        await credentials.save(session, stack.vault, shop_a.merchant_id, "alipay", creds, "test")
    fields_b = _alipay_fields(alipay_b.app_id, APP_KEY_B, alipay_b.public_key_text, alipay_b.seller_id)
    saved = await stack.http.put("/merchant/gateways/alipay", headers=shop_b.owner, json=fields_b)
    assert saved.status_code == 200, saved.text
    assert saved.json()["checked"] is True and "PRIVATE" not in saved.text

    order = await stack.ordered(await shop_product(stack, shop_b, ["AB-1"]), merchant=shop_b.slug, gateway="alipay")
    async with httpx.AsyncClient() as browser:  # the buyer opens B's cashier: the trade exists at Alipay
        assert (await browser.get(order["payment"]["pay_url"])).status_code == 200
    trade = alipay_b.trades[order["order_id"]]
    assert trade.notify_url.endswith(f"/payments/alipay/notify/m/{shop_b.merchant_id}")
    paid = {"trade_status": "TRADE_SUCCESS", "gmt_payment": now_text()}
    forged = alipay_a.sign(alipay_a.notify_params(trade, **paid))  # A's app, seller and key; B's order
    for url in (
        f"/payments/alipay/notify/m/{shop_a.merchant_id}",  # A's account, B's order
        f"/payments/alipay/notify/m/{shop_b.merchant_id}",  # A's signature at B's URL
        "/payments/alipay/notify",  # the platform's app
    ):
        answer = await stack.http.post(
            url, content=alipay_a.form(forged), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert (url, answer.status_code) == (url, 400)
    assert (await stack.view(order))["status"] == "awaiting_payment"
    sent = await alipay_b.pay(order["order_id"])  # B's own notify, at B's URL
    assert sent is not None and sent.body == "success"
    await stack.wait_status(order, "delivered")


def now_text_cn() -> str:
    return datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds")


def _wechat_fields(keys: WechatKeys) -> dict[str, str]:
    return {
        "mchid": keys.mchid,
        "appid": keys.appid,
        "private_key": wechat_private_pem(keys.merchant_key),
        "cert_serial_no": keys.merchant_serial,
        "apiv3_key": keys.apiv3_key,
        "public_key": wechat_public_pem(keys.platform_key),
        "public_key_id": keys.public_key_id,
    }


async def test_wechat_a_notify_for_merchant_a_about_merchant_b_order_changes_nothing(
    stack: Stack, wechat_b: FakeWechat
) -> None:
    shop_a, shop_b = await direct_shop(stack), await direct_shop(stack)
    refused = await stack.http.put("/merchant/gateways/wechat", headers=shop_a.owner, json=_wechat_fields(WECHAT_A))
    assert (refused.status_code, refused.json()["error"]) == (422, "bad_credentials")  # no such merchant there
    assert WECHAT_A.apiv3_key not in refused.text
    async with stack.sessionmaker.begin() as session:  # A's keys still verify A's own notifies
        creds = credentials.check("wechat", _wechat_fields(WECHAT_A), stack.settings.wechat)
        await credentials.save(session, stack.vault, shop_a.merchant_id, "wechat", creds, "test")
    saved = await stack.http.put("/merchant/gateways/wechat", headers=shop_b.owner, json=_wechat_fields(WECHAT_B))
    assert saved.status_code == 200, saved.text
    assert saved.json()["checked"] is True and WECHAT_B.apiv3_key not in saved.text

    order = await stack.ordered(await shop_product(stack, shop_b, ["WB-1"]), merchant=shop_b.slug, gateway="wechat")
    trade = wechat_b.trades[order["order_id"]]
    assert trade.notify_url.endswith(f"/payments/wechat/notify/m/{shop_b.merchant_id}")
    paid = replace(trade, state="SUCCESS", success_time=now_text_cn(), transaction_id="4200" + "1" * 24)
    wechat_a = FakeWechat(WECHAT_A)  # only encrypts and signs: A's APIv3 key, A's WeChat Pay key, A's mchid
    body, headers = wechat_a.notify(wechat_a.transaction(paid))
    for url in (
        f"/payments/wechat/notify/m/{shop_a.merchant_id}",  # A's account, B's order
        f"/payments/wechat/notify/m/{shop_b.merchant_id}",  # A's keys at B's URL
        "/payments/wechat/notify",  # the platform's account
    ):
        answer = await stack.http.post(url, content=body, headers=headers)
        assert (url, answer.status_code) == (url, 400)
    assert (await stack.view(order))["status"] == "awaiting_payment"
    sent = await wechat_b.pay(order["order_id"])  # B's own notify, at B's URL
    assert sent is not None and sent.status_code in (200, 204), sent.text
    await stack.wait_status(order, "delivered")


# ---- who may save, and what ------------------------------------------------------------------


async def test_only_a_direct_shops_owner_saves_credentials_and_bad_input_is_refused(stack: Stack) -> None:
    platform_shop = await direct_shop(stack, settlement="platform")
    account = await sim_account(stack)
    for method in ("PUT", "DELETE"):
        refused = await stack.http.request(
            method, "/merchant/gateways/simulator", headers=platform_shop.owner, json=account.fields
        )
        assert (method, refused.status_code, refused.json()["error"]) == (method, 409, "not_direct")
    assert (await stack.http.get("/merchant/gateways", headers=platform_shop.owner)).status_code == 409

    shop = await direct_shop(stack)
    staff = await stack.http.post("/merchant/tokens", headers=shop.owner, json={"name": "ann"})
    staff_headers = {"Authorization": f"Bearer {staff.json()['token']}"}
    url = "/merchant/gateways/simulator"
    assert (await stack.http.put(url, headers=staff_headers, json=account.fields)).status_code == 403
    assert (await stack.http.get("/merchant/gateways", headers=staff_headers)).status_code == 403
    assert (await stack.http.put(url, json=account.fields)).status_code == 401
    wrong_secret = {**account.fields, "secret": "msec_not-the-secret-0000"}
    bad = {
        "nul": {**account.fields, "merchant_id": "a\x00b"},
        "non-ascii": {**account.fields, "secret": "秘密" * 10},
        "unknown field": {**account.fields, "extra": "x"},
        "not a string": {**account.fields, "secret": 12345678901234567890},
        "missing": {"merchant_id": account.merchant_id},
    }
    for name, body in bad.items():
        answer = await stack.http.put(url, headers=shop.owner, json=body)
        assert (name, answer.status_code) == (name, 422), answer.text
        assert account.secret not in answer.text
    huge = await stack.http.put(url, headers=shop.owner, json={**account.fields, "secret": "x" * 2_000_000})
    assert huge.status_code in (413, 422)
    unknown = await stack.http.put("/merchant/gateways/paypal", headers=shop.owner, json={})
    assert unknown.status_code == 422
    refused = await stack.http.put(url, headers=shop.owner, json=wrong_secret)
    assert (refused.status_code, refused.json()["error"]) == (422, "bad_credentials")
    assert "not-the-secret" not in refused.text
    assert (await stack.http.get("/merchant/gateways", headers=shop.owner)).json() == {"gateways": []}

    assert (await stack.http.put(url, headers=shop.owner, json=account.fields)).status_code == 200
    assert (await stack.http.delete(url, headers=shop.owner)).status_code == 204
    assert (await stack.http.delete(url, headers=shop.owner)).status_code == 404
    assert (await stack.http.get("/merchant/gateways", headers=shop.owner)).json() == {"gateways": []}
    # Without credentials the shop takes no payments by that gateway.
    sku = await shop_product(stack, shop, ["NOPE-1"])
    no_gateway = await stack.order(sku, merchant=shop.slug)
    assert (no_gateway.status_code, no_gateway.json()["error"]) == (404, "unknown_gateway")
    async with stack.sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditLog.action).where(AuditLog.merchant_id == shop.merchant_id).order_by(AuditLog.id)
            )
        )
    assert [a for a in actions if a.startswith("merchant.gateway")] == [
        "merchant.gateway_save",
        "merchant.gateway_delete",
    ]


async def test_two_saves_at_once_leave_one_row(stack: Stack) -> None:
    shop = await direct_shop(stack)
    first, second = await sim_account(stack), await sim_account(stack)
    answers = await asyncio.gather(
        *(
            stack.http.put("/merchant/gateways/simulator", headers=shop.owner, json=account.fields)
            for account in (first, second, first, second)
        )
    )
    assert [a.status_code for a in answers] == [200] * 4
    async with stack.sessionmaker() as session:
        rows = await session.scalar(
            select(func.count()).where(MerchantGatewayCredential.merchant_id == shop.merchant_id)
        )
    assert rows == 1


# ---- reconciliation per account ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def closing(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """Orders that expire and whose workflows close within seconds (as tests/saga/test_reconcile.py)."""
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
    ) as running:
        yield running


async def test_a_direct_merchants_statement_is_reconciled_and_its_stray_refunded_on_its_account(
    closing: Stack,
) -> None:
    shop, account = await with_simulator(closing)
    order = await closing.ordered(await shop_product(closing, shop, ["R-1"]), merchant=shop.slug)
    await closing.control(close_fail=True)
    await closing.wait_status(order, "expired")
    await closing.handle(order).result()
    await closing.control(notify="drop")  # only the merchant's own statement can show what comes next
    payment_id = order["payment"]["payment_id"]
    assert (await closing.pay(order)).status_code == 200
    report = await closing.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=600, grace_seconds=0),
        id=f"reconcile-test-{uuid.uuid4().hex[:8]}",
        task_queue=closing.task_queue,
        result_type=c.ReconcileReport,
    )
    assert report.findings.get("paid_order_closed", 0) >= 1
    await closing.env.client.get_workflow_handle(f"stray-simulator-{payment_id}").result()
    assert (await sim_payment(closing, payment_id, account.secret)).json()["status"] == "refunded"
    async with closing.sessionmaker() as session:
        kinds = set(
            await session.scalars(select(ReconcileFinding.kind).where(ReconcileFinding.payment_id == payment_id))
        )
    assert kinds == {"paid_order_closed"}


async def test_a_direct_merchants_notify_replays_with_its_own_keys(stack: Stack) -> None:
    shop, _ = await with_simulator(stack)
    order = await stack.ordered(await shop_product(stack, shop, ["RP-1"]), merchant=shop.slug)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    async with stack.sessionmaker() as session:
        [first] = await session.scalars(select(NotifyLog).where(NotifyLog.order_id == order["order_id"]))
    assert first.headers.get(":account") == shop.merchant_id
    replayed = _cli(stack, "notify", "replay", str(first.id), "--actor", "support:ann")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"Notify {first.id} replayed: duplicate ({order['order_id']})."


async def test_a_direct_shops_storefront_offers_only_its_own_gateways(stack: Stack) -> None:
    shop, _ = await with_simulator(stack)
    await shop_product(stack, shop, ["SF-1"])
    page = await stack.http.get(f"/s/{shop.slug}/")
    assert page.status_code == 200
    assert '<option value="simulator">' in page.text
    for platform_only in ("stripe", "alipay", "wechat"):  # the platform's accounts, not this shop's
        assert f'<option value="{platform_only}">' not in page.text
    platform_page = await stack.http.get("/")
    assert '<option value="stripe">' in platform_page.text


async def test_credentials_stay_while_an_order_at_that_gateway_is_open(stack: Stack) -> None:
    shop, _ = await with_simulator(stack)
    order = await stack.ordered(await shop_product(stack, shop, ["OPEN-1"]), merchant=shop.slug)
    url = "/merchant/gateways/simulator"
    busy = await stack.http.delete(url, headers=shop.owner)
    assert (busy.status_code, busy.json()["error"]) == (409, "gateway_in_use")
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    assert (await stack.http.delete(url, headers=shop.owner)).status_code == 204
