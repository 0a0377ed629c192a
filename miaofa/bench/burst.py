"""A burst: B buyers at once, each creating an order and paying it at once, until N orders are open.

No polling during the load: the client waits on PostgreSQL (one count query every 250 ms) until
every order is delivered. Prints delivered orders/s from the first create to the last delivered_at
[≥ 40/s, aim 100], create → 201 and paid → delivered from the shop's timestamps.
"""

import asyncio
import time

from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench
from miaofa.bench.shop_client import (
    Sent,
    errors_seen,
    order_statuses,
    paid_to_committed,
    paid_to_delivered,
    stage_breakdown,
)
from miaofa.bench.stats import fmt_summary, rate_per_second, summary_ms

TARGET_RATE = 40
AIM_RATE = 100


async def open_and_pay(
    b: Bench, sku: str, orders: int, buyers: int, description: str = "opened and paid"
) -> list[Sent]:
    """B buyers, each in a loop: create an order, pay it at once, next. Returns every answer."""
    task = b.progress.add_task(description, total=orders)
    sent: list[Sent] = []
    counter = iter(range(orders))

    async def buyer() -> None:
        for index in counter:  # shared: each index taken by one buyer
            order = await b.shop.create_order(sku, index)
            sent.append(order)
            if order.status == 201:
                await b.shop.pay(order)
            b.progress.advance(task)

    await asyncio.gather(*(buyer() for _ in range(buyers)))
    return sent


async def measure(b: Bench, orders: int, buyers: int, timeout: float, label: str = "burst") -> dict:
    """The burst itself, for `burst` and `durability-cost`: returns its metrics."""
    sku = await b.shop.create_product(orders, label)
    started = time.perf_counter()
    sent = await open_and_pay(b, sku, orders, buyers)
    opened_seconds = time.perf_counter() - started
    ids = [s.order_id for s in sent if s.order_id and s.pay_status == 200]
    delivered = await b.wait_delivered(ids, timeout)
    times = await b.db.times(ids)
    first_send = min(s.sent_wall for s in sent)
    last_delivered = max((t.delivered for t in times if t.delivered is not None), default=None)
    return {
        "sku": sku,
        "orders": orders,
        "buyers": buyers,
        "answers": order_statuses(sent),
        "errors": errors_seen(sent),
        "paid": len(ids),
        "delivered": delivered,
        "seconds_to_open_all": round(opened_seconds, 2),
        "seconds_first_create_to_last_delivered": round(last_delivered - first_send, 2) if last_delivered else None,
        "delivered_per_second": rate_per_second(delivered, first_send, last_delivered),
        "create_to_201_ms": summary_ms(s.seconds for s in sent if s.status == 201),
        "paid_to_delivered_db_ms": summary_ms(paid_to_delivered(times)),
        "paid_to_delivery_committed_db_ms": summary_ms(paid_to_committed(times)),
        "stages": stage_breakdown(times, {s.order_id: s for s in sent if s.order_id}),
    }


async def run(
    b: Bench, orders: int, buyers: int, timeout: float, terms: tuple[int | None, int | None] = (None, None)
) -> None:
    """terms: the default shop's fee (bps) and hold (s) during the run, so that each sale locks the
    platform's fees account and makes a hold (the default shop has neither); restored afterwards."""
    if terms == (None, None):
        result = await measure(b, orders, buyers, timeout)
    else:
        listed = await b.shop.http.get(f"{b.shop.api}/admin/merchants", headers=b.shop.admin)
        default = next(m for m in listed.json()["merchants"] if m["slug"] == "default")
        was = {"fee_bps": default["fee_bps"], "hold_seconds": default["hold_seconds"]}
        wanted = {"fee_bps": terms[0] if terms[0] is not None else was["fee_bps"]}
        wanted["hold_seconds"] = terms[1] if terms[1] is not None else was["hold_seconds"]
        await _terms(b, wanted)
        try:
            result = await measure(b, orders, buyers, timeout)
        finally:
            await _terms(b, was)
        b.note(f"the default shop's fee {wanted['fee_bps']} bps and hold {wanted['hold_seconds']} s during the run")
    b.metrics.update(result)
    b.check(
        "delivered orders/s, first create → last delivered",
        result["delivered_per_second"],
        ">=",
        TARGET_RATE,
        "orders/s",
        aim=f" (aim {AIM_RATE})",
    )
    b.check("delivered", result["delivered"], "==", orders, "orders")
    b.show("answers to POST /orders", str(result["answers"]))
    b.show("time to open and pay all", f"{result['seconds_to_open_all']} s")
    b.show("create → 201 (client)", fmt_summary(result["create_to_201_ms"], ("p50", "p90", "p99")))
    b.show("paid → delivered_at (DB)", fmt_summary(result["paid_to_delivered_db_ms"], ("p50", "p90", "p99")))
    b.show(
        "paid → delivery committed (DB updated_at)",
        fmt_summary(result["paid_to_delivery_committed_db_ms"], ("p50", "p90", "p99")),
    )
    for error in result["errors"]:
        b.note(f"refused: {error}")


async def _terms(b: Bench, terms: dict[str, int]) -> None:
    answer = await b.shop.http.post(f"{b.shop.api}/admin/merchants/default/terms", headers=b.shop.admin, json=terms)
    if answer.status_code != 200:
        raise BenchError(f"POST /admin/merchants/default/terms answered {answer.status_code}: {answer.text[:200]}")
