"""One order at a time: create → pay at the simulator → poll the order until its key shows.

Polling the order is fine here: one order at a time, nothing else in flight. Prints notify → key
visible (from the buyer's pay click to the key on the order page) [p50 ≤ 40 ms], create → 201, and
the shop's own paid → delivered from PostgreSQL, with the timeline stages between them.
"""

import asyncio
import time

from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench
from miaofa.bench.shop_client import Sent, paid_to_committed, paid_to_delivered, stage_breakdown
from miaofa.bench.stats import fmt_summary, summary_ms

TARGET_P50_MS = 40


async def one_order(b: Bench, sku: str, index: int, poll_ms: float, timeout: float) -> tuple[Sent, float]:
    """Create an order, pay it, poll it until its key shows: the order and seconds from pay to key."""
    order = await b.shop.create_order(sku, index)
    if order.status != 201:
        raise BenchError(f"order {index} refused: {order.status} {order.error}")
    clicked = time.perf_counter()
    await b.shop.pay(order)
    if order.pay_status != 200:
        raise BenchError(f"paying order {order.order_id} answered {order.pay_status}: {order.pay_error}")
    while not (await b.shop.view(order))["keys"]:
        if time.perf_counter() - clicked > timeout:
            raise BenchError(f"order {order.order_id} not delivered within {timeout:.0f} s")
        await asyncio.sleep(poll_ms / 1000)
    return order, time.perf_counter() - clicked


async def run(b: Bench, orders: int, poll_ms: float, timeout: float) -> None:
    sku = await b.shop.create_product(orders, "latency")
    b.metrics["sku"] = sku
    task = b.progress.add_task("orders, one at a time", total=orders)
    sent: list[Sent] = []
    visible: list[float] = []
    for i in range(orders):
        order, seconds = await one_order(b, sku, i, poll_ms, timeout)
        sent.append(order)
        visible.append(seconds)
        b.progress.advance(task)

    times = await b.db.times([s.order_id for s in sent if s.order_id])
    key_visible = summary_ms(visible)
    create = summary_ms(s.seconds for s in sent)
    delivered = summary_ms(paid_to_delivered(times))
    committed = summary_ms(paid_to_committed(times))
    b.metrics.update(
        {
            "notify_to_key_visible_ms": key_visible,
            "create_to_201_ms": create,
            "paid_to_delivered_db_ms": delivered,
            "paid_to_delivery_committed_db_ms": committed,
            "stages": stage_breakdown(times, {s.order_id: s for s in sent if s.order_id}),
            "poll_interval_ms": poll_ms,
        }
    )
    b.check(
        "notify → key visible p50",
        key_visible["p50"] if key_visible else None,
        "<=",
        TARGET_P50_MS,
        "ms",
        shown=fmt_summary(key_visible),
    )
    b.show("create → 201 (client)", fmt_summary(create))
    b.show("paid → delivered_at (DB)", fmt_summary(delivered))
    b.show("paid → delivery committed (DB updated_at)", fmt_summary(committed))
    b.note(f"key visible is polled every {poll_ms:g} ms (each poll a GET of the order), so it reads a little late")
    b.note(
        "delivered_at is the workflow's clock when it schedules the delivery; delivery committed is "
        "orders.updated_at, PostgreSQL's now() in the transaction that delivers — after the activity's dispatch"
    )
