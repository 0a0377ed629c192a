"""Lost callbacks: the simulator drops every notify; the shop must still deliver every paid order.

It finds the payments by polling the gateway once CALLBACK_GRACE_SECONDS have passed, so recovery
(paid → delivered, from PostgreSQL) is bounded below by the grace. Prints the share delivered
[100 %], recovery p50/max, and how each order learned it was paid (its timeline stage). The
simulator's knobs are put back as they were at the end, whatever happens.
"""

import asyncio

from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench
from miaofa.bench.shop_client import Sent, paid_to_committed, paid_to_delivered
from miaofa.bench.stats import fmt_summary, summary_ms

PAYMENT_STAGES = ("notified", "polled", "polled_backup", "checked", "paid_at_close", "reconciled")


async def run(b: Bench, orders: int, buyers: int, timeout: float) -> None:
    grace = b.settings.callback_grace_seconds
    sku = await b.shop.create_product(orders, "lost")
    b.metrics.update(
        {
            "sku": sku,
            "orders": orders,
            "callback_grace_seconds": grace,
            "poll_interval_seconds": b.settings.poll_interval_seconds,
        }
    )
    saved = await b.shop.get_control()
    await b.shop.set_control(notify="drop")
    try:
        task = b.progress.add_task("opened and paid (notifies dropped)", total=orders)
        sent: list[Sent] = []
        counter = iter(range(orders))

        async def buyer() -> None:
            for index in counter:
                order = await b.shop.create_order(sku, index)
                if order.status != 201:
                    raise BenchError(f"order {index} refused: {order.status} {order.error}")
                sent.append(order)
                await b.shop.pay(order)
                b.progress.advance(task)

        await asyncio.gather(*(buyer() for _ in range(buyers)))
        ids = [s.order_id for s in sent if s.order_id and s.pay_status == 200]
        delivered = await b.wait_delivered(ids, timeout + grace, "recovered (DB)")
    finally:
        await b.shop.restore_control(saved)
    times = await b.db.times(ids)
    recovery = summary_ms(paid_to_delivered(times))
    committed = summary_ms(paid_to_committed(times))
    found_by: dict[str, int] = {}
    for t in times:
        stage = next((s for s in PAYMENT_STAGES if s in t.stages), "none")
        found_by[stage] = found_by.get(stage, 0) + 1
    share = round(100 * delivered / len(ids), 1) if ids else None
    b.metrics.update(
        {
            "paid": len(ids),
            "delivered": delivered,
            "delivered_share_percent": share,
            "recovery_paid_to_delivered_db_ms": recovery,
            "recovery_paid_to_delivery_committed_db_ms": committed,
            "payment_found_by": found_by,
        }
    )
    b.check("share delivered", share, "==", 100, "%")
    b.show("recovery, paid → delivered_at (DB)", fmt_summary(recovery, ("p50", "p99")))
    b.show("recovery, paid → delivery committed (DB)", fmt_summary(committed, ("p50", "p99")))
    b.show("payment found by (timeline stage)", str(found_by))
    where = "the started stack's" if b.started else "this shell's setting"
    b.show(f"callback grace ({where})", f"{grace} s, then polls from {b.settings.poll_interval_seconds} s")
    if found_by.get("notified"):
        b.note(
            f"{found_by['notified']} orders were notified although notifies were dropped: "
            "was the simulator's control reset by someone else?"
        )
    if b.started is None:
        b.note("against an external stack the grace shown is this shell's setting; the shop may run another")
