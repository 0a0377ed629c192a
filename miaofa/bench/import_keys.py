"""Import N keys through `miaofa keys import` and through the admin API, timing both.

    .venv/bin/python -m benchmarks.import_keys --keys 100000
"""

import argparse
import subprocess
import sys
import tempfile
import time
import uuid

import httpx

from benchmarks.common import API, admin_headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    with httpx.Client(timeout=600) as http:
        for way in ("cli", "api"):
            sku = f"import-{way}-" + uuid.uuid4().hex[:6]
            http.post(f"{API}/admin/products", headers=admin_headers(), json={
                "sku": sku, "name": "Import benchmark", "price_cents": 100, "currency": "CNY"}).raise_for_status()
            body = "\n".join(f"IMP-{sku}-{i:07d}-{uuid.uuid4().hex[:12]}" for i in range(args.keys))
            started = time.perf_counter()
            if way == "cli":
                with tempfile.NamedTemporaryFile("w", suffix=".txt") as file:
                    file.write(body)
                    file.flush()
                    subprocess.run([sys.executable, "-m", "miaofa.cli", "keys", "import", file.name, "--sku", sku],
                                   check=True)
            else:
                http.post(f"{API}/admin/products/{sku}/keys", content=body,
                          headers={**admin_headers(), "Content-Type": "text/plain"}).raise_for_status()
            seconds = time.perf_counter() - started
            print(f"{way}: {args.keys} keys in {seconds:.1f} s ({args.keys / seconds:,.0f} keys/s)")


if __name__ == "__main__":
    main()
