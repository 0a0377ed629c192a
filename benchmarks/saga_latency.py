"""Notify → key visible, and lost-callback recovery, measured against a running `miaofa up`.

    .venv/bin/python -m benchmarks.saga_latency --orders 20 --lost 3
"""

import argparse
import time
import uuid

import httpx

from benchmarks.common import API, SIM, admin_headers, summary


def make_product(http: httpx.Client, keys: int) -> str:
    sku = "bench-" + uuid.uuid4().hex[:8]
    http.post(f"{API}/admin/products", headers=admin_headers(), json={
        "sku": sku, "name": "Benchmark card", "price_cents": 100, "currency": "CNY"}).raise_for_status()
    body = "\n".join(f"BENCH-{sku}-{i}-{uuid.uuid4().hex}" for i in range(keys))
    http.post(f"{API}/admin/products/{sku}/keys", content=body,
              headers={**admin_headers(), "Content-Type": "text/plain"}).raise_for_status()
    return sku


def order_and_pay(http: httpx.Client, sku: str) -> float:
    """Seconds from the buyer paying at the gateway to the key showing on the order page."""
    order = http.post(f"{API}/orders", json={"sku": sku, "quantity": 1, "email": "bench@example.com",
                                             "gateway": "simulator"}).json()
    token = {"X-Order-Token": order["access_token"]}
    started = time.perf_counter()
    http.post(f"{SIM}/pay/{order['payment']['payment_id']}").raise_for_status()
    while True:
        view = http.get(f"{API}/orders/{order['order_id']}", headers=token).json()
        if view["keys"]:
            return time.perf_counter() - started
        if time.perf_counter() - started > 120:
            raise TimeoutError(f"order {order['order_id']} not delivered: {view['status']}")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--lost", type=int, default=3, help="orders whose notify is dropped")
    args = parser.parse_args()
    with httpx.Client(timeout=30) as http:
        sku = make_product(http, args.orders + args.lost)
        http.post(f"{SIM}/control/reset")
        print(f"Measuring notify → key visible over {args.orders} orders…")
        samples = [order_and_pay(http, sku) for _ in range(args.orders)]
        print(summary("notify → key visible", samples))
        if args.lost:
            http.post(f"{SIM}/control", json={"notify": "drop"}).raise_for_status()
            print(f"Measuring lost-callback recovery over {args.lost} orders (every notify dropped)…")
            try:
                lost = [order_and_pay(http, sku) for _ in range(args.lost)]
            finally:
                http.post(f"{SIM}/control/reset")
            print(summary("lost callback → key visible", lost))


if __name__ == "__main__":
    main()
