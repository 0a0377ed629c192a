"""Alipay (RSA2): the adapter against a fake Alipay over loopback, cross-checked with python-alipay-sdk,
then through the real saga and its notify route (tests/helpers/fakes/alipay.py)."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from alipay import AliPay
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_key
from sqlalchemy import func, select

from miaofa.db.models import NotifyLog, Payment
from miaofa.gateways.alipay import AlipayGateway
from miaofa.gateways.alipay_wire import response_members
from miaofa.gateways.base import (
    GatewayError,
    GatewayRefused,
    InvalidNotify,
    PaymentRequest,
    StatementNotReady,
    Unsupported,
)
from miaofa.gateways.config import AlipaySettings
from tests.conftest import stack_settings
from tests.helpers.fakes.alipay import (
    FakeAlipay,
    Trade,
    new_key,
    now_text,
    private_pem,
    public_base64,
    public_pem,
    rsa2,
)
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack, stages

APP_ID = "2021000000000001"
SELLER = "2088000000000001"


@pytest.fixture(scope="module")
def app_key():
    return new_key()


@pytest.fixture(scope="module")
async def fake_url(app_key) -> AsyncIterator[tuple[FakeAlipay, str]]:
    fake = FakeAlipay(APP_ID, app_key.public_key(), SELLER)
    sock = bind()
    async with serve(fake.app, sock) as url:
        yield fake, url + "/gateway.do"


@pytest.fixture
def fake(fake_url) -> FakeAlipay:
    fake = fake_url[0]
    fake.notify, fake.failing, fake.tamper, fake.escape_slashes = "send", set(), {}, True
    return fake


def settings(fake: FakeAlipay, url: str, app_key, **changes) -> AlipaySettings:
    return AlipaySettings(
        **{
            "app_id": APP_ID,
            "private_key": private_pem(app_key),
            "alipay_public_key": fake.public_key_text,
            "seller_id": SELLER,
            "gateway_url": url,
            **changes,
        }
    )


@pytest.fixture
async def gateway(fake, fake_url, app_key) -> AsyncIterator[AlipayGateway]:
    adapter = AlipayGateway(settings(fake, fake_url[1], app_key))
    yield adapter
    await adapter.aclose()


def request(order_id: str, amount_cents: int = 990, currency: str = "CNY") -> PaymentRequest:
    return PaymentRequest(
        order_id,
        amount_cents,
        currency,
        "卡密 {x} & more",
        "http://127.0.0.1:9/payments/alipay/notify",
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "http://shop.test/orders/o?token=t",
    )


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


# ---- the adapter against the fake ----


async def test_page_pay_url_is_signed_and_opens_the_cashier(fake, gateway, app_key) -> None:
    created = await gateway.create_payment(request("page-0001"))
    assert created.payment_id == "page-0001"
    params = query_of(created.pay_url)
    assert set(params) == {
        "app_id",
        "method",
        "format",
        "charset",
        "sign_type",
        "timestamp",
        "version",
        "biz_content",
        "notify_url",
        "return_url",
        "sign",
    }
    assert (params["method"], params["sign_type"], params["charset"]) == ("alipay.trade.page.pay", "RSA2", "utf-8")
    sent_at = datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert params["biz_content"] == (
        '{"out_trade_no":"page-0001","total_amount":"9.90","subject":"卡密 {x} & more",'
        '"time_expire":"2026-01-02 11:04:05","product_code":"FAST_INSTANT_TRADE_PAY"}'
    )
    assert params["return_url"] == "http://shop.test/orders/o?token=t"
    assert fake.trades.get("page-0001") is None  # nothing exists at Alipay until the buyer arrives
    # The SDK signs the same parameters to the same bytes (PKCS#1 v1.5 is deterministic).
    sdk = AliPay(APP_ID, None, private_pem(app_key), public_pem(fake.key), sign_type="RSA2")
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    assert query_of("?" + sdk.sign_data(dict(unsigned)))["sign"] == params["sign"]
    async with httpx.AsyncClient() as browser:  # Alipay's side checks it with the app public key
        assert (await browser.get(created.pay_url)).status_code == 200
        assert fake.trades["page-0001"].status == "WAIT_BUYER_PAY"
        tampered = created.pay_url.replace("9.90", "0.01")
        assert "isv.invalid-signature" in (await browser.get(tampered)).text
        sdk_url = fake_url_of(created.pay_url) + "?" + sdk.api_alipay_trade_page_pay("x", "page-0002", "9.90")
        assert (await browser.get(sdk_url)).status_code == 200  # the fake accepts the SDK's requests too
    assert fake.trades["page-0002"].total_amount == "9.90"


def fake_url_of(pay_url: str) -> str:
    return pay_url.split("?", 1)[0]


async def test_precreate_answers_a_qr_code_and_the_trade_exists_once_scanned(fake, fake_url, app_key) -> None:
    adapter = AlipayGateway(settings(fake, fake_url[1], app_key, product="precreate"))
    fake.notify = "drop"
    created = await adapter.create_payment(request("qr-0001"))
    assert created.payment_id == "qr-0001" and created.pay_url.startswith("https://qr.alipay.com/bax0")
    assert fake.calls[-1] == (
        "alipay.trade.precreate",
        {
            "out_trade_no": "qr-0001",
            "total_amount": "9.90",
            "subject": "卡密 {x} & more",
            "time_expire": "2026-01-02 11:04:05",
        },
    )
    assert (await adapter.query("qr-0001", "qr-0001")).status == "pending"  # ACQ.TRADE_NOT_EXIST before the scan
    fake.scan("qr-0001")
    waiting = await adapter.query("qr-0001", "")
    assert (waiting.status, waiting.amount_cents, waiting.paid_at) == ("pending", 990, None)
    await fake.pay("qr-0001")
    paid = await adapter.query("qr-0001", "qr-0001")
    gmt = datetime.strptime(fake.trades["qr-0001"].gmt_payment, "%Y-%m-%d %H:%M:%S")
    assert (paid.status, paid.amount_cents, paid.currency) == ("paid", 990, "CNY")
    assert paid.paid_at == (gmt - timedelta(hours=8)).replace(tzinfo=UTC)  # Asia/Shanghai
    await adapter.aclose()


async def test_sync_answers_are_verified_over_their_raw_text(fake, fake_url, app_key, gateway) -> None:
    # Alipay escapes "/" and sends unicode as is: only the exact substring verifies.
    body = gateway._signed(
        "alipay.trade.precreate",
        {"out_trade_no": "raw-0001", "total_amount": "1.00", "subject": "raw"},
        notify_url="http://127.0.0.1:9/n",
    )
    async with httpx.AsyncClient() as http:
        raw = (await http.post(fake_url[1], data=body)).text
    member = response_members(raw)["alipay_trade_precreate_response"]
    assert "https:\\/\\/qr.alipay.com" in member
    assert json.dumps(json.loads(member), separators=(",", ":")) != member  # a re-serialiser would fail
    sdk = AliPay(APP_ID, None, private_pem(app_key), public_pem(fake.key), sign_type="RSA2")
    assert sdk._verify_and_return_sync_response(raw, "alipay_trade_precreate_response")["out_trade_no"] == "raw-0001"
    assert response_members(' {"a_response" : {"m":"}{\\"","n":[1,{"x":"}"}]} , "sign":"s"} ') == {
        "a_response": '{"m":"}{\\"","n":[1,{"x":"}"}]}',
        "sign": '"s"',
    }
    for bad in ('{"a":1,"a":2}', '{"a":1} x', "[1]", '{"a":1,}', ""):
        with pytest.raises(ValueError):
            response_members(bad)


async def test_answers_that_cannot_be_trusted_are_gateway_errors(fake, fake_url, app_key, gateway) -> None:
    fake.notify = "drop"
    fake.trades["err-0001"] = Trade("err-0001", "9.90", "s", "", "WAIT_BUYER_PAY")
    fake.failing = {"alipay.trade.query"}
    with pytest.raises(GatewayError) as unsure:
        await gateway.query("err-0001", "err-0001")
    assert (type(unsure.value), str(unsure.value)) == (GatewayError, "alipay query: 20000 isp.unknow-error")
    fake.failing = set()
    fake.tamper = {"out_trade_no": "err-0002"}
    with pytest.raises(GatewayError, match="^alipay query: response is for another trade$"):
        await gateway.query("err-0001", "err-0001")
    fake.tamper = {}
    other_key = AlipayGateway(settings(fake, fake_url[1], app_key, alipay_public_key=public_base64(new_key())))
    with pytest.raises(GatewayError, match="^alipay query: response signature does not verify$"):
        await other_key.query("err-0001", "err-0001")
    wrong_app_key = AlipayGateway(settings(fake, fake_url[1], new_key()))
    with pytest.raises(GatewayError) as refused:
        await wrong_app_key.query("err-0001", "err-0001")
    assert str(refused.value) == "alipay query: error_response 40002 isv.invalid-signature"
    unreachable = AlipayGateway(settings(fake, "http://127.0.0.1:9/gateway.do", app_key))
    with pytest.raises(GatewayError, match=r"^alipay query: transport error \(ConnectError\)$"):
        await unreachable.query("err-0001", "err-0001")
    with pytest.raises(Unsupported):
        await gateway.query("err-0001", "err-0001", "backup")
    with pytest.raises(StatementNotReady):  # today's bill comes out tomorrow
        await gateway.statement(datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC))
    with pytest.raises(GatewayRefused, match="only CNY"):
        await gateway.create_payment(request("err-0003", currency="USD"))
    assert (gateway.query_channels, gateway.has_statement, gateway.partial_refund) == (("primary",), True, True)
    assert gateway.merchant_id == SELLER
    for adapter in (other_key, wrong_app_key, unreachable):
        await adapter.aclose()


async def test_close_and_refund(fake, gateway) -> None:
    fake.notify = "drop"
    assert (await gateway.close("never-opened", "never-opened")).status == "closed"  # ACQ.TRADE_NOT_EXIST
    fake.trades["cl-0001"] = Trade("cl-0001", "9.90", "s", "", "WAIT_BUYER_PAY")
    assert (await gateway.close("cl-0001", "cl-0001")).status == "closed"
    assert fake.trades["cl-0001"].status == "TRADE_CLOSED"
    assert (await gateway.close("cl-0001", "cl-0001")).status == "closed"  # already closed: asked, still closed
    fake.trades["cl-0002"] = Trade("cl-0002", "9.90", "s", "", "WAIT_BUYER_PAY")
    await fake.pay("cl-0002")  # the buyer pays just before the close
    raced = await gateway.close("cl-0002", "cl-0002")  # ACQ.TRADE_STATUS_ERROR, then a query
    assert (raced.status, raced.amount_cents) == ("paid", 990)
    partial = await gateway.refund("cl-0002", "cl-0002", 100, "refund-a")
    again = await gateway.refund("cl-0002", "cl-0002", 100, "refund-a")  # same out_request_no: fund_change N
    assert (partial.status, partial.amount_cents, again.amount_cents) == ("refunded", 100, 100)
    assert fake.trades["cl-0002"].refunds == {"refund-a": Decimal("1.00")}
    assert (await gateway.query("cl-0002", "")).status == "paid"  # a partial refund leaves it TRADE_SUCCESS
    full = await gateway.refund("cl-0002", "cl-0002", 890, "refund-b")
    assert (full.status, full.amount_cents) == ("refunded", 990)
    assert (await gateway.query("cl-0002", "")).status == "refunded"  # TRADE_CLOSED after payment
    with pytest.raises(GatewayRefused, match="^alipay refund: 40004 ACQ.TRADE_NOT_EXIST$"):
        await gateway.refund("nope-0001", "", 100, "refund-c")
    with pytest.raises(GatewayRefused, match="ACQ.TRADE_STATUS_ERROR"):
        await gateway.refund("cl-0001", "", 100, "refund-d")  # closed unpaid: nothing to give back


def paid_trade(order_id: str, amount: str = "9.90") -> Trade:
    return Trade(order_id, amount, "卡密", "", "TRADE_SUCCESS", gmt_payment=now_text())


async def test_notifies_map_to_statuses_and_sdks_agree(fake, gateway, app_key) -> None:
    trade = paid_trade("nt-0001")
    cases = {
        ("TRADE_SUCCESS", False): "paid",
        ("TRADE_FINISHED", False): "paid",
        ("TRADE_SUCCESS", True): "refunded",
        ("TRADE_CLOSED", True): "refunded",
        ("TRADE_CLOSED", False): "closed",
        ("WAIT_BUYER_PAY", False): "pending",
    }
    for (status, refund), expected in cases.items():
        extra = {"refund_fee": "1.00", "gmt_refund": now_text() + ".000", "out_biz_no": "r1"} if refund else {}
        params = fake.sign(fake.notify_params(trade, trade_status=status, **extra))
        notice = await gateway.verify_notify({}, fake.form(params), {})
        assert (status, refund, notice.status) == (status, refund, expected)
    assert (notice.payment_id, notice.order_id, notice.merchant_id, notice.amount_cents, notice.currency) == (
        "nt-0001",
        "nt-0001",
        SELLER,
        990,
        "CNY",
    )
    # A notify signed by the fake verifies with the SDK (which pops sign_type itself) …
    alipay_side = fake.sign(fake.notify_params(trade))
    sdk_shop = AliPay(APP_ID, None, private_pem(app_key), public_pem(fake.key), sign_type="RSA2")
    data = dict(alipay_side)
    signature = data.pop("sign")
    assert sdk_shop.verify(data, signature) is True
    # … and one signed with the SDK's own signing verifies with the adapter.
    sdk_alipay = AliPay(APP_ID, None, private_pem(fake.key), public_pem(app_key), sign_type="RSA2")
    unsigned = {k: v for k, v in fake.notify_params(trade).items() if k != "sign_type"}
    sign = sdk_alipay._sign("&".join(f"{k}={v}" for k, v in sdk_alipay._ordered_data(dict(unsigned))))
    notice = await gateway.verify_notify({}, fake.form({**unsigned, "sign_type": "RSA2", "sign": sign}), {})
    assert (notice.status, notice.amount_cents) == ("paid", 990)


async def test_a_gbk_notify_is_verified_over_its_gbk_bytes(fake, gateway) -> None:
    params = fake.sign(fake.notify_params(paid_trade("gbk-0001"), charset="gbk", subject="点卡 充值"))
    body = fake.form(params)
    assert b"%B5%E3" in body  # 点 in GBK
    assert (await gateway.verify_notify({}, body, {})).status == "paid"
    utf8_signed = {
        **params,
        "sign": rsa2(
            fake.key, "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("sign", "sign_type")).encode()
        ),
    }
    with pytest.raises(InvalidNotify, match="^bad signature$"):
        await gateway.verify_notify({}, fake.form(utf8_signed), {})


async def test_keys_in_every_console_format_and_never_an_empty_one(fake, fake_url, app_key, tmp_path) -> None:
    pkcs1 = app_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    path = tmp_path / "alipay_public.pem"
    path.write_text(public_pem(fake.key))
    adapter = AlipayGateway(
        settings(fake, fake_url[1], app_key, private_key=base64.b64encode(pkcs1).decode(), alipay_public_key=f"@{path}")
    )
    fake.trades["key-0001"] = Trade("key-0001", "9.90", "s", "", "WAIT_BUYER_PAY")
    assert (await adapter.query("key-0001", "")).status == "pending"
    await adapter.aclose()
    with pytest.raises(ValueError, match="Value error, MIAOFA_ALIPAY__ALIPAY_PUBLIC_KEY is missing"):
        settings(fake, fake_url[1], app_key, alipay_public_key="")
    for empty in ("", "   ", "\\n"):
        unchecked = AlipaySettings.model_construct(
            **{**settings(fake, fake_url[1], app_key).__dict__, "alipay_public_key": empty}
        )
        with pytest.raises(ValueError, match="^empty key$"):
            AlipayGateway(unchecked)
    with pytest.raises(ValueError, match=r"^the key cannot be read \(PEM or base64 DER expected\)$"):
        AlipayGateway(settings(fake, fake_url[1], app_key, alipay_public_key="MIIBIjANBgkqhkiG9w0B"))
    ec = (
        ec_key.generate_private_key(ec_key.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="^the key is not an RSA key$"):
        AlipayGateway(settings(fake, fake_url[1], app_key, alipay_public_key=ec))


# ---- through the saga ----


@pytest.fixture(scope="module")
async def stack(dev_env, sessionmaker, sim_url, database_url, smtp, fake_url, app_key) -> AsyncIterator[Stack]:
    fake, url = fake_url
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=30,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
        rejected_notify_log_per_second=1000,
        alipay=settings(fake, url, app_key),
    ) as running:
        yield running


async def browse(order: dict) -> None:
    """The buyer's browser follows the pay link to the cashier: now the trade exists at Alipay."""
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(order["payment"]["pay_url"])).status_code == 200


async def test_create_pay_notify_delivered(stack: Stack, fake: FakeAlipay) -> None:
    sku = await stack.product(1)
    order = await stack.ordered(sku, gateway="alipay")
    assert order["payment"]["payment_id"] == order["order_id"]
    params = query_of(order["payment"]["pay_url"])
    assert params["notify_url"] == f"{stack.settings.api_url}/payments/alipay/notify"
    await browse(order)
    sent = await fake.pay(order["order_id"])
    assert (sent.status_code, sent.body) == (200, "success")
    view = await stack.wait_status(order, "delivered")
    assert len(view["keys"]) == 1 and "notified" in stages(view)
    await fake.finish(order["order_id"])  # TRADE_FINISHED later: a duplicate, nothing more
    assert (fake.sent[-1].status_code, fake.sent[-1].body) == (200, "success")
    assert stages(await stack.view(order)).count("delivered") == 1


async def test_a_lost_notify_is_found_by_the_query(stack: Stack, fake: FakeAlipay) -> None:
    sku = await stack.product(1)
    order = await stack.ordered(sku, gateway="alipay")
    await browse(order)
    fake.notify = "drop"
    assert await fake.pay(order["order_id"]) is None
    view = await stack.wait_status(order, "delivered")
    assert "polled" in stages(view) and "notified" not in stages(view)
    assert ("alipay.trade.query", {"out_trade_no": order["order_id"]}) in fake.calls


async def test_a_payment_after_the_stock_is_gone_is_refunded_at_alipay(
    dev_env, sessionmaker, sim_url, database_url, smtp, fake, fake_url, app_key
) -> None:
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
            late_payment_watch_seconds=60,
        ),
        alipay=settings(fake, fake_url[1], app_key),
    ) as short:
        sku = await short.product(1)
        order = await short.ordered(sku, gateway="alipay", email="late@example.com")
        await browse(order)  # the buyer has the cashier open …
        fake.failing = {"alipay.trade.close"}  # … and the close fails, so Alipay can still take the money
        expired = await short.wait_status(order, "expired", timeout=30)
        assert "close_failed" in stages(expired)
        fake.failing = set()
        await short.refresh_stock()  # the stock hint sees the release now, not at its next refresh
        rival = await short.ordered(sku, gateway="alipay", email="rival@example.com")
        await browse(rival)
        await fake.pay(rival["order_id"])
        await short.wait_status(rival, "delivered")
        sent = await fake.pay(order["order_id"])  # the late buyer pays
        assert (sent.status_code, sent.body) == (200, "success")
        view = await short.wait_status(order, "refunded")
        refunded = next(e for e in view["timeline"] if e["stage"] == "refunded")
        assert refunded["detail"] == {"reason": "paid after expiry and out of stock", "actor": "system"}
        assert view["keys"] == [] and "paid_after_expiry" in stages(view)
        trade = fake.trades[order["order_id"]]
        assert (trade.status, trade.refunds) == ("TRADE_CLOSED", {f"refund-{order['order_id']}": Decimal("9.90")})
        await fake.settle()  # the refund's TRADE_CLOSED notify: acknowledged, proves nothing
        refund_notify = fake.sent[-1]
        assert (refund_notify.params["trade_status"], refund_notify.params["refund_fee"]) == ("TRADE_CLOSED", "9.90")
        assert (refund_notify.status_code, refund_notify.body) == (200, "success")
        assert (await short.view(rival))["status"] == "delivered"
        assert await short.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}


# ---- the attack corpus, through the real notify route ----


@dataclass
class Corpus:
    sku: str
    pending: dict  # an order waiting for its payment
    delivered: dict  # an order paid and delivered
    keys: list[str]
    paid_notify: dict[str, str]  # the delivered order's real notify


@pytest.fixture(scope="module")
async def corpus(stack: Stack, fake_url) -> Corpus:
    fake = fake_url[0]
    fake.notify = "send"
    sku = await stack.product(2)
    pending = await stack.ordered(sku, gateway="alipay", email="p@example.com")
    delivered = await stack.ordered(sku, gateway="alipay", email="d@example.com")
    await browse(delivered)
    sent = await fake.pay(delivered["order_id"])
    view = await stack.wait_status(delivered, "delivered")
    return Corpus(sku, pending, delivered, view["keys"], sent.params)


def paid(fake: FakeAlipay, order_id: str, **changes: str | None) -> dict[str, str]:
    params = fake.notify_params(paid_trade(order_id))
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


REFUND = {"refund_fee": "1.00", "gmt_refund": "2026-01-01 10:00:00.000", "out_biz_no": "refund-x"}
Build = Callable[[FakeAlipay, Corpus], bytes]


def signed(order: str, **changes: str | None) -> Build:
    def build(fake: FakeAlipay, c: Corpus) -> bytes:
        order_id = {"P": c.pending["order_id"], "D": c.delivered["order_id"]}.get(order, order)
        return fake.form(fake.sign(paid(fake, order_id, **changes)))

    return build


def forged(edit: Callable[[FakeAlipay, Corpus, dict[str, str]], object]) -> Build:
    """A notify of the pending order, signed, then edited by the attacker."""

    def build(fake: FakeAlipay, c: Corpus) -> bytes:
        params = fake.sign(paid(fake, c.pending["order_id"]))
        result = edit(fake, c, params)
        return result if isinstance(result, bytes) else fake.form(params)

    return build


REJECTED = (400, "fail", "rejected")
CASES: list[tuple[str, Build, tuple[int, str, str], str]] = [
    ("tampered-amount", forged(lambda f, c, p: p.update(total_amount="0.01")), REJECTED, "bad signature"),
    ("tampered-status", forged(lambda f, c, p: p.update(trade_status="TRADE_FINISHED")), REJECTED, "bad signature"),
    (
        "signed-by-another-key",
        lambda f, c: f.form(f.sign(paid(f, c.pending["order_id"]), key=new_key())),
        REJECTED,
        "bad signature",
    ),
    ("sign-removed", forged(lambda f, c, p: p.pop("sign")), REJECTED, "missing or malformed sign"),
    ("empty-sign", forged(lambda f, c, p: p.update(sign="")), REJECTED, "missing or malformed sign"),
    ("sign-type-only", lambda f, c: b"sign_type=RSA2", REJECTED, "missing or malformed sign"),
    ("sign-type-RSA", forged(lambda f, c, p: p.update(sign_type="RSA")), REJECTED, "sign_type is not RSA2"),
    ("sign-non-ascii", forged(lambda f, c, p: p.update(sign="签名" * 20)), REJECTED, "missing or malformed sign"),
    ("wrong-amount-signed", signed("P", total_amount="0.01"), (200, "success", "stray"), "wrong_amount"),
    ("wrong-currency", signed("P", trans_currency="USD"), (200, "success", "stray"), "wrong_amount"),
    ("bad-currency", signed("P", trans_currency="us$"), REJECTED, "bad trans_currency"),
    ("amount-9.9000", signed("P", total_amount="9.9000"), REJECTED, "bad total_amount"),
    ("amount-9.90.0", signed("P", total_amount="9.90.0"), REJECTED, "bad total_amount"),
    ("amount-exponent", signed("P", total_amount="9.9e0"), REJECTED, "bad total_amount"),
    ("amount-negative", signed("P", total_amount="-9.90"), REJECTED, "bad total_amount"),
    ("amount-huge", signed("P", total_amount="99999999999999.99"), REJECTED, "bad total_amount"),
    (
        "amount-array",
        forged(lambda f, c, p: f.form(list(p.items()) + [("total_amount", "2")])),
        REJECTED,
        "malformed or repeated form field",
    ),
    ("wrong-app-id", signed("P", app_id="2021999999999999"), REJECTED, "wrong app id"),
    ("wrong-seller-id", signed("P", seller_id="2088999999999999"), (400, "fail", "foreign"), "another merchant"),
    ("unknown-out-trade-no", signed("nosuchorder000000001"), (200, "success", "stray"), "unknown_order"),
    (
        "A-replayed-onto-B",
        lambda f, c: f.form({**c.paid_notify, "out_trade_no": c.pending["order_id"]}),
        REJECTED,
        "bad signature",
    ),
    (
        "wait-buyer-pay",
        signed("P", trade_status="WAIT_BUYER_PAY", gmt_payment=None),
        (200, "success", "ignored"),
        "pending",
    ),
    ("trade-closed", signed("P", trade_status="TRADE_CLOSED", gmt_payment=None), (200, "success", "ignored"), "closed"),
    ("paid-without-gmt-payment", signed("P", gmt_payment=None), REJECTED, "paid without gmt_payment"),
    ("partial-refund-after-delivery", signed("D", **REFUND), (200, "success", "ignored"), "refunded"),
    (
        "full-refund-after-delivery",
        signed("D", trade_status="TRADE_CLOSED", **REFUND),
        (200, "success", "ignored"),
        "refunded",
    ),
    (
        "trade-finished-after-delivery",
        signed("D", trade_status="TRADE_FINISHED"),
        (200, "success", "duplicate"),
        "paid",
    ),
    ("duplicate-of-the-paid-notify", lambda f, c: f.form(c.paid_notify), (200, "success", "duplicate"), "paid"),
    ("NUL-in-out-trade-no", signed("P", out_trade_no="ab\x00cd"), REJECTED, "NUL in a form field"),
    ("non-ascii-out-trade-no", signed("订单号0001"), REJECTED, "bad out_trade_no"),
    ("huge-field", signed("P", body="x" * 5000), REJECTED, "too many or too long form fields"),
    ("not-utf-8", forged(lambda f, c, p: f.form(p).replace(b"subject=", b"subject=%FF%FE")), REJECTED, "not utf-8"),
    ("unknown-charset", signed("P", charset="latin-1", subject="card"), REJECTED, "unknown charset"),
    ("empty-body", lambda f, c: b"", REJECTED, "empty body"),
]


@pytest.mark.parametrize(("build", "expected", "detail"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
async def test_attack_changes_nothing(
    stack: Stack, fake: FakeAlipay, corpus: Corpus, build: Build, expected: tuple[int, str, str], detail: str
) -> None:
    async with stack.sessionmaker() as session:
        before = await session.scalar(select(func.coalesce(func.max(NotifyLog.id), 0)))
    answer = await stack.http.post(
        "/payments/alipay/notify",
        content=build(fake, corpus),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    async with stack.sessionmaker() as session:
        logged = list(
            await session.scalars(select(NotifyLog).where(NotifyLog.id > before, NotifyLog.gateway == "alipay"))
        )
        pending_payment = await session.scalar(
            select(Payment.status).where(Payment.order_id == corpus.pending["order_id"])
        )
    assert [(answer.status_code, answer.text, row.outcome, row.detail) for row in logged] == [(*expected, detail)]
    if expected[2] == "stray":  # reviewed with Alipay, which has no such paid trade: nothing to refund
        payment_id = logged[0].proof["payment_id"]
        review = stack.env.client.get_workflow_handle(f"stray-alipay-{payment_id}")
        assert await review.result() == "nothing"
    await stack.settled(corpus.pending)  # a signal that slipped through has been acted on
    await stack.settled(corpus.delivered)
    assert pending_payment == "pending"
    waiting, done = await stack.view(corpus.pending), await stack.view(corpus.delivered)
    assert (waiting["status"], waiting["keys"], "paid" in stages(waiting)) == ("awaiting_payment", [], False)
    assert (done["status"], done["keys"], stages(done).count("delivered")) == ("delivered", corpus.keys, 1)
    assert await stack.stock(corpus.sku) == {"available": 0, "reserved": 1, "sold": 1, "refunded": 0}


async def test_reordered_and_duplicated_notifies_deliver_once(stack: Stack, fake: FakeAlipay) -> None:
    sku = await stack.product(1)
    order = await stack.ordered(sku, gateway="alipay")
    await browse(order)
    fake.notify, fake.failing = "drop", {"alipay.trade.query"}  # only the notifies can tell the shop
    await fake.pay(order["order_id"])
    trade = fake.trades[order["order_id"]]

    async def send(**extra: str) -> tuple[int, str]:
        params = fake.sign(fake.notify_params(trade, **extra))
        answer = await stack.http.post("/payments/alipay/notify", content=fake.form(params))
        return answer.status_code, answer.text

    assert await send(**REFUND) == (200, "success")  # a refund notify overtaking the payment's: ignored
    assert (await stack.view(order))["status"] == "awaiting_payment"
    finished = await asyncio.gather(send(trade_status="TRADE_FINISHED"), send(trade_status="TRADE_FINISHED"))
    assert finished == [(200, "success"), (200, "success")]
    view = await stack.wait_status(order, "delivered")
    assert await send(trade_status="TRADE_SUCCESS") == (200, "success")  # the older status, late
    await stack.settled(order)  # every notify above signalled before it was answered
    async with stack.sessionmaker() as session:
        outcomes = list(
            await session.scalars(
                select(NotifyLog.outcome).where(NotifyLog.order_id == order["order_id"]).order_by(NotifyLog.id)
            )
        )
    assert outcomes[0] == "ignored" and outcomes[-1] == "duplicate" and "accepted" in outcomes[1:3]
    assert sorted(outcomes[1:3]) in (["accepted", "accepted"], ["accepted", "duplicate"])
    final = await stack.view(order)
    assert (final["keys"], stages(final).count("delivered")) == (view["keys"], 1) and len(view["keys"]) == 1
    assert await stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 1, "refunded": 0}
