"""Chaos for payouts (issue 20): `kill -9` the worker ten times while 100 withdrawals are submitted
to the simulator's rail, each submit's answer held back a second so the kills land between the
submit and the rail's answer. Every withdrawal must end paid exactly once under its one number (or
back with a reason), the shop's balance must be exact, and the ledger check clean.

It starts its own `miaofa up` (tests/helpers/chaos_stack.py); run with `.venv/bin/pytest -m chaos`.
"""

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers.chaos_stack import ChaosStack, log

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

WITHDRAWALS = 100
AMOUNT = 500
KILLS = 10
PAYOUT_ENV = {
    "MIAOFA_PAYOUT_NEW_DESTINATION_DELAY_SECONDS": "0",
    "MIAOFA_PAYOUT_AUTO_APPROVE_CENTS": "1000000",
    "MIAOFA_PAYOUT_QUERY_INTERVAL_SECONDS": "0.5",
    "MIAOFA_PAYOUT_QUERY_MAX_INTERVAL_SECONDS": "2",
    "MIAOFA_PAYOUT_RAIL_TIMEOUT_SECONDS": "3",
    "MIAOFA_PAYOUT_RETURN_WATCH_SECONDS": "0",
}


async def _funded_shop(stack: ChaosStack, http: httpx.AsyncClient, cents: int) -> tuple[dict[str, str], str, str]:
    """A shop (no fee, no hold) whose balance comes from one real sale; its owner headers, id, destination."""
    slug = "chaos-pay-" + uuid.uuid4().hex[:6]
    made = await http.post(f"{stack.api}/admin/merchants", headers=stack._admin(), json={"slug": slug, "name": "C"})
    assert made.status_code == 201, made.text
    owner = {"Authorization": f"Bearer {made.json()['owner_token']}"}
    sku = "chaos-pay-" + uuid.uuid4().hex[:6]
    product = {"sku": sku, "name": "Balance", "price_cents": cents, "currency": "CNY"}
    assert (await http.post(f"{stack.api}/merchant/products", headers=owner, json=product)).status_code == 201
    keys = await http.post(
        f"{stack.api}/merchant/products/{sku}/keys",
        headers={**owner, "Content-Type": "text/plain"},
        content=f"CHAOS-PAY-{uuid.uuid4().hex}",
    )
    assert keys.status_code == 200, keys.text
    body = {"sku": sku, "quantity": 1, "email": "chaos-pay@example.com", "gateway": "simulator", "merchant": slug}
    order = (await http.post(f"{stack.api}/orders", json=body)).json()
    assert (await http.post(f"{stack.sim}/pay/{order['payment']['payment_id']}")).status_code == 200
    for _ in range(300):
        balance = (await http.get(f"{stack.api}/merchant/balance", headers=owner)).json()["balances"]
        if balance and balance[0]["available_cents"] == cents:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"the shop was never funded: {balance}")
    destination = await http.post(
        f"{stack.api}/merchant/payout-destinations",
        headers=owner,
        json={"rail": "simulator", "account": "6222020000000000009", "name": "Chaos"},
    )
    assert destination.status_code == 201, destination.text
    return owner, made.json()["merchant_id"], destination.json()["destination_id"]


@pytest.mark.chaos
def test_worker_killed_ten_times_during_100_withdrawals(tmp_path: Path) -> None:
    stack = ChaosStack(tmp_path, PAYOUT_ENV)
    log(f"miaofa up healthy in {stack.start():.1f} s (data and logs in {stack.data})")
    victims: list[int] = []

    async def kill_worker() -> None:
        victims.append(stack.kill("worker"))
        log(f"worker back as pid {await stack.wait_child('worker', victims[-1])}")

    async def run() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            owner, merchant_id, destination = await _funded_shop(stack, http, WITHDRAWALS * AMOUNT * 2)
            stack.control(payout="timeout_then_paid", payout_hang_seconds=1.0)
            ids: list[str] = []
            gate = asyncio.Semaphore(8)

            async def one(i: int) -> None:
                async with gate:
                    body = {"amount_cents": AMOUNT, "currency": "CNY", "destination_id": destination}
                    headers = {**owner, "Idempotency-Key": f"chaos-{i}"}
                    for _ in range(60):  # an API answer lost to nothing here, but be patient with a busy stack
                        answer = await http.post(f"{stack.api}/merchant/withdrawals", headers=headers, json=body)
                        if answer.status_code == 201:
                            ids.append(answer.json()["withdrawal_id"])
                            return
                        await asyncio.sleep(0.5)
                    raise AssertionError(f"withdrawal {i}: {answer.status_code} {answer.text}")

            began = time.monotonic()
            requests = asyncio.gather(*(one(i) for i in range(WITHDRAWALS)))
            for _ in range(KILLS):  # each kill once the worker has run long enough to be mid-submit
                await asyncio.sleep(3)
                await kill_worker()
            await requests
            log(f"{len(ids)} withdrawals requested in {time.monotonic() - began:.1f} s")

            conn = await stack.db()
            try:
                for _ in range(600):
                    rows = await conn.fetch(
                        "SELECT status, count(*) AS n FROM withdrawals WHERE merchant_id = $1 GROUP BY status",
                        merchant_id,
                    )
                    by_status = {r["status"]: r["n"] for r in rows}
                    if by_status.get("paid", 0) + by_status.get("failed", 0) == WITHDRAWALS:
                        break
                    await asyncio.sleep(0.5)
                log(f"settled after {time.monotonic() - began:.1f} s: {by_status}")
                assert by_status == {"paid": WITHDRAWALS}, by_status
                cut = await conn.fetchval(  # a kill between the submit and the rail's answer leaves this stage
                    "SELECT count(DISTINCT withdrawal_id) FROM withdrawal_events WHERE stage = 'checking' "
                    "AND withdrawal_id = ANY($1::text[])",
                    ids,
                )
                log(f"{cut} withdrawals lost their submit's answer to a kill and were found by a query")
                assert cut > 0, "no kill landed between a submit and its answer: the test proved nothing"
            finally:
                await conn.close()

            statement = await http.get(
                f"{stack.sim}/api/payouts", headers={"Authorization": f"Bearer {stack.secrets['sim_secret']}"}
            )
            transfers = [t for t in statement.json() if t["transfer_no"] in set(ids)]
            per_number = Counter(t["transfer_no"] for t in transfers)
            resubmits = sum(t["submits"] - 1 for t in transfers)
            log(f"rail: {len(transfers)} transfers, {resubmits} resubmits under the same number")
            assert sorted(per_number) == sorted(ids) and set(per_number.values()) == {1}
            assert all(t["status"] == "paid" and t["amount_cents"] == AMOUNT for t in transfers)
            balance = (await http.get(f"{stack.api}/merchant/balance", headers=owner)).json()["balances"][0]
            assert (balance["available_cents"], balance["reserved_cents"]) == (WITHDRAWALS * AMOUNT, 0)
            check = (await http.get(f"{stack.api}/admin/ledger/check", headers=stack._admin())).json()
            assert check == {"ok": True, "violations": []}, check

    try:
        asyncio.run(run())
        assert len(victims) == KILLS and stack.proc is not None and stack.proc.poll() is None
        assert stack.up_output().count("worker exited with code -9") == KILLS
    finally:
        stack.stop()
