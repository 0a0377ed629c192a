"""The simulator's storage cost per change, as its books grow (issue 8, lever "simulator storage").

Creates and pays N payments through the simulator app in-process (no network, notifies dropped)
with its books on disk, and shows the time per change for each slice: a storage that rewrites
every payment on every change grows linearly; an append-only log stays flat.
"""

import tempfile
import time
from pathlib import Path

import httpx

from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench
from miaofa.simulator.app import create_app

MERCHANT, SECRET, CONTROL = "m-bench", "bench-secret-0123456789", "bench-control-0123456789"


async def run(b: Bench, payments: int, slice_size: int) -> None:
    auth = {"Authorization": f"Bearer {SECRET}"}
    task = b.progress.add_task("payments created and paid", total=payments)
    slices = []
    with tempfile.TemporaryDirectory(prefix="miaofa-sim-bench-") as folder:
        app = create_app(
            MERCHANT, SECRET, "http://sim.bench", state_file=Path(folder) / "simulator.json", control_token=CONTROL
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim.bench") as http:
            dropped = await http.post(
                "/control", json={"notify": "drop"}, headers={"Authorization": f"Bearer {CONTROL}"}
            )
            if dropped.status_code != 200:
                raise BenchError(f"simulator POST /control answered {dropped.status_code}")
            started = time.perf_counter()
            for number in range(payments):
                created = (
                    await http.post(
                        "/api/payments",
                        headers=auth,
                        json={
                            "merchant_id": MERCHANT,
                            "order_id": f"o-{number}",
                            "amount_cents": 990,
                            "currency": "CNY",
                            "subject": "x",
                            "notify_url": "http://127.0.0.1:9/n",
                            "expires_at": "2030-01-01T00:00:00+00:00",
                        },
                    )
                ).json()
                (await http.post(f"/pay/{created['payment_id']}")).raise_for_status()
                b.progress.advance(task)
                if (number + 1) % slice_size == 0:
                    per_change = (time.perf_counter() - started) / (2 * slice_size) * 1000  # a create and a pay
                    slices.append(
                        {"first": number + 2 - slice_size, "last": number + 1, "ms_per_change": round(per_change, 2)}
                    )
                    b.show(f"payments {number + 2 - slice_size}–{number + 1}", f"{per_change:.2f} ms per change")
                    started = time.perf_counter()
    b.metrics.update({"payments": payments, "slice": slice_size, "slices": slices})
    if len(slices) >= 2:
        growth = slices[-1]["ms_per_change"] / slices[0]["ms_per_change"] if slices[0]["ms_per_change"] else None
        b.metrics["last_over_first_slice"] = round(growth, 2) if growth else None
        b.show("last slice ÷ first slice", f"{growth:.2f}" if growth else "—")
