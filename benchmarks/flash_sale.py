"""Flash sale: N buyers race for K keys against a running `miaofa up`.

    .venv/bin/python -m benchmarks.flash_sale --buyers 500 --keys 100

Every buyer comes from this machine: start the shop with MIAOFA_RISK_EXEMPT_NETWORKS=127.0.0.1/32,
or its per-address admission rules refuse most of them (README, "Buyer API").

Prints oversold (must be 0), duplicate keys (0), delivered (= K), the sold-out answer latency and
the end-to-end rate from the first order to the last key on screen.
"""

import argparse
import asyncio
import time
from collections import Counter

import httpx

from benchmarks.common import API, SIM, admin_headers, summary
from benchmarks.saga_latency import make_product


async def buy(http: httpx.AsyncClient, sku: str, buyer: int) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = await http.post(f"{API}/orders", json={"sku": sku, "quantity": 1, "email": f"fan{buyer}@example.com",
                                                    "gateway": "simulator"})
    return answer, time.perf_counter() - started


async def pay_and_wait(http: httpx.AsyncClient, order: dict) -> list[str]:
    (await http.post(f"{SIM}/pay/{order['payment']['payment_id']}")).raise_for_status()
    while True:
        view = (await http.get(f"{API}/orders/{order['order_id']}",
                               headers={"X-Order-Token": order["access_token"]})).json()
        if view["keys"]:
            return view["keys"]
        await asyncio.sleep(0.1)


async def main(buyers: int, keys: int) -> None:
    limits = httpx.Limits(max_connections=buyers)  # no queueing in the client: every buyer races at once
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        sku = make_product(httpx.Client(timeout=60), keys)
        print(f"{buyers} buyers race for {keys} keys of {sku}…")
        started = time.perf_counter()
        results = await asyncio.gather(*(buy(http, sku, i) for i in range(buyers)))
        opened = time.perf_counter() - started
        codes = Counter(answer.status_code for answer, _ in results)
        orders = [answer.json() for answer, _ in results if answer.status_code == 201]
        sold_out = [seconds for answer, seconds in results if answer.status_code == 409]
        print(f"answers: {dict(codes)} in {opened:.1f} s")
        if sold_out:
            print(summary("sold-out answer", sold_out))
        delivered = await asyncio.gather(*(pay_and_wait(http, order) for order in orders))
        elapsed = time.perf_counter() - started
        all_keys = [key for got in delivered for key in got]
        stock = (await http.get(f"{API}/admin/products/{sku}/stock", headers=admin_headers())).json()
        print(f"delivered: {len(delivered)} orders, {len(all_keys)} keys, duplicates: {len(all_keys) - len(set(all_keys))}, "
              f"oversold: {max(0, stock['sold'] - keys)}, stock: {stock}")
        print(f"end to end: {len(delivered) / elapsed:.1f} orders/s ({elapsed:.1f} s from first order to last key)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buyers", type=int, default=500)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.buyers, args.keys))
