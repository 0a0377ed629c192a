"""Flash sale: N buyers race for K keys at the same instant; the winners pay at once.

Prints 201 vs 409 counts; oversold (sold > K) [0]; duplicate keys across delivered orders, read
back through GET /orders/{id} after the sale [0]; delivered [= K]; the sold-out answer's latency on
the client and inside the API [p99 ≤ 100 ms]. Inside the API is read from the API's own Prometheus
histograms before and after the sale: `miaofa_order_answer_seconds{status="409"}` times the sold-out
answers from the handler's start (the target); `miaofa_http_request_seconds` (POST /orders, 201 and
409 mixed) adds the time a request waited for the event loop after the server took it.
"""

import asyncio
import time

from miaofa.bench.runner import Bench
from miaofa.bench.shop_client import Sent, errors_seen, order_statuses, paid_to_committed, paid_to_delivered
from miaofa.bench.stats import fmt_summary, histogram_buckets, histogram_quantile, rate_per_second, summary_ms

TARGET_SOLD_OUT_P99_MS = 100
HISTOGRAM = "miaofa_http_request_seconds"
SERIES = {"route": "/orders", "method": "POST"}
ANSWER_HISTOGRAM = "miaofa_order_answer_seconds"
SOLD_OUT_SERIES = {"status": "409"}


async def run(b: Bench, buyers: int, keys: int, timeout: float) -> None:
    sku = await b.shop.create_product(keys, "flash")
    b.metrics.update({"sku": sku, "buyers": buyers, "keys": keys})
    page = await b.shop.api_metrics()
    before = histogram_buckets(page, HISTOGRAM, SERIES)
    before_sold_out = histogram_buckets(page, ANSWER_HISTOGRAM, SOLD_OUT_SERIES)
    task = b.progress.add_task(f"{buyers} buyers racing for {keys} keys", total=buyers)
    sent: list[Sent] = []

    async def buyer(index: int) -> None:
        order = await b.shop.create_order(sku, index)
        sent.append(order)
        b.progress.advance(task)
        if order.status == 201:
            await b.shop.pay(order)

    started = time.perf_counter()
    await asyncio.gather(*(buyer(i) for i in range(buyers)))
    answered_seconds = time.perf_counter() - started
    page = await b.shop.api_metrics()
    after = histogram_buckets(page, HISTOGRAM, SERIES)
    inside = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    after_sold_out = histogram_buckets(page, ANSWER_HISTOGRAM, SOLD_OUT_SERIES)
    handler = {le: after_sold_out.get(le, 0) - before_sold_out.get(le, 0) for le in after_sold_out}

    winners = [s for s in sent if s.status == 201]
    ids = [s.order_id for s in winners if s.order_id and s.pay_status == 200]
    delivered = await b.wait_delivered(ids, timeout)
    times = await b.db.times(ids)
    stock = await b.shop.stock(sku)
    per_order = await b.db.keys_per_order(ids)

    read_task = b.progress.add_task("reading keys back (GET /orders)", total=len(winners))
    gate = asyncio.Semaphore(16)  # after the sale: no hurry, no pile-up

    async def keys_of(order: Sent) -> list[str]:
        async with gate:
            view = await b.shop.view(order)
        b.progress.advance(read_task)
        return view["keys"]

    got = await asyncio.gather(*(keys_of(order) for order in winners))
    all_keys = [key for keys_seen in got for key in keys_seen]
    duplicates = len(all_keys) - len(set(all_keys))
    # More orders admitted, delivered or keys sold than there are keys (each would be a buyer let down).
    oversold = max(0, max(len(winners), delivered, stock["sold"]) - keys)
    first_send = min(s.sent_wall for s in sent)
    last_delivered = max((t.delivered for t in times if t.delivered is not None), default=None)
    sold_out = summary_ms(s.seconds for s in sent if s.status == 409)
    inside_count = max(inside.values(), default=0)
    inside_p50, inside_p99 = histogram_quantile(inside, 0.5), histogram_quantile(inside, 0.99)
    finite = [le for le in inside if le != float("inf")]
    # Past the top finite bucket the histogram only says "more than that" (Prometheus gives the bound).
    p99_beyond = bool(finite) and inside.get(max(finite), 0) < 0.99 * inside_count
    b.metrics.update(
        {
            "answers": order_statuses(sent),
            "errors": errors_seen(sent),
            "seconds_to_answer_all": round(answered_seconds, 2),
            "stock_after": stock,
            "oversold": oversold,
            "duplicate_keys": duplicates,
            "keys_read_back": len(all_keys),
            "orders_with_wrong_key_count": sum(1 for i in ids if per_order.get(i, 0) != 1),
            "delivered": delivered,
            "sold_out_client_ms": sold_out,
            "opened_client_ms": summary_ms(s.seconds for s in winners),
            "sold_out_in_handler": {
                "note": "API histogram miaofa_order_answer_seconds{status=409}: handler start → answer",
                "requests": max(handler.values(), default=0),
                "p50_ms": _ms(histogram_quantile(handler, 0.5)),
                "p99_ms": _ms(histogram_quantile(handler, 0.99)),
            },
            "post_orders_inside_api": {
                "note": "API histogram miaofa_http_request_seconds for POST /orders; mixes 201 and 409 answers",
                "requests": inside_count,
                "p50_ms": round(inside_p50 * 1000, 1) if inside_p50 is not None else None,
                "p99_ms": round(inside_p99 * 1000, 1) if inside_p99 is not None else None,
                "p99_beyond_top_bucket": p99_beyond,
                "buckets_delta": {str(le): count for le, count in sorted(inside.items())},
            },
            "paid_to_delivered_db_ms": summary_ms(paid_to_delivered(times)),
            "paid_to_delivery_committed_db_ms": summary_ms(paid_to_committed(times)),
            "delivered_per_second": rate_per_second(delivered, first_send, last_delivered),
        }
    )
    answers = b.metrics["answers"]
    b.show(
        "answers",
        f"{answers.get('201', 0)} × 201, {answers.get('409', 0)} × 409"
        + "".join(f", {n} × {code}" for code, n in answers.items() if code not in ("201", "409")),
    )
    b.check("oversold (max of 201s, delivered, sold − keys)", oversold, "==", 0, "keys")
    b.check("duplicate keys across delivered orders", duplicates, "==", 0, "keys")
    b.check("delivered", delivered, "==", keys, "orders")
    b.show("sold-out answer (client)", fmt_summary(sold_out))
    in_handler = b.metrics["sold_out_in_handler"]
    b.check(
        "sold-out answer in the API handler p99",
        in_handler["p99_ms"],
        "<=",
        TARGET_SOLD_OUT_P99_MS,
        "ms",
        shown=f"p50 {in_handler['p50_ms']} ms · p99 {in_handler['p99_ms']} ms (n={in_handler['requests']:g})",
    )
    p99 = b.metrics["post_orders_inside_api"]["p99_ms"]
    b.show(
        "POST /orders in the API with event-loop wait (201 + 409)",
        f"p50 {b.metrics['post_orders_inside_api']['p50_ms']} ms · p99 {'> ' if p99_beyond else ''}{p99} ms "
        f"(n={inside_count:g}, histogram buckets)",
    )
    b.show("delivered orders/s, first order → last key", str(b.metrics["delivered_per_second"]))
    b.show("paid → delivered_at (DB)", fmt_summary(b.metrics["paid_to_delivered_db_ms"]))
    b.show("paid → delivery committed (DB updated_at)", fmt_summary(b.metrics["paid_to_delivery_committed_db_ms"]))
    b.note(
        "inside-the-API quantiles come from histogram buckets, interpolated within a bucket; the event-loop "
        f"line includes the {answers.get('201', 0)} answers 201 with the sold-out ones"
    )
    for error in b.metrics["errors"]:
        b.note(f"refused: {error}")


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None
