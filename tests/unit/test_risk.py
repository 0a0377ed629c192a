"""The admission rules on their own: rate windows, caps counted in PostgreSQL under concurrency,
text checks at the edge, and who the client is."""

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from api.client_ip import client_ip
from miaofa import catalog
from miaofa import contract as c
from miaofa.db.models import CardKey, Order, OrderAdmission
from miaofa.errors import QuantityLimit, TooManyOpenOrders
from miaofa.risk import limiters
from miaofa.risk.admission import Admission, Applicant, Windows, forget
from miaofa.risk.rules import Rules
from miaofa.text import control_character, email_problem
from tests.conftest import TEST_VAULT_KEY


def test_sliding_window_counts_the_last_minute() -> None:
    window = limiters.SlidingWindow(3, window=60)
    for t in (0, 10, 20):
        assert window.wait("k", t) == 0
        window.hit("k", t)
    assert window.wait("k", 30) == pytest.approx(30)  # the hit at 0 leaves at 60
    assert window.wait("other", 30) == 0
    assert window.wait("k", 60.5) == 0  # sliding: one slot free again, not a whole new minute
    window.hit("k", 60.5)
    assert window.wait("k", 61) == pytest.approx(9)
    assert limiters.SlidingWindow(0).wait("k", 0) == 0  # 0 = off


def test_sliding_window_memory_is_bounded() -> None:
    window = limiters.SlidingWindow(1, max_keys=100)
    for i in range(1000):
        window.hit(f"k{i}", 0)
    assert len(window._hits) == 100


def test_min_interval_and_slots() -> None:
    every = limiters.MinInterval(5)
    assert every.take("o1", 100) == 0
    assert every.take("o1", 101) == pytest.approx(4)
    assert every.take("o2", 101) == 0
    assert every.take("o1", 105) == 0
    slots = limiters.Slots(2)
    assert [slots.acquire("ip"), slots.acquire("ip"), slots.acquire("ip")] == [True, True, False]
    slots.release("ip")
    assert slots.acquire("ip") and slots.held("ip") == 2
    assert limiters.Slots(0).acquire("ip")  # 0 = off


def test_ipv6_clients_count_by_their_64() -> None:
    assert (
        limiters.client_bucket("2001:db8:1:2:aaaa::1")
        == limiters.client_bucket("2001:db8:1:2:bbbb::9")
        == "2001:db8:1:2::/64"
    )
    assert limiters.client_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    admission = Admission(Windows(), TEST_VAULT_KEY)
    assert admission.client_hash("192.0.2.1") == admission.client_hash("::ffff:192.0.2.1")
    assert "192.0.2.1" not in admission.client_hash("192.0.2.1")  # stored as a keyed hash only


def test_ipv6_clients_count_by_their_56_and_48_too() -> None:
    """Issue 17, N4: a home's /56 is 256 /64s, a 6to4 /48 65,536: the coarser caps count them whole."""
    assert limiters.network_buckets("2001:db8:0:1ab:aaaa::1") == ("2001:db8:0:100::/56", "2001:db8::/48")
    assert limiters.network_buckets("2002:c000:201:7::1") == ("2002:c000:201::/56", "2002:c000:201::/48")
    assert limiters.network_buckets("192.0.2.1") == ("192.0.2.1", "192.0.2.1")  # an IPv4 address is its own
    assert limiters.network_buckets("::ffff:192.0.2.1") == ("192.0.2.1", "192.0.2.1")
    admission = Admission(Windows(), TEST_VAULT_KEY)
    assert admission.network_hashes("2001:db8:0:101::1") == admission.network_hashes("2001:db8:0:1ff::9")
    assert admission.network_hashes("2001:db8:0:201::1")[0] != admission.network_hashes("2001:db8:0:101::1")[0]
    assert admission.network_hashes("2001:db8:0:201::1")[1] == admission.network_hashes("2001:db8:0:101::1")[1]
    assert admission.network_hashes("192.0.2.1") == (admission.client_hash("192.0.2.1"),) * 2


def _request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


def test_x_forwarded_for_is_read_only_from_trusted_proxies() -> None:
    assert client_ip(_request("203.0.113.9", "1.2.3.4"), "") == "203.0.113.9"
    assert client_ip(_request("203.0.113.9", "1.2.3.4"), "10.0.0.0/8") == "203.0.113.9"
    assert client_ip(_request("10.0.0.2", "1.2.3.4"), "10.0.0.0/8") == "1.2.3.4"
    # A client's own X-Forwarded-For comes first: only the hop our proxy appended counts.
    assert client_ip(_request("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.7"), "10.0.0.0/8") == "1.2.3.4"
    assert client_ip(_request("10.0.0.2", "not-an-ip"), "10.0.0.0/8") == "10.0.0.2"
    assert client_ip(_request("10.0.0.2"), "10.0.0.0/8") == "10.0.0.2"


def test_text_checks() -> None:
    for bad in ("a\x00b", "a\tb", "a\u200bb", "a\u202eb", "a\u2028b", "a\x85b", "line\n"):
        assert control_character(bad), repr(bad)
    assert control_character("Steam ¥50 卡密") is None
    for ok in ("me@example.com", "o'brien+shop@mail.example.co.uk", "买家@例子.中国"):
        assert email_problem(ok) is None, ok
    for bad in (
        "me@example.com,evil.com",
        "me@example.com, you@example.com",
        "a@b.co;c@d.co",
        "a b@c.co",
        "<me@example.com>",
        "Me <me@example.com>",
        '"me"@example.com',
        "me@example",
        "me@@example.com",
        "me@[127.0.0.1]",
        "user%relay@example.com",
        ".me@example.com",
        "me@-x.com",
        "me@example.com.",
        "not-an-email",
        "@example.com",
    ):
        assert email_problem(bad), bad


# ---- the caps, in PostgreSQL -------------------------------------------------------------------


CAPS = Rules(open_per_email=3, open_per_ip=4, open_units_per_ip=6, open_per_buyer_product=2, units_per_buyer_product=5)
WINDOWS = Windows(payment_seconds=900, pending_seconds=60)


async def _product(sessionmaker) -> int:
    async with sessionmaker.begin() as session:
        product = await catalog.create_product(
            session, sku="r-" + uuid.uuid4().hex[:10], name="risk test", price_cents=100, currency="CNY"
        )
        return product.id


async def _admit(
    sessionmaker,
    admission: Admission,
    buyer: str,
    client: str | None,
    product_id: int,
    quantity: int = 1,
    order_id: str | None = None,
) -> str:
    """The order id admitted, or the refusal's error code."""
    order_id = order_id or _order_id()
    try:
        async with sessionmaker.begin() as session:
            await admission.admit(
                session, CAPS, Applicant(order_id, buyer, client, product_id, quantity), datetime.now(UTC)
            )
    except (TooManyOpenOrders, QuantityLimit) as exc:
        return exc.error
    return order_id


def _order_id() -> str:
    return uuid.uuid4().hex[:20]


def _tally(order_ids: list[str], answers: list[str]) -> Counter[str]:
    """How many were admitted (answered with their own order id), and how many refused with each code."""
    return Counter(
        "admitted" if answer == order_id else answer for order_id, answer in zip(order_ids, answers, strict=True)
    )


async def test_caps_hold_across_api_processes_under_a_burst(sessionmaker) -> None:
    product_id = await _product(sessionmaker)
    # Three API processes (three Admission objects), 30 requests at once from one buyer.
    processes = [Admission(WINDOWS, TEST_VAULT_KEY) for _ in range(3)]
    buyer = "b-" + uuid.uuid4().hex[:12]
    ids = [_order_id() for _ in range(30)]
    answers = await asyncio.gather(
        *(_admit(sessionmaker, processes[i % 3], buyer, None, product_id, order_id=ids[i]) for i in range(30))
    )
    assert _tally(ids, answers) == {"admitted": 2, "too_many_open_orders": 28}  # 2 per buyer and product
    # One address, many buyers: 4 orders at most, 6 units at most.
    client = processes[0].client_hash("198.51.100.20")
    ids = [_order_id() for _ in range(20)]
    answers = await asyncio.gather(
        *(
            _admit(
                sessionmaker,
                processes[i % 3],
                f"x-{uuid.uuid4().hex[:8]}",
                client,
                product_id,
                quantity=2,
                order_id=ids[i],
            )
            for i in range(20)
        )
    )
    assert _tally(ids, answers) == {"admitted": 3, "too_many_open_orders": 17}  # 3 × 2 units = 6


async def test_quantity_and_email_caps(sessionmaker) -> None:
    p1, p2, p3 = [await _product(sessionmaker) for _ in range(3)]
    admission = Admission(WINDOWS, TEST_VAULT_KEY)
    buyer = "q-" + uuid.uuid4().hex[:12]
    assert await _admit(sessionmaker, admission, buyer, None, p1, quantity=6) == "quantity_limit"
    first, second, third, fourth = (_order_id() for _ in range(4))
    assert await _admit(sessionmaker, admission, buyer, None, p1, quantity=3, order_id=first) == first
    assert await _admit(sessionmaker, admission, buyer, None, p1, quantity=3) == "quantity_limit"
    assert await _admit(sessionmaker, admission, buyer, None, p1, quantity=2, order_id=second) == second  # 5 units
    assert await _admit(sessionmaker, admission, buyer, None, p2, order_id=third) == third
    assert await _admit(sessionmaker, admission, buyer, None, p3) == "too_many_open_orders"  # 3 open already
    # A retried order id is already counted: it is never refused for itself.
    assert await _admit(sessionmaker, admission, buyer, None, p1, quantity=3, order_id=first) == first
    # The order settles (paid, expired …): it stops counting; a forgotten admission too.
    async with sessionmaker.begin() as session:
        now = datetime.now(UTC)
        session.add(
            Order(
                id=first,
                product_id=p1,
                sku="x",
                quantity=3,
                email="q@example.com",
                buyer_hash=buyer,
                amount_cents=300,
                currency="CNY",
                gateway="simulator",
                status=c.DELIVERED,
                expires_at=now + timedelta(minutes=15),
            )
        )
    assert await _admit(sessionmaker, admission, buyer, None, p3, order_id=fourth) == fourth


async def test_open_orders_count_until_they_settle(sessionmaker) -> None:
    product_id = await _product(sessionmaker)
    admission = Admission(WINDOWS, TEST_VAULT_KEY)
    buyer = "o-" + uuid.uuid4().hex[:12]
    long_ago = datetime.now(UTC) - timedelta(minutes=5)  # past the API's wait
    async with sessionmaker.begin() as session:
        for status, order_id in (
            (c.AWAITING_PAYMENT, "open-" + uuid.uuid4().hex[:8]),
            (c.EXPIRED, "expd-" + uuid.uuid4().hex[:8]),
            (None, "lost-" + uuid.uuid4().hex[:8]),
        ):  # its workflow never wrote the order
            session.add(
                OrderAdmission(
                    order_id=order_id,
                    buyer_hash=buyer,
                    client_hash="",
                    product_id=product_id,
                    quantity=1,
                    created_at=long_ago,
                )
            )
            if status:
                session.add(
                    Order(
                        id=order_id,
                        product_id=product_id,
                        sku="x",
                        quantity=1,
                        email="o@example.com",
                        buyer_hash=buyer,
                        amount_cents=100,
                        currency="CNY",
                        gateway="simulator",
                        status=status,
                        expires_at=long_ago + timedelta(minutes=15),
                    )
                )
    second, third = _order_id(), _order_id()
    assert await _admit(sessionmaker, admission, buyer, None, product_id, order_id=second) == second  # 1 open + this
    assert await _admit(sessionmaker, admission, buyer, None, product_id) == "too_many_open_orders"  # 2 per product
    async with sessionmaker.begin() as session:  # the second did not open (sold out): forgotten at once
        await forget(session, second)
    assert await _admit(sessionmaker, admission, buyer, None, product_id, order_id=third) == third


# ---- the product's own cap: a share of its unsold keys (issue 17, N4) ----------------------------------

SHARE = Rules(unpaid_share=0.5, open_units_per_ip=100, open_units_per_net56=200, open_units_per_net48=400)


async def _product_with_keys(sessionmaker, keys: int) -> int:
    product_id = await _product(sessionmaker)
    async with sessionmaker.begin() as session:
        session.add_all(
            CardKey(product_id=product_id, ciphertext=b"-", key_hash=uuid.uuid4().bytes, status="available")
            for _ in range(keys)
        )
    return product_id


async def _apply(sessionmaker, admission: Admission, buyer: str, ip: str, product_id: int, quantity: int = 1) -> str:
    try:
        async with sessionmaker.begin() as session:
            await admission.admit(
                session,
                SHARE,
                Applicant(
                    _order_id(), buyer, admission.client_hash(ip), product_id, quantity, admission.network_hashes(ip)
                ),
                datetime.now(UTC),
            )
    except (TooManyOpenOrders, QuantityLimit) as exc:
        return exc.error
    return "admitted"


async def test_past_the_unpaid_share_only_newcomers_get_one_unit(sessionmaker) -> None:
    product_id = await _product_with_keys(sessionmaker, 10)
    admission = Admission(WINDOWS, TEST_VAULT_KEY)
    assert await _apply(sessionmaker, admission, "s-one", "198.51.100.1", product_id, quantity=4) == "admitted"
    # 4 of 10 held: under half, so anyone may still take more than one.
    assert await _apply(sessionmaker, admission, "s-one", "198.51.100.1", product_id, quantity=2) == "admitted"
    # 6 of 10 held: past half. A buyer or an address (or its /56, /48) holding some gets nothing more …
    assert await _apply(sessionmaker, admission, "s-one", "198.51.100.9", product_id) == "too_many_open_orders"
    assert await _apply(sessionmaker, admission, "s-two", "198.51.100.1", product_id) == "too_many_open_orders"
    # … a newcomer gets one unit, not two.
    assert await _apply(sessionmaker, admission, "s-three", "198.51.100.3", product_id, quantity=2) == "quantity_limit"
    assert await _apply(sessionmaker, admission, "s-three", "198.51.100.3", product_id) == "admitted"
    await _admit_ipv6_neighbours(sessionmaker, admission)
    # The cap is the product's: another product is not contended.
    other = await _product_with_keys(sessionmaker, 10)
    assert await _apply(sessionmaker, admission, "s-one", "198.51.100.1", other, quantity=2) == "admitted"


async def _admit_ipv6_neighbours(sessionmaker, admission: Admission) -> None:
    product_id = await _product_with_keys(sessionmaker, 4)
    assert await _apply(sessionmaker, admission, "n-one", "2001:db8:7:101::1", product_id, quantity=2) == "admitted"
    # Another /64 of the same /56 is not a newcomer.
    assert await _apply(sessionmaker, admission, "n-two", "2001:db8:7:1ee::1", product_id) == "too_many_open_orders"
    assert await _apply(sessionmaker, admission, "n-two", "2001:db8:8:1ee::1", product_id) == "admitted"
