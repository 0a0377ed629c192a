"""Import N keys into a fresh product through `miaofa keys import` and through the admin API.

Both write to the shop's database through the same `inventory.import_keys`: the CLI from this
machine with the shop's settings (database URL and vault key), the API as an upload of the same
text. Each gets a product of its own; the stock must then hold exactly N keys.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid

from miaofa.bench.base import BenchError
from miaofa.bench.runner import Bench


def _cli_import(b: Bench, path: str, sku: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    env.update(
        {
            "MIAOFA_DATABASE_URL": b.settings.database_url,
            "MIAOFA_VAULT_KEY": b.settings.vault_key,
            "MIAOFA_DATA_DIR": str(b.settings.data_dir),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "keys", "import", path, "--sku", sku],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise BenchError(f"`miaofa keys import` exited with {done.returncode}: {done.stderr.strip()[-300:]}")


async def run(b: Bench, keys: int) -> None:
    if not b.settings.vault_key:
        raise BenchError("no vault key: set MIAOFA_VAULT_KEY, or run where `miaofa up` keeps its data/")
    b.metrics["keys"] = keys
    for way in ("cli", "api"):
        sku = await b.shop.create_product(0, f"import-{way}")
        body = "\n".join(f"IMP-{sku}-{i:07d}-{uuid.uuid4().hex[:12]}" for i in range(keys))
        task = b.progress.add_task(f"import through the {way.upper()}", total=None)
        started = time.perf_counter()
        if way == "cli":
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as file:
                file.write(body)
                file.flush()
                await asyncio.to_thread(_cli_import, b, file.name, sku)
        else:
            answer = await b.shop.http.post(
                f"{b.shop.api}/admin/products/{sku}/keys",
                content=body,
                headers={**b.shop.admin, "Content-Type": "text/plain"},
            )
            if answer.status_code != 200:
                raise BenchError(f"POST /admin/products/{sku}/keys answered {answer.status_code}: {answer.text[:300]}")
        seconds = time.perf_counter() - started
        b.progress.update(task, total=1, completed=1)
        stock = await b.shop.stock(sku)
        b.metrics[way] = {
            "sku": sku,
            "seconds": round(seconds, 2),
            "keys_per_second": round(keys / seconds),
            "stock": stock,
        }
        b.show(f"import through the {way.upper()}", f"{seconds:.1f} s ({keys / seconds:,.0f} keys/s)")
        b.check(f"available after the {way.upper()} import", stock.get("available"), "==", keys, "keys")
    b.note("the CLI's time includes starting the `miaofa` process and parsing the file; its CPU counts as other work")
