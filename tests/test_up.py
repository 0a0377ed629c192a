"""`miaofa up` as a user runs it: it starts, answers, imports keys, and Ctrl-C leaves nothing behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from miaofa.devstack.procs import free_port

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    api, sim = free_port(), free_port()
    env.update(MIAOFA_DATA_DIR=str(data_dir), MIAOFA_API_PORT=str(api), MIAOFA_SIM_PORT=str(sim),
               MIAOFA_SIM_URL=f"http://127.0.0.1:{sim}", MIAOFA_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
               MIAOFA_TEMPORAL_UI_PORT=str(free_port()), MIAOFA_PG_PORT=str(free_port()),
               MIAOFA_WORKER_METRICS_ADDRESS=f"127.0.0.1:{free_port()}")
    return env


def _miaofa(*args: str) -> list[str]:
    return [sys.executable, "-m", "miaofa.cli", *args]


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert proc.poll() is None, f"miaofa up exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("miaofa up was not healthy in time")


def _stop(proc: subprocess.Popen) -> list[psutil.Process]:
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert len(descendants) >= 5  # postgres, temporal, sim, worker, api
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    return descendants


def test_up_runs_the_shop_and_stops_cleanly(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    api = f"http://127.0.0.1:{env['MIAOFA_API_PORT']}"
    proc = subprocess.Popen(_miaofa("up"), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, f"{api}/healthz")
        ui = f"http://127.0.0.1:{env['MIAOFA_TEMPORAL_UI_PORT']}"
        assert httpx.get(f"{ui}/", timeout=5).status_code == 200
        # The UI decodes payloads through the API's codec endpoint.
        assert httpx.get(f"{ui}/api/v1/settings", timeout=5).json()["Codec"]["Endpoint"] == f"{api}/codec"
        worker_metrics = httpx.get(f"http://{env['MIAOFA_WORKER_METRICS_ADDRESS']}/metrics", timeout=5)
        assert "temporal_" in worker_metrics.text
        products = httpx.get(f"{api}/products").json()
        assert [(p["sku"], p["available"]) for p in products] == [("demo-gift-card", 100)]

        keys = tmp_path / "keys.txt"
        lines = [f"CLI-KEY-{i:05d}" for i in range(1000)]
        keys.write_text("\n".join(lines + lines[:50]) + "\n")
        imported = subprocess.run(_miaofa("keys", "import", str(keys), "--sku", "demo-gift-card"), env=env,
                                  cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert imported.returncode == 0, imported.stderr
        assert "Imported 1000 keys, skipped 50 duplicates" in imported.stdout
        unknown = subprocess.run(_miaofa("keys", "import", str(keys), "--sku", "nope"), env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == "Error: no product with sku 'nope'"
        secrets = json.loads((tmp_path / "data" / "dev-secrets.json").read_text())
        stock = httpx.get(f"{api}/admin/products/demo-gift-card/stock",
                          headers={"Authorization": f"Bearer {secrets['admin_token']}"}).json()
        assert stock == {"available": 1100, "reserved": 0, "sold": 0, "refunded": 0}
    finally:
        descendants = _stop(proc)
    assert [p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    output = proc.stdout.read().decode()
    assert "Miaofa is up" in output and secrets["admin_token"] in output and "Stopped." in output

    # A second start reuses the data: same tokens, no second demo product, the imported keys still there.
    again = subprocess.Popen(_miaofa("up"), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        _wait_healthy(again, f"{api}/healthz")
        assert [(p["sku"], p["available"]) for p in httpx.get(f"{api}/products").json()] == [("demo-gift-card", 1100)]
    finally:
        _stop(again)
    assert json.loads((tmp_path / "data" / "dev-secrets.json").read_text()) == secrets


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path / "empty")
    missing = subprocess.run(_miaofa("keys", "import", "nofile.txt", "--sku", "x"), env=env, cwd=tmp_path,
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("Error: MIAOFA_DATABASE_URL, MIAOFA_VAULT_KEY not set (or run `miaofa up` "
                                      "once to create dev values).")
    bad = subprocess.run(_miaofa("api"), env={**env, "MIAOFA_ADMIN_TOKEN": "changethis"}, cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "MIAOFA_ADMIN_TOKEN is a placeholder; set a real random token"
