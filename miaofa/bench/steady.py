"""Steady load, open loop: an order arrives every 1/rate seconds whether or not the shop kept up.

Each arrival creates an order and pays it at once. A closed loop would slow down with the shop and
hide its queue; here a shop that falls behind shows it as growing create latency and a backlog.
create → 201 is measured from the arrival's scheduled time (a late send counts against the shop,
no coordinated omission) [p99 ≤ 250 ms]; paid → delivered comes from PostgreSQL [p50 ≤ 50 ms,
p99 ≤ 250 ms]; the backlog is what had arrived but was not delivered when the arrivals stopped.

Past capacity (issue 21) the shop answers the arrivals it cannot start 503 busy: those are counted
apart, with their own answer time [p99 ≤ 100 ms]; the 201s keep the create target; nothing is lost
(every arrival answered, every paid order delivered); and the drain is how long delivery went on
after the arrivals stopped.
"""

import asyncio
import time

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

TARGET_CREATE_P99_MS = 250
TARGET_DELIVERED_P50_MS = 50
TARGET_DELIVERED_P99_MS = 250
TARGET_BUSY_P99_MS = 100


def is_busy(sent: Sent) -> bool:
    return sent.status == 503 and '"busy"' in (sent.error or "")


async def run(b: Bench, rate: float, seconds: float, drain_timeout: float) -> None:
    arrivals = max(1, round(rate * seconds))
    sku = await b.shop.create_product(arrivals, "steady")
    b.metrics.update({"sku": sku, "arrivals": arrivals})
    sent_task = b.progress.add_task(f"arrivals at {rate:g}/s", total=arrivals)
    answered_task = b.progress.add_task("answered", total=arrivals)
    sent: list[Sent] = []
    lags: list[float] = []
    from_arrival: list[float] = []  # scheduled arrival → 201, of the orders answered 201

    async def arrival(index: int, scheduled_wall: float) -> None:
        lags.append(time.time() - scheduled_wall)
        order = await b.shop.create_order(sku, index, scheduled_wall)
        if order.status == 201:
            from_arrival.append(time.time() - scheduled_wall)
        sent.append(order)
        b.progress.advance(answered_task)
        if order.status == 201:
            await b.shop.pay(order)

    tasks = []
    start_mono, start_wall = time.monotonic() + 0.05, time.time() + 0.05
    for index in range(arrivals):
        due = start_mono + index / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(arrival(index, start_wall + index / rate)))
        b.progress.advance(sent_task)
    window_end = time.time()
    in_flight = sum(1 for t in tasks if not t.done())
    counts = await b.db.sku_counts(sku)
    delivered_at_end = counts.get("delivered", 0)
    await asyncio.gather(*tasks)

    ids = [s.order_id for s in sent if s.order_id and s.pay_status == 200]
    delivered = await b.wait_delivered(ids, drain_timeout)
    times = await b.db.times(ids)
    last_delivered = max((t.delivered for t in times if t.delivered is not None), default=None)
    create = summary_ms(from_arrival)
    paid_delivered = summary_ms(paid_to_delivered(times))
    busy = [s for s in sent if is_busy(s)]
    unanswered = [s for s in sent if s.status not in (201, 409) and not is_busy(s)]
    lost = len(unanswered) + (len(ids) - delivered)
    b.metrics.update(
        {
            "busy": len(busy),
            "busy_answer_ms": summary_ms(s.seconds for s in busy),
            "lost": lost,
            "rate": rate,
            "seconds": seconds,
            "answers": order_statuses(sent),
            "errors": errors_seen(sent),
            "paid": len(ids),
            "delivered": delivered,
            "create_to_201_ms": create,
            "create_to_201_from_send_ms": summary_ms(s.seconds for s in sent if s.status == 201),
            "paid_to_delivered_db_ms": paid_delivered,
            "paid_to_delivery_committed_db_ms": summary_ms(paid_to_committed(times)),
            "send_lag_ms": summary_ms(lags),
            "backlog_at_end": {
                "arrived": arrivals,
                "delivered": delivered_at_end,
                "not_delivered": arrivals - delivered_at_end,
                "creates_in_flight": in_flight,
                "orders_by_status": counts,
            },
            "drain_seconds": round(last_delivered - window_end, 2) if last_delivered else None,
            "delivered_per_second": rate_per_second(delivered, start_wall, last_delivered),
            "stages": stage_breakdown(times, {s.order_id: s for s in sent if s.order_id}),
        }
    )
    b.check(
        "create → 201 p99",
        create["p99"] if create else None,
        "<=",
        TARGET_CREATE_P99_MS,
        "ms",
        shown=fmt_summary(create, ("p50", "p90", "p99")),
    )
    if busy:
        busy_ms = b.metrics["busy_answer_ms"]
        b.check(
            "busy answer p99 (send → 503)",
            busy_ms["p99"],
            "<=",
            TARGET_BUSY_P99_MS,
            "ms",
            shown=f"{len(busy)} of {arrivals} busy; " + fmt_summary(busy_ms, ("p50", "p90", "p99")),
        )
    b.check(
        "lost (unanswered arrivals + paid not delivered)",
        lost,
        "<=",
        0,
        "",
        shown=f"{len(unanswered)} unanswered, {len(ids) - delivered} paid not delivered",
    )
    b.check(
        "paid → delivered_at p50 (DB)",
        paid_delivered["p50"] if paid_delivered else None,
        "<=",
        TARGET_DELIVERED_P50_MS,
        "ms",
        shown=fmt_summary(paid_delivered, ("p50", "p90", "p99")),
    )
    b.check(
        "paid → delivered_at p99 (DB)",
        paid_delivered["p99"] if paid_delivered else None,
        "<=",
        TARGET_DELIVERED_P99_MS,
        "ms",
        shown=fmt_summary(paid_delivered, ("p99",)),
    )
    b.show(
        "paid → delivery committed (DB updated_at)",
        fmt_summary(b.metrics["paid_to_delivery_committed_db_ms"], ("p50", "p90", "p99")),
    )
    b.show("answers to POST /orders", str(b.metrics["answers"]))
    b.show(
        "backlog when arrivals stopped",
        f"{arrivals - delivered_at_end} of {arrivals} not delivered ({in_flight} creates still unanswered)",
    )
    b.show("drain after arrivals stopped", f"{b.metrics['drain_seconds']} s" if last_delivered else "—")
    b.show("delivered", f"{delivered} of {len(ids)} paid")
    lag = b.metrics["send_lag_ms"]
    b.show("client send lag (its own lateness)", fmt_summary(lag))
    if lag and lag["p99"] > 50:
        b.note("the client itself sent late (p99 lag above 50 ms): the machine is busy; create latency includes it")
    for error in b.metrics["errors"]:
        b.note(f"refused: {error}")
