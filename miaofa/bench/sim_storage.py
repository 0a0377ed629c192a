"""The simulator's storage cost per change, as its books grow (issue 8, lever "simulator storage").

    .venv/bin/python -m benchmarks.sim_storage --payments 3000

Creates and pays N payments through the simulator app in-process (no network, notifies dropped)
with its books on disk, and prints the time per change for each slice of 500: a storage that
rewrites every payment on every change grows linearly; an append-only log stays flat.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from miaofa.simulator.app import create_app

MERCHANT, SECRET, CONTROL = "m-bench", "bench-secret-0123456789", "bench-control-0123456789"


async def main(payments: int, slice_size: int = 500) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            app = create_app(MERCHANT, SECRET, "http://sim.bench", state_file=Path(folder) / "simulator.json",
                             control_token=CONTROL)
        except TypeError:  # the simulator before /control had a token
            app = create_app(MERCHANT, SECRET, "http://sim.bench", state_file=Path(folder) / "simulator.json")
        auth = {"Authorization": f"Bearer {SECRET}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.bench") as http:
            await http.post("/control", json={"notify": "drop"}, headers={"Authorization": f"Bearer {CONTROL}"})
            started = time.perf_counter()
            for number in range(payments):
                created = (await http.post("/api/payments", headers=auth, json={
                    "merchant_id": MERCHANT, "order_id": f"o-{number}", "amount_cents": 990, "currency": "CNY",
                    "subject": "x", "notify_url": "http://127.0.0.1:9/n",
                    "expires_at": "2030-01-01T00:00:00+00:00"})).json()
                (await http.post(f"/pay/{created['payment_id']}")).raise_for_status()
                if (number + 1) % slice_size == 0:
                    elapsed = time.perf_counter() - started
                    print(f"payments {number + 2 - slice_size:>5}–{number + 1:<5} "
                          f"{elapsed / (2 * slice_size) * 1000:6.2f} ms per change")
                    started = time.perf_counter()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.payments))
