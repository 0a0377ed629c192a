"""易支付 (epay v1): the adapter against a local operator (tests/helpers/fakes/epay.py) and through the real saga.

The order query is unsigned, so only the signed notify delivers: a lost notify leaves the order
waiting even when the query says paid, until the operator's retry arrives.
"""

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import QueryParams

from activities.payments import PaymentActivities
from miaofa import steps as s
from miaofa.db.models import NotifyLog
from miaofa.gateways.base import GatewayError, GatewayRefused, InvalidNotify, PaymentRequest, Unsupported
from miaofa.gateways.config import EpaySettings
from miaofa.gateways.epay import EpayGateway, sign_content
from miaofa.gateways.md5_sign import md5_matches, md5_sign
from tests.conftest import stack_settings
from tests.helpers.fakes.epay import FakeEpay, epay_sign
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack, stages
from tests.helpers.waiting import eventually

PID, KEY = "1001", "epay-test-key-6f1c0b7e9d2a"
NOTIFY = "/payments/epay/notify"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeEpay]:
    operator = FakeEpay(PID, KEY)
    async with serve(operator.app, bind()) as url:
        operator.url = url  # type: ignore[attr-defined]
        yield operator
    await operator.aclose()


@pytest.fixture(scope="module")
async def stack(dev_env, sessionmaker, sim_url, database_url, smtp, fake) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=120,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
        rejected_notify_log_per_second=1000,
        epay=EpaySettings(api_url=fake.url + "/", pid=PID, key=KEY),
    ) as running:
        yield running


def _gateway(fake: FakeEpay, key: str = KEY) -> EpayGateway:
    return EpayGateway(fake.url + "/", PID, key)  # type: ignore[attr-defined]


async def _opened(stack: Stack, sku: str | None = None) -> dict[str, Any]:
    """An epay order whose buyer has opened the signed submit.php link (so the operator knows it)."""
    order = await stack.ordered(sku or await stack.product(1), gateway="epay")
    async with httpx.AsyncClient() as browser:
        page = await browser.get(order["payment"]["pay_url"])
    assert page.status_code == 200, page.text
    return order


async def _delivered(stack: Stack, fake: FakeEpay) -> dict[str, Any]:
    order = await _opened(stack)
    assert (await fake.pay(order["order_id"])).text == "success"
    await stack.wait_status(order, "delivered")
    return order


async def _logged_since(stack: Stack, last_id: int) -> list[tuple[str, str, str | None]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(
            select(NotifyLog).where(NotifyLog.id > last_id, NotifyLog.gateway == "epay").order_by(NotifyLog.id)
        )
        return [(row.outcome, row.detail, row.order_id) for row in rows]


# ---- the protocol, without the stack ----


def test_signing_matches_the_worked_example_by_hand() -> None:
    fields = {
        "pid": "1001",
        "trade_no": "2024",
        "out_trade_no": "O1",
        "type": "alipay",
        "name": "卡密",
        "money": "9.90",
        "trade_status": "TRADE_SUCCESS",
        "param": "",
        "sign": "x",
        "sign_type": "MD5",
    }
    content = "money=9.90&name=卡密&out_trade_no=O1&pid=1001&trade_no=2024&trade_status=TRADE_SUCCESS&type=alipay"
    by_hand = hashlib.md5((content + "KEY").encode("utf-8")).hexdigest()
    assert sign_content(fields) == content
    assert md5_sign(sign_content(fields), "KEY") == by_hand == epay_sign(fields, "KEY")
    assert md5_matches(content, "KEY", by_hand) and not md5_matches(content, "KEY", by_hand.upper())


def test_an_empty_key_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError, match="EPAY__KEY is missing"):
        EpaySettings(api_url="https://pay.example/", pid=PID, key="")
    with pytest.raises(ValueError, match="empty"):
        EpayGateway("https://pay.example/", PID, "")
    with pytest.raises(ValueError, match="empty"):
        md5_sign("a=1", "")
    assert not md5_matches("a=1", "", hashlib.md5(b"a=1").hexdigest())


async def test_create_is_a_signed_submit_link_and_no_call(fake: FakeEpay) -> None:
    gateway = EpayGateway("https://pay.example/", PID, KEY, pay_type="wxpay")
    created = await gateway.create_payment(
        PaymentRequest(
            order_id="o123",
            amount_cents=990,
            currency="CNY",
            subject="卡密 x1",
            notify_url="https://shop/n",
            expires_at=datetime.now(UTC),
            return_url="https://shop/orders/o123?token=t",
        )
    )
    url = urlsplit(created.pay_url)
    fields = dict(parse_qsl(url.query))
    assert (created.payment_id, url.netloc, url.path) == ("o123", "pay.example", "/submit.php")
    assert fields == {
        "pid": PID,
        "type": "wxpay",
        "out_trade_no": "o123",
        "notify_url": "https://shop/n",
        "return_url": "https://shop/orders/o123?token=t",
        "name": "卡密 x1",
        "money": "9.90",
        "sign": epay_sign(fields, KEY),
        "sign_type": "MD5",
    }
    assert KEY not in created.pay_url
    with pytest.raises(GatewayRefused, match="only CNY"):
        await gateway.create_payment(PaymentRequest("o124", 990, "USD", "x", "https://shop/n", datetime.now(UTC)))


async def test_query_never_says_paid_and_never_logs_the_key(fake: FakeEpay, caplog) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="httpx")  # the shop's logging keeps it at WARNING; look closer
    gateway = _gateway(fake)
    fields = {
        "pid": PID,
        "type": "alipay",
        "out_trade_no": "q-1",
        "notify_url": "http://127.0.0.1:9/n",
        "name": "x",
        "money": "1.00",
    }
    async with httpx.AsyncClient() as browser:
        submit = fake.url + "/submit.php"  # type: ignore[attr-defined]
        await browser.get(submit, params={**fields, "sign": epay_sign(fields, KEY)})
    assert (await gateway.query("q-1", "q-1")).status == "pending"
    fake.drop_notifies = True
    try:
        await fake.pay("q-1")  # the operator says paid; its notify is lost
    finally:
        fake.drop_notifies = False
    state = await gateway.query("q-1", "q-1")
    assert (state.status, state.amount_cents, state.currency) == ("pending", 100, "CNY")
    assert (await gateway.query("nosuch", "nosuch")).status == "unknown"
    assert "the gateway reports order q-1 paid; delivery waits for its signed notify" in caplog.text
    assert "HTTP Request: GET" in caplog.text and KEY not in caplog.text
    await gateway.aclose()


async def test_close_is_unsupported_refund_reasons_and_errors_without_the_key(fake: FakeEpay) -> None:
    gateway = _gateway(fake)
    with pytest.raises(Unsupported):
        await gateway.close("o", "o")
    with pytest.raises(GatewayRefused, match=r"epay refund: refused \(订单号不存在\)"):
        await gateway.refund("nosuch", "nosuch", 100, "r1")
    sock = bind()  # bound, never listening: connections are refused
    dead = EpayGateway(f"http://127.0.0.1:{sock.getsockname()[1]}/", PID, KEY)
    with pytest.raises(GatewayError) as caught:
        await dead.query("o", "o")
    assert (str(caught.value), caught.value.__cause__) == ("epay query: transport error (ConnectError)", None)
    sock.close()
    await gateway.aclose()
    await dead.aclose()


async def test_the_close_step_answers_unsupported_without_a_failure(fake: FakeEpay, caplog) -> None:
    # It raised Unsupported, which the worker logged with a traceback at every expiry.
    gateway = _gateway(fake)
    closing = PaymentActivities(None, {"epay": gateway}, "https://shop.example", "https://shop.example", None)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG):
        answer = await closing.close_payment(s.GatewayStep("o-1", "epay", "o-1"))
    assert answer == s.PaymentSnapshot(s.CLOSE_UNSUPPORTED, 0, "", None, "o-1", query_proves_payment=False)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    await gateway.aclose()


async def test_a_stored_get_notify_replays(fake: FakeEpay) -> None:
    # `miaofa notify replay` hands a GET notify back as QueryParams of its stored query string.
    fields = {
        "pid": PID,
        "trade_no": "9",
        "out_trade_no": "o9",
        "type": "alipay",
        "name": "卡密",
        "money": "1.00",
        "trade_status": "TRADE_SUCCESS",
    }
    query = QueryParams(urlencode({**fields, "sign": epay_sign(fields, KEY), "sign_type": "MD5"}))
    notice = await _gateway(fake).verify_notify({}, b"", query)
    assert (
        notice.payment_id,
        notice.order_id,
        notice.merchant_id,
        notice.status,
        notice.amount_cents,
        notice.currency,
        notice.event_id,
    ) == ("o9", "o9", PID, "paid", 100, "CNY", "9")
    with pytest.raises(InvalidNotify, match="repeated field"):
        await _gateway(fake).verify_notify({}, b"", QueryParams(str(query) + "&money=1.00"))


@pytest.mark.parametrize(
    "query, body",
    [
        ({"name": "a\x00b"}, b""),
        ({"name": "x" * 5000}, b""),
        ({}, b"name=%FF%FE"),
        ({}, b"a=1&" * 40),
        ({"a": "1"}, b"b=2"),
        ({}, b""),
    ],
    ids=["nul", "huge", "bad-utf8", "too-many-fields", "query-and-body", "empty"],
)
async def test_bad_input_is_an_invalid_notify(fake: FakeEpay, query: dict, body: bytes) -> None:
    with pytest.raises(InvalidNotify):
        await _gateway(fake).verify_notify({}, body, query)


# ---- through the saga ----


async def test_pay_notify_delivers(stack: Stack, fake: FakeEpay) -> None:
    order = await _opened(stack)
    assert order["payment"]["payment_id"] == order["order_id"]
    last = await stack.last_notify_id()
    async with httpx.AsyncClient() as browser:  # the buyer presses "pay" on the operator's page
        paid = await browser.post(f"{fake.url}/pay/{order['order_id']}")  # type: ignore[attr-defined]
    assert paid.json() == {"notify": "success"}
    view = await stack.wait_status(order, "delivered")
    assert len(view["keys"]) == 1 and "notified" in stages(view)
    assert await _logged_since(stack, last) == [("accepted", "paid", order["order_id"])]
    assert await stack.payment_status(order) == "paid"


async def test_a_replayed_epay_orders_pay_link_holds_no_token(stack: Stack) -> None:
    """The attack of issue 17 (N1): the replayed answer's submit link carries the return URL; it must
    hold a return ticket, not the order token (which opens the order and its keys)."""
    email, idem = f"epay-{uuid.uuid4().hex[:8]}@example.com", {"Idempotency-Key": f"epay-{uuid.uuid4().hex}"}
    sku = await stack.product(1)
    order = await stack.ordered(sku, email=email, gateway="epay", headers=idem)
    replay = await stack.order(sku, email=email, gateway="epay", headers=idem)
    assert replay.status_code == 200 and replay.json()["access_token"] is None
    assert order["access_token"] not in replay.text
    return_url = urlsplit(dict(parse_qsl(urlsplit(replay.json()["payment"]["pay_url"]).query))["return_url"])
    assert (return_url.path, list(dict(parse_qsl(return_url.query)))) == (f"/o/{order['order_id']}/return", ["ticket"])
    async with httpx.AsyncClient(timeout=10) as attacker:
        page = await attacker.get(urlunsplit(return_url), headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "Awaiting payment" in page.text
    assert order["access_token"] not in page.text


async def test_a_posted_notify_is_accepted_too(stack: Stack, fake: FakeEpay) -> None:
    order = await _opened(stack)
    fake.orders[order["order_id"]].status = 1
    answer = await fake.notify(
        fake.orders[order["order_id"]], fake.notify_fields(fake.orders[order["order_id"]]), method="POST"
    )
    assert (answer.status_code, answer.text) == (200, "success")
    await stack.wait_status(order, "delivered")


async def test_query_saying_paid_does_not_deliver_until_the_signed_notify(stack: Stack, fake: FakeEpay, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="miaofa.gateways.epay")
    order = await _opened(stack)
    fake.drop_notifies = True
    try:
        assert await fake.pay(order["order_id"]) is None
    finally:
        fake.drop_notifies = False
    queries = fake.queries
    await eventually(lambda: fake.queries >= queries + 2, message="the saga to poll twice since the payment")
    await stack.settled(order)  # and to have judged what its polls found
    view = await stack.view(order)
    assert (view["status"], view["keys"]) == ("awaiting_payment", [])
    assert not {"paid", "polled", "notified"} & set(stages(view))
    assert await stack.payment_status(order) == "pending"
    assert f"the gateway reports order {order['order_id']} paid; delivery waits for its signed notify" in caplog.text
    # The operator retries its notify: that one is signed, and delivers.
    retried = await fake.notify(fake.orders[order["order_id"]], fake.sent[-1])
    assert retried.text == "success"
    view = await stack.wait_status(order, "delivered")
    assert "notified" in stages(view) and "polled" not in stages(view)


async def test_duplicated_reordered_and_replayed_notifies_deliver_once(stack: Stack, fake: FakeEpay) -> None:
    sku = await stack.product(2)
    a = await _opened(stack, sku)
    b = await _opened(stack, sku)
    await fake.pay(a["order_id"])
    await stack.wait_status(a, "delivered")
    notify_a = fake.sent[-1]
    last = await stack.last_notify_id()
    order_a = fake.orders[a["order_id"]]
    for _ in range(3):
        assert (await fake.notify(order_a, notify_a)).text == "success"
    late_unpaid = fake.notify_fields(order_a, trade_status="WAIT_BUYER_PAY")
    assert (await fake.notify(order_a, late_unpaid)).text == "success"  # taken in hand, proves nothing
    onto_b = {**notify_a, "out_trade_no": b["order_id"]}  # A's signature, B's order
    replay = await stack.http.get(NOTIFY, params=onto_b)
    assert (replay.status_code, replay.text) == (400, "fail")
    await stack.settled(a)
    await stack.settled(b)
    assert await _logged_since(stack, last) == [("duplicate", "paid", a["order_id"])] * 3 + [
        ("ignored", "pending", a["order_id"]),
        ("rejected", "bad signature", None),
    ]
    view_a, view_b = await stack.view(a), await stack.view(b)
    assert stages(view_a).count("delivered") == 1 and len(view_a["keys"]) == 1
    assert (view_b["status"], view_b["keys"]) == ("awaiting_payment", [])
    assert await stack.stock(sku) == {"available": 0, "reserved": 1, "sold": 1, "refunded": 0}


async def test_support_refund_then_a_replayed_notify_changes_nothing(stack: Stack, fake: FakeEpay) -> None:
    order = await _delivered(stack, fake)
    answer = await stack.http.post(
        f"/support/orders/{order['order_id']}/refund", headers=stack.support, json={"reason": "key did not work"}
    )
    assert (answer.status_code, answer.json()["status"]) == (200, "refunded")
    assert fake.refunds[-1] == {"pid": PID, "key": KEY, "out_trade_no": order["order_id"], "money": "9.90"}
    last = await stack.last_notify_id()
    assert (await fake.notify(fake.orders[order["order_id"]], fake.sent[-1])).text == "success"
    await stack.settled(order)
    assert await _logged_since(stack, last) == [("duplicate", "paid", order["order_id"])]
    view = await stack.view(order)
    assert (view["status"], view["keys"]) == ("refunded", [])
    assert await stack.payment_status(order) == "refunded"


# ---- the attack corpus: each against an open order, each changes nothing ----


def _signed(fake: FakeEpay, order: dict, key: str = KEY, **changes: str) -> dict[str, str]:
    return fake.notify_fields(fake.orders[order["order_id"]], key=key, **changes)


def _resigned(fields: dict[str, str], sign: str) -> dict[str, str]:
    return {**fields, "sign": sign}


ATTACKS: dict[str, tuple[Any, tuple[int, str, str, str]]] = {
    # name: (fields or raw query string from (fake, order), (status, body, outcome, detail))
    "bad-signature": (lambda f, o: _resigned(_signed(f, o), "0" * 32), (400, "fail", "rejected", "bad signature")),
    "another-key": (lambda f, o: _signed(f, o, key="someone-elses-key"), (400, "fail", "rejected", "bad signature")),
    "empty-key": (
        lambda f, o: _resigned(_signed(f, o), epay_sign(_signed(f, o), "")),
        (400, "fail", "rejected", "bad signature"),
    ),
    "uppercase-md5": (
        lambda f, o: _resigned(_signed(f, o), _signed(f, o)["sign"].upper()),
        (400, "fail", "rejected", "bad signature"),
    ),
    "wrong-money": (lambda f, o: _signed(f, o, money="0.01"), (200, "success", "stray", "wrong_amount")),
    "money-exponent": (
        lambda f, o: _signed(f, o, money="9.9e0"),
        (400, "fail", "rejected", "malformed notify (amount is not a plain decimal)"),
    ),
    "money-array": (lambda f, o: urlencode(_signed(f, o)) + "&money=1", (400, "fail", "rejected", "repeated field")),
    "wrong-pid": (lambda f, o: _signed(f, o, pid="9999"), (400, "fail", "foreign", "another merchant")),
    "unknown-order": (
        lambda f, o: _signed(f, o, out_trade_no="nosuchorder00"),
        (200, "success", "stray", "unknown_order"),
    ),
    "status-wait-buyer-pay": (
        lambda f, o: _signed(f, o, trade_status="WAIT_BUYER_PAY"),
        (200, "success", "ignored", "pending"),
    ),
    "status-trade-closed": (
        lambda f, o: _signed(f, o, trade_status="TRADE_CLOSED"),
        (200, "success", "ignored", "pending"),
    ),
    "status-lowercase": (
        lambda f, o: _signed(f, o, trade_status="trade_success"),
        (200, "success", "ignored", "pending"),
    ),
    "sign-type-rsa": (
        lambda f, o: {**_signed(f, o), "sign_type": "RSA"},
        (400, "fail", "rejected", "unsupported sign_type"),
    ),
    "nul-byte": (lambda f, o: _signed(f, o, name="a\x00b"), (400, "fail", "rejected", "malformed field")),
    "non-ascii-order-id": (
        lambda f, o: _signed(f, o, out_trade_no="订单"),
        (400, "fail", "rejected", "malformed notify (bad out_trade_no)"),
    ),
    "huge-value": (lambda f, o: _signed(f, o, param="x" * 4000), (400, "fail", "rejected", "malformed field")),
}


@pytest.fixture(scope="module")
async def target(stack: Stack) -> dict[str, Any]:
    return await _opened(stack)


# The operator refuses to refund a trade it has not been paid for: the refusal is recorded for a person.
STRAY_OUTCOMES = {"wrong-money": "refund_refused", "unknown-order": "refund_refused"}


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_changes_nothing(stack: Stack, fake: FakeEpay, target: dict, name: str) -> None:
    make, (status, body, outcome, detail) = ATTACKS[name]
    fields = make(fake, target)
    last = await stack.last_notify_id()
    if isinstance(fields, str):
        answer = await stack.http.get(f"{NOTIFY}?{fields}")
    else:
        answer = await stack.http.get(NOTIFY, params=fields)
    assert (answer.status_code, answer.text) == (status, body)
    logged = await _logged_since(stack, last)
    assert [(o, d) for o, d, _ in logged] == [(outcome, detail)]
    if outcome == "stray":  # a signed notify proves the payment: its money goes back through the operator
        review = stack.env.client.get_workflow_handle(f"stray-epay-{fields['out_trade_no']}")
        assert (name, await review.result()) == (name, STRAY_OUTCOMES[name])
    view = await stack.view(target)
    assert (view["status"], view["keys"], view["paid_at"]) == ("awaiting_payment", [], None)
    assert "paid" not in stages(view)
    assert await stack.payment_status(target) == "pending"
    assert await stack.stock(view["sku"]) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
