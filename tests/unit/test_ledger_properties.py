"""Random sequences of sales, refunds, releases, withdrawals' reservations and fee changes keep
every invariant of the ledger, and each merchant's money equals what its orders say, to the cent."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert

from miaofa.db.engine import make_engine, make_sessionmaker
from miaofa.db.models import Merchant, Order
from miaofa.ledger import books, check, order_money
from tests.helpers.payouts import reserve_for_withdrawal

ORDERS = 4
op = st.one_of(
    st.tuples(st.just("sale"), st.integers(0, ORDERS - 1)),
    st.tuples(st.just("refund"), st.integers(0, ORDERS - 1)),
    st.tuples(st.just("release"), st.integers(0, 3)),  # hours on
    st.tuples(st.just("reserve"), st.integers(1, 3000)),
    st.tuples(st.just("fee"), st.integers(0, 10_000)),
)


async def _play(url: str, fee_bps: int, hold_hours: int, prices: list[int], ops: list[tuple[str, int]]) -> None:
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    merchant_id = "m_" + uuid.uuid4().hex[:16]
    start = datetime.now(UTC)
    try:
        async with sessionmaker.begin() as session:
            session.add(
                Merchant(
                    id=merchant_id,
                    slug="h-" + merchant_id[2:14],
                    name="property",
                    settlement="platform",
                    fee_bps=fee_bps,
                    hold_seconds=hold_hours * 3600,
                    status="active",
                )
            )
            await session.flush()
            product_id = await session.scalar(
                text(
                    "INSERT INTO products (merchant_id, sku, name, price_cents, currency, delivery_sla_seconds, "
                    "description, active) VALUES (:m, 'p', 'p', 1, 'CNY', 60, '', true) RETURNING id"
                ),
                {"m": merchant_id},
            )
            for i, price in enumerate(prices):
                await session.execute(
                    insert(Order).values(
                        id=f"{merchant_id}-{i}",
                        merchant_id=merchant_id,
                        product_id=product_id,
                        sku="p",
                        quantity=1,
                        email="p@example.com",
                        buyer_hash="p",
                        amount_cents=price,
                        currency="CNY",
                        gateway="simulator",
                        status="paid",  # the check's sale rule looks at orders opened with a list price only
                        expires_at=start,
                    )
                )
        fees_at_sale: dict[int, int] = {}
        refunded: set[int] = set()
        clock, reserved = start, 0
        for name, arg in ops:
            async with sessionmaker.begin() as session:
                if name == "sale":
                    if arg not in fees_at_sale:
                        fees_at_sale[arg] = fee_bps
                    await order_money.post_sale(session, f"{merchant_id}-{arg}", clock)
                elif name == "refund" and arg in fees_at_sale:  # only a sold order is refunded with a clawback
                    refunded.add(arg)
                    await order_money.post_refund(session, f"{merchant_id}-{arg}", clock)
                elif name == "release":
                    clock += timedelta(hours=arg)
                    await order_money.release_due(session, clock)
                elif name == "reserve":
                    (line,) = await books.balances(session, merchant_id) or [{"available_cents": 0}]
                    if line["available_cents"] >= arg:
                        reserved += arg
                        # A reservation is a withdrawal's: the check holds reserved to the open ones.
                        await reserve_for_withdrawal(session, merchant_id, arg, clock)
                elif name == "fee":
                    fee_bps = arg
                    await session.execute(update(Merchant).where(Merchant.id == merchant_id).values(fee_bps=arg))
        async with sessionmaker() as session:
            assert await check.run(session) == []
            (line,) = await books.balances(session, merchant_id) or [
                {"pending_cents": 0, "available_cents": 0, "reserved_cents": 0, "debt_cents": 0}
            ]
        owed = sum(
            prices[i] - prices[i] * fee // 10_000 for i, fee in fees_at_sale.items() if i not in refunded
        )  # each sale at the fee of its own moment
        assert line["pending_cents"] + line["available_cents"] + line["reserved_cents"] - line["debt_cents"] == owed
        assert line["reserved_cents"] == reserved
        assert min(line["pending_cents"], line["available_cents"], line["reserved_cents"]) >= 0
    finally:
        await engine.dispose()


def test_random_sequences_keep_every_invariant(database_url: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        fee_bps=st.integers(0, 10_000),
        hold_hours=st.integers(0, 2),
        prices=st.lists(st.integers(1, 5000), min_size=ORDERS, max_size=ORDERS),
        ops=st.lists(op, max_size=25),
    )
    def sequence(fee_bps: int, hold_hours: int, prices: list[int], ops: list[tuple[str, int]]) -> None:
        asyncio.run(_play(database_url, fee_bps, hold_hours, prices, ops))

    sequence()


def test_the_split_of_a_sale() -> None:
    assert order_money.split(1000, 1000, 250, True) == order_money.Split(paid=1000, discount=0, fee=25, net=975)
    # a 10 % late-delivery coupon: the platform pays the 100 (fee on the full price), or the shop does
    assert order_money.split(900, 1000, 250, True) == order_money.Split(paid=900, discount=100, fee=25, net=975)
    assert order_money.split(900, 1000, 250, False) == order_money.Split(paid=900, discount=0, fee=22, net=878)
    assert order_money.split(999, None, 333, True) == order_money.Split(paid=999, discount=0, fee=33, net=966)
