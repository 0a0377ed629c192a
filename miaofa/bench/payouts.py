"""Withdrawals, one at a time, on the simulator's rail: request → paid [p50 ≤ 1 s, p99 ≤ 3 s], the
merchant's 秒到.

A shop of its own (fee 0, no hold) earns its balance by a real sale through the saga; its
destination's cooling-off is skipped in SQL (the bench's own shop only, said in the notes). Each
withdrawal is under PAYOUT_AUTO_APPROVE_CENTS, so it is approved at once. Request → paid is read
from PostgreSQL (the withdrawal's created_at to its `paid` event) and, as the merchant sees it, by
polling the withdrawal.
"""

import asyncio
import time
import uuid
from typing import Any

from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench
from miaofa.bench.stats import fmt_summary, summary_ms

TARGET_P50_MS = 1000
TARGET_P99_MS = 3000


async def _call(b: Bench, method: str, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
    answer = await b.shop.http.request(method, f"{b.shop.api}{path}", **kwargs)
    if answer.status_code != expect:
        raise BenchError(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


async def funded_shop(b: Bench, cents: int) -> tuple[dict[str, str], str]:
    """A new shop whose `available` holds `cents`, from one sale paid at the simulator."""
    if not b.settings.admin_token:
        raise BenchError("no admin token: set MIAOFA_ADMIN_TOKEN, or run where `miaofa up` keeps data/dev-secrets.json")
    slug = "bench-pay-" + uuid.uuid4().hex[:8]
    made = await _call(b, "POST", "/admin/merchants", 201, headers=b.shop.admin, json={"slug": slug, "name": "Bench"})
    owner = {"Authorization": f"Bearer {made['owner_token']}"}
    sku = "bench-pay-" + uuid.uuid4().hex[:8]
    product = {"sku": sku, "name": "Balance", "price_cents": cents, "currency": "CNY"}
    await _call(b, "POST", "/merchant/products", 201, headers=owner, json=product)
    keys = {**owner, "Content-Type": "text/plain"}
    await _call(b, "POST", f"/merchant/products/{sku}/keys", 200, headers=keys, content=f"BENCH-PAY-{uuid.uuid4().hex}")
    order = {"sku": sku, "quantity": 1, "email": f"payouts-{b.shop.run_id}@example.com", "gateway": "simulator"}
    opened = await _call(b, "POST", "/orders", 201, json={**order, "merchant": slug})
    paid = await b.shop.http.post(f"{b.shop.sim}/pay/{opened['payment']['payment_id']}")
    if paid.status_code != 200:
        raise BenchError(f"paying the funding order answered {paid.status_code}: {paid.text[:200]}")
    if await b.wait_delivered([opened["order_id"]], 60, "funding sale delivered") != 1:
        raise BenchError("the funding sale was not delivered")
    for _ in range(100):
        balance = await _call(b, "GET", "/merchant/balance", 200, headers=owner)
        cny: dict[str, Any] = next((row for row in balance.get("balances", []) if row.get("currency") == "CNY"), {})
        if cny.get("available_cents", 0) >= cents:
            return owner, made["merchant_id"]
        await asyncio.sleep(0.1)
    raise BenchError(f"the shop's balance never reached {cents} available: {balance}")


async def usable_destination(b: Bench, owner: dict[str, str], merchant_id: str) -> str:
    made = await _call(
        b,
        "POST",
        "/merchant/payout-destinations",
        201,
        headers=owner,
        json={"rail": "simulator", "account": "6222020000000000001", "name": "Bench"},
    )
    assert b.pool is not None
    await b.pool.execute(  # the bench's own new shop: its cooling-off is not what is measured
        "UPDATE payout_destinations SET usable_at = now() WHERE id = $1 AND merchant_id = $2",
        made["destination_id"],
        merchant_id,
    )
    return str(made["destination_id"])


async def one(b: Bench, owner: dict[str, str], destination: str, amount: int, poll_ms: float, timeout: float) -> str:
    """Request one withdrawal and poll it until paid: its id."""
    headers = {**owner, "Idempotency-Key": uuid.uuid4().hex}
    body = {"amount_cents": amount, "currency": "CNY", "destination_id": destination}
    made = await _call(b, "POST", "/merchant/withdrawals", 201, headers=headers, json=body)
    wid = made["withdrawal_id"]
    started = time.perf_counter()
    while True:
        seen = await _call(b, "GET", f"/merchant/withdrawals/{wid}", 200, headers=owner)
        if seen["status"] == "paid":
            return str(wid)
        if seen["status"] not in ("requested", "approved", "submitted", "in_review"):
            raise BenchError(f"withdrawal {wid} ended {seen['status']}: {[e['stage'] for e in seen['timeline']]}")
        if time.perf_counter() - started > timeout:
            raise BenchError(f"withdrawal {wid} not paid within {timeout:.0f} s (status {seen['status']})")
        await asyncio.sleep(poll_ms / 1000)


async def run(b: Bench, withdrawals: int, amount: int, poll_ms: float, timeout: float) -> None:
    if amount > b.settings.payout_auto_approve_cents:
        raise BenchError(
            f"--amount {amount} needs a review (PAYOUT_AUTO_APPROVE_CENTS {b.settings.payout_auto_approve_cents})"
        )
    saved = await b.shop.get_control()
    await b.shop.set_control(payout="normal")
    try:
        owner, merchant_id = await funded_shop(b, withdrawals * amount)
        destination = await usable_destination(b, owner, merchant_id)
        task = b.progress.add_task("withdrawals, one at a time", total=withdrawals)
        seen_paid: list[float] = []
        ids: list[str] = []
        for _ in range(withdrawals):
            clicked = time.perf_counter()
            ids.append(await one(b, owner, destination, amount, poll_ms, timeout))
            seen_paid.append(time.perf_counter() - clicked)
            b.progress.advance(task)
    finally:
        await b.shop.restore_control(saved)
    assert b.pool is not None
    rows = await b.pool.fetch(
        "SELECT EXTRACT(EPOCH FROM (e.at - w.created_at)) AS s FROM withdrawals w "
        "JOIN withdrawal_events e ON e.withdrawal_id = w.id AND e.stage = 'paid' WHERE w.id = ANY($1::text[])",
        ids,
    )
    db = summary_ms(float(row["s"]) for row in rows)
    client = summary_ms(seen_paid)
    b.metrics.update({"request_to_paid_db_ms": db, "request_to_paid_seen_ms": client, "withdrawals": len(ids)})
    if db is None or db["n"] != withdrawals:
        raise BenchError(f"{withdrawals} withdrawals, {db['n'] if db else 0} with a paid event")
    b.check("request → paid p50 (DB)", db["p50"], "<=", TARGET_P50_MS, "ms", shown=fmt_summary(db))
    b.check("request → paid p99 (DB)", db["p99"], "<=", TARGET_P99_MS, "ms", shown=fmt_summary(db))
    b.show("request → paid, as the merchant polls it", fmt_summary(client))
    b.note(f"each withdrawal is {amount} minor units, auto-approved; the status is polled every {poll_ms:g} ms")
    b.note("the bench's own shop skips its destination's cooling-off in SQL; everything else is the real path")
