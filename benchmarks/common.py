"""Shared bits of the benchmarks: they run against a shop started with `miaofa up` in this folder."""

import json
import statistics
from pathlib import Path

API = "http://127.0.0.1:8000"
SIM = "http://127.0.0.1:8010"


def admin_headers(data_dir: Path = Path("data")) -> dict[str, str]:
    secrets = json.loads((data_dir / "dev-secrets.json").read_text())
    return {"Authorization": f"Bearer {secrets['admin_token']}"}


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"{name}: n={len(samples)} p50={statistics.median(samples) * 1000:.0f} ms "
            f"p99={p99 * 1000:.0f} ms max={ordered[-1] * 1000:.0f} ms")
