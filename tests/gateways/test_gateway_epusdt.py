"""epusdt: the adapter against a local server (tests/helpers/fakes/epusdt.py) and through the real saga.

check-status is unauthenticated, so only a signed status-2 callback delivers: a lost callback
leaves the order waiting even when check-status says paid, until the callback is retried.
"""

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from activities.payments import PaymentActivities
from miaofa import steps as s
from miaofa.db.models import AuditLog, NotifyLog
from miaofa.gateways.base import GatewayRefused, InvalidNotify, PaymentRequest, Unsupported
from miaofa.gateways.config import EpusdtSettings
from miaofa.gateways.epusdt import EpusdtGateway, parse_json, sign_content
from miaofa.gateways.md5_sign import md5_sign
from tests.conftest import stack_settings
from tests.helpers.fakes.epusdt import FakeEpusdt, go_float, go_json, go_sign
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack, stages
from tests.helpers.waiting import eventually

TOKEN = "epusdt-test-token-3b9d27c4a1"
NOTIFY = "/payments/epusdt/notify"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeEpusdt]:
    server = FakeEpusdt(TOKEN)
    async with serve(server.app, bind()) as url:
        server.url = url
        yield server
    await server.aclose()


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
        epusdt=EpusdtSettings(api_url=fake.url, api_token=TOKEN),
    ) as running:
        yield running


def _request(order_id: str, amount_cents: int = 990) -> PaymentRequest:
    return PaymentRequest(
        order_id,
        amount_cents,
        "CNY",
        "x",
        "http://127.0.0.1:9/n",
        datetime.now(UTC),
        return_url="https://shop/orders/o?token=t",
    )


async def _ordered(stack: Stack, sku: str | None = None) -> dict[str, Any]:
    return await stack.ordered(sku or await stack.product(1), gateway="epusdt")


async def _logged_since(stack: Stack, last_id: int) -> list[tuple[str, str, str | None]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(
            select(NotifyLog).where(NotifyLog.id > last_id, NotifyLog.gateway == "epusdt").order_by(NotifyLog.id)
        )
        return [(row.outcome, row.detail, row.order_id) for row in rows]


# ---- the protocol, without the stack ----


@pytest.mark.parametrize(
    "json_number, go_text",
    [
        ("100", "100"),
        ("100.0", "100"),
        ("15.625", "15.625"),
        ("1.10", "1.1"),
        ("0.01", "0.01"),
        ("9.90", "9.9"),
        ("1234567.5", "1234567.5"),
        ("0.0001", "0.0001"),
    ],
)
def test_numbers_are_written_as_go_formats_them(json_number: str, go_text: str) -> None:
    data = parse_json(f'{{"n":{json_number}}}'.encode())
    assert sign_content(data) == f"n={go_text}" == f"n={go_float(float(json_number))}"


def test_signing_matches_a_go_formatted_example_by_hand() -> None:
    body = (
        b'{"trade_id":"202411250001","order_id":"O1","amount":9.90,"actual_amount":1.375,"token":"TX1",'
        b'"block_transaction_id":"0xab","signature":"","status":2}'
    )
    content = (
        "actual_amount=1.375&amount=9.9&block_transaction_id=0xab&order_id=O1&status=2&token=TX1&trade_id=202411250001"
    )
    by_hand = hashlib.md5((content + "TOKEN").encode()).hexdigest()
    data = parse_json(body)
    assert sign_content(data) == content
    assert md5_sign(sign_content(data), "TOKEN") == by_hand == go_sign(json.loads(body), "TOKEN")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":9.9e0}',
        b'{"a":1,"a":2}',
        b'{"a":' + b"9" * 40 + b"}",
        b"[" * 50000,
        b'{"a":"\xff"}',
    ],
    ids=["nan", "infinity", "exponent", "repeated-key", "huge-number", "deep", "bad-utf8"],
)
def test_inexact_json_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


async def test_create_check_status_and_the_duplicate_order(fake: FakeEpusdt, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="miaofa.gateways.epusdt")
    gateway = EpusdtGateway(fake.url, TOKEN)
    created = await gateway.create_payment(_request("u-1", 1990))
    trade = fake.trades[created.payment_id]
    assert (trade.order_id, trade.amount, trade.actual_amount) == ("u-1", 19.9, 2.7639)
    assert created.pay_url == f"{fake.url}/pay/checkout-counter/{created.payment_id}"
    with pytest.raises(GatewayRefused, match=r"already has a transaction \(10002\)"):
        await gateway.create_payment(_request("u-1", 1990))
    assert (await gateway.query(created.payment_id, "u-1")).status == "pending"
    fake.drop_callbacks = True
    try:
        await fake.pay(created.payment_id)
    finally:
        fake.drop_callbacks = False
    assert (await gateway.query(created.payment_id, "u-1")).status == "pending"
    notice = await gateway.verify_notify({}, fake.sent[-1], {})
    assert (
        notice.payment_id,
        notice.order_id,
        notice.merchant_id,
        notice.status,
        notice.amount_cents,
        notice.currency,
        notice.event_id,
    ) == (created.payment_id, "u-1", "", "paid", 1990, "CNY", fake.trades[created.payment_id].block_transaction_id)
    assert f"the gateway reports trade {created.payment_id} paid; delivery waits for its signed callback" in caplog.text
    fake.trades[created.payment_id].status = 3
    assert (await gateway.query(created.payment_id, "u-1")).status == "closed"
    assert (await gateway.query("nosuch", "u-1")).status == "unknown"
    with pytest.raises(GatewayRefused, match=r"refused \(401\)"):
        await EpusdtGateway(fake.url, "another-token").create_payment(_request("u-2"))
    with pytest.raises(GatewayRefused, match="only CNY"):
        await gateway.create_payment(PaymentRequest("u-3", 100, "USD", "x", "http://n", datetime.now(UTC)))
    await gateway.aclose()


async def test_the_close_step_answers_unsupported_without_a_failure(caplog) -> None:
    gateway = EpusdtGateway("http://127.0.0.1:9", TOKEN)
    closing = PaymentActivities(None, {"epusdt": gateway}, "https://shop.example", "https://shop.example", None)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG):
        answer = await closing.close_payment(s.GatewayStep("o-1", "epusdt", "t-1"))
    assert answer == s.PaymentSnapshot(s.CLOSE_UNSUPPORTED, 0, "", None, "t-1", query_proves_payment=False)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    await gateway.aclose()


async def test_close_and_refund_are_unsupported() -> None:
    gateway = EpusdtGateway("http://127.0.0.1:9", TOKEN)
    with pytest.raises(Unsupported, match="expires by itself"):
        await gateway.close("t", "o")
    with pytest.raises(Unsupported, match="a person's transfer"):
        await gateway.refund("t", "o", 100, "r")
    with pytest.raises(ValueError, match="empty"):
        EpusdtGateway("http://127.0.0.1:9", "")


@pytest.mark.parametrize("value", ["a\x00b", "x" * 5000, "地址"], ids=["nul", "huge", "non-ascii-id"])
async def test_bad_input_is_an_invalid_notify(value: str) -> None:
    fields = {
        "trade_id": value,
        "order_id": "o",
        "amount": 9.9,
        "actual_amount": 1.375,
        "token": "T",
        "block_transaction_id": "0x1",
        "status": 2,
    }
    body = go_json({**fields, "signature": go_sign(fields, TOKEN)})
    with pytest.raises(InvalidNotify):
        await EpusdtGateway("http://127.0.0.1:9", TOKEN).verify_notify({}, body, {})


# ---- through the saga ----


async def test_pay_callback_delivers(stack: Stack, fake: FakeEpusdt) -> None:
    order = await _ordered(stack)
    trade = fake.trade_of(order["order_id"])
    assert (order["payment"]["payment_id"], order["payment"]["pay_url"]) == (
        trade.trade_id,
        f"{fake.url}/pay/checkout-counter/{trade.trade_id}",
    )
    last = await stack.last_notify_id()
    async with httpx.AsyncClient() as buyer:
        paid = await buyer.post(f"{fake.url}/pay/{trade.trade_id}")
    assert paid.json() == {"callback": "ok"}
    view = await stack.wait_status(order, "delivered")
    assert len(view["keys"]) == 1 and "notified" in stages(view)
    assert await _logged_since(stack, last) == [("accepted", "paid", order["order_id"])]


async def test_check_status_saying_paid_does_not_deliver_until_the_signed_callback(
    stack: Stack, fake: FakeEpusdt, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="miaofa.gateways.epusdt")
    order = await _ordered(stack)
    trade = fake.trade_of(order["order_id"])
    fake.drop_callbacks = True
    try:
        assert await fake.pay(trade.trade_id) is None
    finally:
        fake.drop_callbacks = False
    checks = fake.checks
    await eventually(lambda: fake.checks >= checks + 2, message="the saga to poll twice since the payment")
    await stack.settled(order)  # and to have judged what its polls found
    view = await stack.view(order)
    assert (view["status"], view["keys"]) == ("awaiting_payment", [])
    assert not {"paid", "polled", "notified"} & set(stages(view))
    assert f"the gateway reports trade {trade.trade_id} paid; delivery waits for its signed callback" in caplog.text
    retried = await fake.post(trade, fake.sent[-1])
    assert (retried.status_code, retried.text) == (200, "ok")
    view = await stack.wait_status(order, "delivered")
    assert "notified" in stages(view) and "polled" not in stages(view)


async def test_duplicated_reordered_and_replayed_callbacks_deliver_once(stack: Stack, fake: FakeEpusdt) -> None:
    sku = await stack.product(2)
    a, b = await _ordered(stack, sku), await _ordered(stack, sku)
    trade_a, trade_b = fake.trade_of(a["order_id"]), fake.trade_of(b["order_id"])
    await fake.pay(trade_a.trade_id)
    await stack.wait_status(a, "delivered")
    paid_a = fake.sent[-1]
    last = await stack.last_notify_id()
    for _ in range(3):
        assert (await fake.post(trade_a, paid_a)).text == "ok"
    assert (await fake.send_status(trade_a.trade_id, 1)).text == "ok"  # a late "waiting"
    assert (await fake.send_status(trade_a.trade_id, 3)).text == "ok"  # and "expired"
    onto_b = paid_a.replace(a["order_id"].encode(), b["order_id"].encode())  # A's signature, B's order
    replay = await fake.post(trade_b, onto_b)
    assert (replay.status_code, replay.text) == (400, "fail")
    await stack.settled(a)
    await stack.settled(b)
    assert await _logged_since(stack, last) == [("duplicate", "paid", a["order_id"])] * 3 + [
        ("ignored", "pending", a["order_id"]),
        ("ignored", "closed", a["order_id"]),
        ("rejected", "bad signature", None),
    ]
    view_a, view_b = await stack.view(a), await stack.view(b)
    assert stages(view_a).count("delivered") == 1 and len(view_a["keys"]) == 1
    assert (view_b["status"], view_b["keys"]) == ("awaiting_payment", [])
    assert await stack.stock(sku) == {"available": 0, "reserved": 1, "sold": 1, "refunded": 0}


# ---- the attack corpus: each against an open order, each changes nothing ----


def _body(fake: FakeEpusdt, order: dict, api_token: str = TOKEN, **changes: Any) -> bytes:
    trade = fake.trade_of(order["order_id"])
    fields = fake.callback_fields(
        trade, api_token=api_token, **{"status": 2, "block_transaction_id": "0xfeed", **changes}
    )
    return go_json(fields)


def _resigned(body: bytes, signature: str) -> bytes:
    data = parse_json(body)
    return go_json(
        {**data, "amount": float(data["amount"]), "actual_amount": float(data["actual_amount"]), "signature": signature}
    )


def _empty_key_signature(fake: FakeEpusdt, order: dict) -> str:
    return hashlib.md5(sign_content(parse_json(_body(fake, order))).encode()).hexdigest()


ATTACKS: dict[str, tuple[Any, tuple[int, str, str, str]]] = {
    "bad-signature": (lambda f, o: _resigned(_body(f, o), "0" * 32), (400, "fail", "rejected", "bad signature")),
    "another-token": (
        lambda f, o: _body(f, o, api_token="someone-elses-token"),
        (400, "fail", "rejected", "bad signature"),
    ),
    "empty-key": (
        lambda f, o: _resigned(_body(f, o), _empty_key_signature(f, o)),
        (400, "fail", "rejected", "bad signature"),
    ),
    "uppercase-md5": (
        lambda f, o: _resigned(_body(f, o), parse_json(_body(f, o))["signature"].upper()),
        (400, "fail", "rejected", "bad signature"),
    ),
    "wrong-amount": (lambda f, o: _body(f, o, amount=0.01), (200, "ok", "stray", "wrong_amount")),
    "amount-as-string": (
        lambda f, o: _body(f, o, amount="9.90"),
        (400, "fail", "rejected", "malformed callback (amount is not a JSON number)"),
    ),
    "amount-exponent": (
        lambda f, o: _body(f, o).replace(b'"amount":9.9,', b'"amount":9.9e0,'),
        (400, "fail", "rejected", "not exact JSON"),
    ),
    "amount-array": (
        lambda f, o: _body(f, o).replace(b'"amount":9.9,', b'"amount":[9.9],'),
        (400, "fail", "rejected", "unsupported field type"),
    ),
    "amount-bool": (
        lambda f, o: _body(f, o).replace(b'"amount":9.9,', b'"amount":true,'),
        (400, "fail", "rejected", "unsupported field type"),
    ),
    "amount-nan": (
        lambda f, o: _body(f, o).replace(b'"amount":9.9,', b'"amount":NaN,'),
        (400, "fail", "rejected", "not exact JSON"),
    ),
    "amount-repeated": (
        lambda f, o: _body(f, o).replace(b'"amount":9.9,', b'"amount":9.9,"amount":9.9,'),
        (400, "fail", "rejected", "not exact JSON"),
    ),
    "amount-sub-cent": (
        lambda f, o: _body(f, o, amount=9.901),
        (400, "fail", "rejected", "malformed callback (amount has more decimals than its currency)"),
    ),
    "unknown-order": (
        lambda f, o: _body(f, o, order_id="nosuchorder00", trade_id="nosuchtrade00"),
        (200, "ok", "stray", "unknown_order"),
    ),
    "another-trade": (lambda f, o: _body(f, o, trade_id="202499999999"), (200, "ok", "stray", "other_payment")),
    "status-1-waiting": (
        lambda f, o: _body(f, o, status=1, block_transaction_id=""),
        (200, "ok", "ignored", "pending"),
    ),
    "status-3-expired": (lambda f, o: _body(f, o, status=3, block_transaction_id=""), (200, "ok", "ignored", "closed")),
    "status-as-string": (
        lambda f, o: _body(f, o, status="2"),
        (400, "fail", "rejected", "malformed callback (bad status)"),
    ),
    "nul-byte": (lambda f, o: _body(f, o, token="T\x00X"), (400, "fail", "rejected", "malformed field")),
    "not-json": (lambda f, o: b"trade_id=1&status=2", (400, "fail", "rejected", "not exact JSON")),
}


@pytest.fixture(scope="module")
async def target(stack: Stack) -> dict[str, Any]:
    return await _ordered(stack)


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_changes_nothing(stack: Stack, fake: FakeEpusdt, target: dict, name: str) -> None:
    make, (status, body, outcome, detail) = ATTACKS[name]
    sent = make(fake, target)
    last = await stack.last_notify_id()
    answer = await stack.http.post(NOTIFY, content=sent, headers={"Content-Type": "application/json"})
    assert (answer.status_code, answer.text) == (status, body)
    assert [(o, d) for o, d, _ in await _logged_since(stack, last)] == [(outcome, detail)]
    if outcome == "stray":  # a signed callback proves the payment; epusdt has no refund API: by hand
        review = stack.env.client.get_workflow_handle(f"stray-epusdt-{parse_json(sent)['trade_id']}")
        assert await review.result() == "refund_by_hand"
    view = await stack.view(target)
    assert (view["status"], view["keys"], view["paid_at"]) == ("awaiting_payment", [], None)
    assert "paid" not in stages(view)
    assert await stack.payment_status(target) == "pending"
    assert await stack.stock(view["sku"]) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
    assert fake.trade_of(target["order_id"]).status == 1


async def test_a_support_refund_is_left_to_a_person_and_audited(stack: Stack, fake: FakeEpusdt) -> None:
    order = await _ordered(stack)
    await fake.pay(fake.trade_of(order["order_id"]).trade_id)
    await stack.wait_status(order, "delivered")
    answer = await stack.http.post(
        f"/support/orders/{order['order_id']}/refund", headers=stack.support, json={"reason": "buyer asks"}
    )
    # USDT goes back by hand (epusdt has no refund API): the timeline and the audit log say a person must.
    assert answer.status_code == 200, answer.text
    view = await stack.wait_status(order, "refunded")
    assert ("refund_by_hand" in stages(view), view["keys"]) == (True, [])
    async with stack.sessionmaker() as session:
        audited = await session.scalar(
            select(AuditLog).where(
                AuditLog.action == "payment.refund_by_hand", AuditLog.target == f"refund-{order['order_id']}"
            )
        )
    assert (audited.detail["gateway"], audited.detail["amount_cents"]) == ("epusdt", order["amount_cents"])
