"""The buyer's emails against a real SMTP server: text and HTML, Chinese and English, the right
links; the keys in the delivery mail and nowhere else; mail that waits out an SMTP outage; and the
order lookup, which answers the same for everyone and mails only an address that ordered."""

import asyncio
import logging
from datetime import UTC, datetime
from email.header import decode_header, make_header

import pytest
from sqlalchemy import func, select, text

from miaofa import coupons
from miaofa.crypto.vault import Vault
from miaofa.db.models import OutboxMessage
from miaofa.messaging import outbox
from tests.conftest import TEST_VAULT_KEY, stack_settings
from tests.helpers.messaging import SHOP_URL, Smtp, dispatcher, drain, emit, make_order, new_email, part, rows
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.usefixtures("quiet_outbox")

VAULT = Vault(TEST_VAULT_KEY)


def _subject(mail) -> str:
    return str(make_header(decode_header(mail["Subject"])))


def _link(base: str, order_id: str) -> str:
    return f"{base}/o/{order_id}?token={VAULT.order_token(order_id)}"


async def _mails_to(mailbox, address: str, count: int = 1) -> list:
    def found() -> list:
        mails = [m for m in mailbox.messages if m["To"] == address]
        return mails if len(mails) >= count else []

    return await eventually(found, timeout=10, message=f"{count} mail(s) to {address}")


async def test_the_delivery_email_is_text_and_html_in_the_buyers_language(dev_stack: Stack, smtp, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _, mailbox = smtp
    keys = ["DELIVERY-KEY-ALPHA-0001", "DELIVERY-KEY-BETA-0002"]
    sku = await dev_stack.product(keys)
    english, chinese, unknown = new_email(), new_email(), new_email()
    orders = {
        english: await dev_stack.ordered(sku, email=english, lang="en", headers={"Accept-Language": "zh-CN"}),
        chinese: await dev_stack.ordered(sku, email=chinese, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}),
    }
    for order in orders.values():
        await dev_stack.pay(order)
    mails = {address: await _mails_to(mailbox, address) for address in orders}
    base = dev_stack.settings.api_url
    for address, order in orders.items():
        [mail] = mails[address]
        assert mail.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in mail.get_payload()] == ["text/plain", "text/html"]
        plain, html = part(mail), part(mail, "html")
        [key] = [k for k in keys if k in plain]  # one key each, in both parts
        assert key in html
        link = _link(base, order["order_id"])
        assert link == f"{base}/o/{order['order_id']}?token={order['access_token']}"
        assert [line for line in plain.splitlines() if line.startswith("http")] == [link]
        assert f'href="{link}"' in html
    english_mail, chinese_mail = mails[english][0], mails[chinese][0]
    assert english_mail["Subject"] == f"Your keys for order {orders[english]['order_id']}"
    assert "Your keys:" in part(english_mail) and "卡密" not in part(english_mail)
    assert _subject(chinese_mail) == f"订单 {orders[chinese]['order_id']} 的卡密"
    assert "您的卡密：" in part(chinese_mail) and "Your keys" not in part(chinese_mail)

    # No language asked for and no Accept-Language: both, Chinese first.
    sku2 = await dev_stack.product(["DELIVERY-KEY-GAMMA-0003"])
    order = await dev_stack.ordered(sku2, email=unknown)
    await dev_stack.pay(order)
    [mail] = await _mails_to(mailbox, unknown)
    plain = part(mail)
    assert plain.index("您的卡密：") < plain.index("Your keys:")
    assert plain.count("DELIVERY-KEY-GAMMA-0003") == 2
    assert [line for line in plain.splitlines() if line.startswith("http")] == [_link(base, order["order_id"])] * 2

    # The keys are in the mail, and nowhere in what the shop logged or queued.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert "delivery email sent for order" in logged
    async with dev_stack.sessionmaker() as session:
        queued = "\n".join(str(row) for row in (await session.execute(select(OutboxMessage.__table__))).all())
    for key in [*keys, "DELIVERY-KEY-GAMMA-0003"]:
        assert key not in logged and key not in queued


async def test_coupon_and_refund_emails_go_through_the_outbox(sessionmaker) -> None:
    smtp = Smtp()
    smtp.start()
    try:
        zh, en = new_email(), new_email()
        zh_order = await make_order(sessionmaker, zh, lang="zh")
        en_order = await make_order(sessionmaker, en, lang="en")
        async with sessionmaker.begin() as session:
            coupon = await coupons.issue_for_late_delivery(session, zh_order, "sla_timer", datetime.now(UTC))
        await emit(sessionmaker, zh_order, outbox.Event.COUPON_ISSUED)
        await emit(sessionmaker, en_order, outbox.Event.REFUNDED)
        d = dispatcher(sessionmaker, smtp.url)
        await drain(d, lambda: smtp.mailbox.to(zh) and smtp.mailbox.to(en))
        await d.aclose()
    finally:
        smtp.stop()
    [coupon_mail], [refund_mail] = smtp.mailbox.to(zh), smtp.mailbox.to(en)
    assert _subject(coupon_mail) == f"订单 {zh_order} 的补偿优惠券"
    plain, html = part(coupon_mail), part(coupon_mail, "html")
    assert f"送您一张优惠券：{coupon.code}（10%）" in plain and coupon.code in html
    assert [line for line in plain.splitlines() if line.startswith("http")] == [_link(SHOP_URL, zh_order)]
    assert "coupon" not in plain.lower()  # Chinese only
    plain, html = part(refund_mail), part(refund_mail, "html")
    assert refund_mail["Subject"] == f"Order {en_order} refunded"
    assert f"Order {en_order} has been refunded: 9.90 CNY, to the way you paid." in plain
    assert f'href="{_link(SHOP_URL, en_order)}"' in html
    assert [(r.topic, r.status) for r in await rows(sessionmaker, zh_order) if r.channel == "email"] == [
        ("email.coupon", "sent")
    ]
    queued = " ".join(str(r.detail) + str(r.buyer_hash) for r in await rows(sessionmaker, zh_order))
    assert coupon.code not in queued and zh not in queued


async def test_an_smtp_outage_delays_the_mail_and_loses_nothing(sessionmaker) -> None:
    smtp = Smtp()  # the port is chosen, but nothing listens on it yet
    email = new_email()
    order_id = await make_order(sessionmaker, email, lang="en")
    await emit(sessionmaker, order_id, outbox.Event.REFUNDED)
    d = dispatcher(sessionmaker, smtp.url)
    stop = asyncio.Event()
    running = asyncio.create_task(d.run(stop))
    try:

        async def failed_thrice():  # SMTP is down: the mail fails, and is due again later
            [mail_row] = [r for r in await rows(sessionmaker, order_id) if r.channel == "email"]
            return mail_row if mail_row.attempts >= 3 else None

        mail_row = await eventually(failed_thrice, timeout=15, message="three failed attempts at the mail")
        assert (mail_row.status, mail_row.last_error) == ("pending", "ConnectionRefusedError")
        smtp.start()
        smtp.stop()  # up for a moment, then down again: still nothing lost
        smtp.start()
        [mail] = await smtp.mailbox.wait_for(email)
        assert mail["Subject"] == f"Order {order_id} refunded"
    finally:
        stop.set()
        await running
        await d.aclose()
        smtp.stop()
    [mail_row] = [r for r in await rows(sessionmaker, order_id) if r.channel == "email"]
    assert mail_row.status == "sent" and mail_row.attempts >= 4
    assert len(smtp.mailbox.to(email)) == 1


# ---- order lookup ---------------------------------------------------------------------------------


async def _lookups(sessionmaker) -> int:
    async with sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.topic == "email.lookup")
        )


async def test_lookup_answers_the_same_for_everyone_and_mails_only_the_buyer(
    dev_env, sessionmaker, sim_url, database_url
) -> None:
    smtp = Smtp()
    smtp.start()
    buyer, other, stranger = new_email(), new_email(), new_email()
    now = datetime.now(UTC)
    mine = [await make_order(sessionmaker, buyer, created_at=now.replace(year=2024, month=m)) for m in (1, 2)]
    theirs = await make_order(sessionmaker, other)
    try:
        async with running_stack(dev_env, sessionmaker, sim_url, **stack_settings(database_url, smtp.url)) as stack:
            answers = []
            for address, lang in ((buyer.upper(), "en"), (stranger, "en"), (other, None)):
                before = await _lookups(sessionmaker)
                answer = await stack.http.post(
                    "/orders/lookup",
                    json={"email": address, "lang": lang} if lang else {"email": address},
                    headers={"Accept-Language": "zh"},
                )
                answers.append((answer.status_code, answer.json()))
                assert await _lookups(sessionmaker) == before + 1  # the same work, known or not
            assert answers == [(202, {"status": "sent_if_any"})] * 3
            d = dispatcher(sessionmaker, smtp.url, shop_url=stack.settings.api_url)
            await drain(d, lambda: smtp.mailbox.to(buyer) and smtp.mailbox.to(other))
            await d.run_once()
            await d.aclose()
    finally:
        smtp.stop()
    [mail] = smtp.mailbox.to(buyer)  # sent to the address the orders were made with
    assert mail["To"] == buyer and mail["Subject"] == "Links to your orders"
    plain, html = part(mail), part(mail, "html")
    base = stack.settings.api_url
    assert [line for line in plain.splitlines() if line.startswith("http")] == [
        _link(base, mine[1]),
        _link(base, mine[0]),
    ]  # newest first
    assert _link(base, theirs) not in plain + html and theirs not in plain + html
    assert f'href="{_link(base, mine[0])}"' in html
    assert smtp.mailbox.to(stranger) == []
    [other_mail] = smtp.mailbox.to(other)
    assert _subject(other_mail) == "您的订单链接"  # from Accept-Language
    assert [line for line in part(other_mail).splitlines() if line.startswith("http")] == [_link(base, theirs)]
    async with sessionmaker() as session:
        statuses = (
            (
                await session.execute(
                    text("SELECT status FROM outbox WHERE topic = 'email.lookup' AND buyer_hash = :h"),
                    {"h": VAULT.buyer_hash(stranger)},
                )
            )
            .scalars()
            .all()
        )
    assert statuses == ["skipped"]


async def test_lookup_refuses_bad_input_and_too_many_asks_changing_nothing(
    dev_env, sessionmaker, sim_url, database_url
) -> None:
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        lookup_rate_per_ip_per_minute=4,
        lookup_rate_per_email_per_hour=2,
        **stack_settings(database_url, ""),
    ) as stack:
        before = await _lookups(sessionmaker)
        for body in (
            {"email": "not-an-email"},
            {"email": "a@x.io,b@y.io"},
            {"email": "a@x.io\n"},
            {},
            {"email": "buyer@example.com", "lang": "fr"},
            {"email": "x" * 250 + "@example.com"},
            {"email": 42},
        ):
            answer = await stack.http.post("/orders/lookup", json=body)
            assert (answer.status_code, answer.json()["error"]) == (422, "invalid_input"), body
        answer = await stack.http.post("/orders/lookup", content=b"{", headers={"Content-Type": "application/json"})
        assert answer.status_code == 422
        assert await _lookups(sessionmaker) == before  # refused: nothing queued, nothing counted

        first = new_email()
        for _ in range(2):
            assert (await stack.http.post("/orders/lookup", json={"email": first})).status_code == 202
        per_email = await stack.http.post("/orders/lookup", json={"email": first.upper()})  # the same buyer
        assert per_email.status_code == 429
        assert per_email.json() == {
            "error": "too_many_requests",
            "detail": "too many lookups for this email; try again in 3600 s",
        }
        assert per_email.headers["retry-after"] == "3600"
        for _ in range(2):  # the address's 3rd and 4th
            assert (await stack.http.post("/orders/lookup", json={"email": new_email()})).status_code == 202
        per_ip = await stack.http.post("/orders/lookup", json={"email": new_email()})
        assert per_ip.status_code == 429
        assert per_ip.json()["detail"].startswith("too many lookups from your address; try again in ")
        assert 1 <= int(per_ip.headers["retry-after"]) <= 60
        assert await _lookups(sessionmaker) == before + 4


# ---- the demo's mail catcher ----------------------------------------------------------------------


async def test_the_demo_mail_catcher_keeps_each_mail_as_a_private_file(tmp_path) -> None:
    from aiosmtpd.controller import Controller

    from miaofa.devstack.mailcatch import MailDir
    from miaofa.devstack.procs import free_port
    from miaofa.messaging.mailer import Mailer

    port = free_port()
    controller = Controller(MailDir(tmp_path / "mail"), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await Mailer(f"smtp://127.0.0.1:{port}", "Miaofa <shop@miaofa.test>").send(
            "buyer@example.com", "Your keys", "KEY-1", "<p>KEY-1</p>"
        )
    finally:
        controller.stop()
    [saved] = list((tmp_path / "mail").iterdir())
    assert saved.name.endswith("-00001-buyer@example.com.eml")
    assert (saved.stat().st_mode & 0o777, (tmp_path / "mail").stat().st_mode & 0o777) == (0o600, 0o700)
    assert b"Subject: Your keys" in saved.read_bytes() and b"KEY-1" in saved.read_bytes()


def test_miaofa_up_says_where_mail_goes() -> None:
    from miaofa.devstack.up import _mail_destination
    from miaofa.settings import Settings

    caught = _mail_destination(Settings(smtp_url="smtp://127.0.0.1:1025", data_dir="data"), True)
    assert caught.startswith("caught locally, one .eml file each in /") and caught.endswith("/data/mail")
    relayed = _mail_destination(Settings(smtp_url="smtps://shop:hunter2-password@relay.example:465"), False)
    assert relayed == "sent through smtps://relay.example:465 (SMTP_URL)"  # never the password


async def test_an_order_in_an_unknown_language_is_refused_and_reserves_nothing(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    answer = await dev_stack.order(sku, email=new_email(), lang="fr")
    assert answer.status_code == 422
    assert answer.json() == {"error": "invalid_input", "detail": "lang: Input should be 'zh' or 'en'"}
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    order = await dev_stack.ordered(sku, email=new_email(), headers={"Accept-Language": "fr-FR, de;q=0.5"})
    async with dev_stack.sessionmaker() as session:
        lang = await session.scalar(text("SELECT lang FROM orders WHERE id = :o"), {"o": order["order_id"]})
    assert lang is None  # neither Chinese nor English asked for: the emails carry both
