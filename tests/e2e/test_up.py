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
    env.update(
        MIAOFA_DATA_DIR=str(data_dir),
        MIAOFA_API_PORT=str(api),
        MIAOFA_SIM_PORT=str(sim),
        MIAOFA_SIM_URL=f"http://127.0.0.1:{sim}",
        MIAOFA_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        MIAOFA_TEMPORAL_UI_PORT=str(free_port()),
        MIAOFA_PG_PORT=str(free_port()),
        MIAOFA_WORKER_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
        MIAOFA_RISK_EXEMPT_NETWORKS="127.0.0.1/32",
    )  # many buyers from this one machine (README)
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
    assert len(descendants) >= 6  # postgres, temporal, the UI proxy, sim, worker, api
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
        # The UI decodes payloads through the API's codec endpoint, sending the codec cookie.
        ui_settings = httpx.get(f"{ui}/api/v1/settings", timeout=5).json()
        assert ui_settings["Codec"]["Endpoint"] == f"{api}/codec" and ui_settings["Codec"]["IncludeCredentials"]
        _check_the_ui_reads_only(proc, ui, env)
        worker_metrics = httpx.get(f"http://{env['MIAOFA_WORKER_METRICS_ADDRESS']}/metrics", timeout=5)
        assert "temporal_" in worker_metrics.text
        products = httpx.get(f"{api}/products").json()
        assert [(p["sku"], p["available"]) for p in products] == [("demo-gift-card", 100)]

        keys = tmp_path / "keys.txt"
        lines = [f"CLI-KEY-{i:05d}" for i in range(1000)]
        keys.write_text("\n".join(lines + lines[:50]) + "\n")
        imported = subprocess.run(
            _miaofa("keys", "import", str(keys), "--sku", "demo-gift-card"),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stderr
        assert "Imported 1000 keys, skipped 50 duplicates" in imported.stdout
        unknown = subprocess.run(
            _miaofa("keys", "import", str(keys), "--sku", "nope"),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == "Error: no product with sku 'nope'"
        secrets = json.loads((tmp_path / "data" / "dev-secrets.json").read_text())
        stock = httpx.get(
            f"{api}/admin/products/demo-gift-card/stock", headers={"Authorization": f"Bearer {secrets['admin_token']}"}
        ).json()
        assert stock == {"available": 1100, "reserved": 0, "sold": 0, "refunded": 0}
        _check_private_and_locked(tmp_path / "data", env, secrets)
    finally:
        descendants = _stop(proc)
    assert [p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    output = proc.stdout.read().decode()
    assert "Miaofa is up" in output and secrets["admin_token"] in output and "Stopped." in output

    # A second start reuses the data: same tokens, no second demo product, the imported keys still there.
    again = subprocess.Popen(_miaofa("up"), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(again, f"{api}/healthz")
        assert [(p["sku"], p["available"]) for p in httpx.get(f"{api}/products").json()] == [("demo-gift-card", 1100)]
    finally:
        _stop(again)
    assert json.loads((tmp_path / "data" / "dev-secrets.json").read_text()) == secrets


def _check_the_ui_reads_only(proc: subprocess.Popen, ui: str, env: dict[str, str]) -> None:
    """Issue 17, N5: a DNS-rebinding page read the dev UI and refunded an order through it."""
    from miaofa.devstack.uiproxy import BROWSER_BLOCKED_PORTS

    assert httpx.get(f"{ui}/api/v1/settings", timeout=5).json()["DisableWriteActions"] is True
    listed = httpx.get(f"{ui}/api/v1/namespaces/default/workflows", timeout=10)
    assert listed.status_code == 200, listed.text  # reading works, through the proxy
    port = env["MIAOFA_TEMPORAL_UI_PORT"]
    rebound = httpx.get(f"{ui}/", headers={"Host": f"evil.example:{port}"}, timeout=5)
    assert rebound.status_code == 403 and "_csrf" not in rebound.headers.get("set-cookie", "")
    update = f"{ui}/api/v1/namespaces/default/workflows/order-x/update/refund"
    for host in (f"127.0.0.1:{port}", f"evil.example:{port}"):
        written = httpx.post(update, json={"reason": "rebinding", "actor": "evil-page"}, headers={"Host": host})
        assert written.status_code == 403, (host, written.text)
    # The embedded UI and Temporal's HTTP API listen where no browser connects.
    [temporal] = [p for p in psutil.Process(proc.pid).children(recursive=True) if "start-dev" in p.cmdline()]
    args = temporal.cmdline()
    hidden = {int(args[args.index(flag) + 1]) for flag in ("--ui-port", "--http-port")}
    assert len(hidden) == 2 and hidden <= set(BROWSER_BLOCKED_PORTS), args


def _check_private_and_locked(data: Path, env: dict[str, str], secrets: dict[str, str]) -> None:
    """Issue 7, items 7 and 8: what `miaofa up` keeps is its user's alone, and nothing is open by default."""
    import asyncio

    import asyncpg

    # Data and logs: no access for other users (as root, the postgres user's group may traverse).
    assert os.stat(data).st_mode & 0o067 == 0 and (os.geteuid() == 0 or os.stat(data).st_mode & 0o777 == 0o700)
    assert os.stat(data / "logs").st_mode & 0o777 == 0o700
    assert os.stat(data / "dev-secrets.json").st_mode & 0o777 == 0o600
    for log in (data / "logs").iterdir():
        assert os.stat(log).st_mode & 0o777 == 0o600, log
    for name in ("temporal.db", "simulator.json"):
        if (data / name).exists():
            assert os.stat(data / name).st_mode & 0o077 == 0, name
    assert os.stat(data / "postgres").st_mode & 0o777 == 0o700

    # PostgreSQL asks for the generated password, even on loopback.
    assert {"postgres_password", "sim_secret", "sim_control_token"} <= set(secrets)
    port = env["MIAOFA_PG_PORT"]

    async def login(password: str | None) -> int:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=int(port), user="postgres", database="miaofa", password=password
        )
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    for wrong in (None, "wrong-password"):
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            asyncio.run(login(wrong))
    assert asyncio.run(login(secrets["postgres_password"])) == 1

    # The simulator: /control needs its token, and paid_at is its own clock.
    sim = env["MIAOFA_SIM_URL"]
    assert httpx.post(f"{sim}/control", json={"notify": "drop"}).status_code == 401
    control = {"Authorization": f"Bearer {secrets['sim_control_token']}"}
    assert httpx.get(f"{sim}/control", headers=control).json()["notify"] == "normal"
    merchant = {"Authorization": f"Bearer {secrets['sim_secret']}"}
    payment = httpx.post(
        f"{sim}/api/payments",
        headers=merchant,
        json={
            "merchant_id": "miaofa-demo",
            "order_id": "o-up-check",
            "amount_cents": 100,
            "currency": "CNY",
            "subject": "x",
            "notify_url": "http://127.0.0.1:9/notify",
            "expires_at": "2099-01-01T00:00:00+00:00",
        },
    ).json()
    back_dated = httpx.post(payment["pay_url"], json={"paid_at": "2020-01-01T00:00:00+00:00"})
    assert (back_dated.status_code, back_dated.json()["error"]) == (422, "paid_at_refused")
    api = f"http://127.0.0.1:{env['MIAOFA_API_PORT']}"
    # The codec refuses a rebinding page on loopback, and anyone on this machine without a token.
    for host in ("evil.example", f"127.0.0.1:{env['MIAOFA_API_PORT']}"):
        tokenless = httpx.post(
            f"{api}/codec/decode",
            content=b'{"payloads": []}',
            headers={"Host": host, "Content-Type": "application/json"},
        )
        assert tokenless.status_code == 401, host
    signed = {"Authorization": f"Bearer {secrets['support_token']}", "Content-Type": "application/json"}
    assert httpx.post(f"{api}/codec/decode", content=b'{"payloads": []}', headers=signed).status_code == 200


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path / "empty")
    missing = subprocess.run(
        _miaofa("keys", "import", "nofile.txt", "--sku", "x"), env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "Error: MIAOFA_DATABASE_URL, MIAOFA_VAULT_KEY not set (or run `miaofa up` once to create dev values)."
    )
    bad = subprocess.run(
        _miaofa("api"), env={**env, "MIAOFA_ADMIN_TOKEN": "changethis"}, cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "MIAOFA_ADMIN_TOKEN is a placeholder; set a real random token"


def _worker_pid(up: subprocess.Popen) -> int | None:
    for child in psutil.Process(up.pid).children(recursive=True):
        try:
            if child.cmdline()[-2:] == ["miaofa.cli", "worker"] and child.status() != psutil.STATUS_ZOMBIE:
                return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


async def _open_orders(api: str, count: int) -> list[dict]:
    import asyncio

    async with httpx.AsyncClient(timeout=60) as http:

        async def one(i: int) -> dict:
            for _ in range(30):  # ten at once is past ORDER_STARTS_PER_PROCESS: busy ones retry as told
                answer = await http.post(
                    f"{api}/orders",
                    json={
                        "sku": "demo-gift-card",
                        "quantity": 1,
                        "email": f"buyer{i}@example.com",
                        "gateway": "simulator",
                    },
                    headers={"Idempotency-Key": f"supervise-order-{i:06d}"},
                )
                if answer.status_code != 503 or answer.json()["error"] != "busy":
                    break
                await asyncio.sleep(int(answer.headers["Retry-After"]))
            assert answer.status_code == 201, answer.text
            return answer.json()

        orders = []
        for start in range(0, count, 10):  # ten at a time: modest on two shared cores
            orders += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
        return orders


async def _pay_killing_the_worker(sim: str, orders: list[dict], up: subprocess.Popen) -> int:
    """Pay every order at the gateway; after a third of them, `kill -9` the worker. Returns its pid."""
    import asyncio

    victim = _worker_pid(up)
    assert victim is not None
    async with httpx.AsyncClient(timeout=30) as http:
        for i, order in enumerate(orders):
            if i == len(orders) // 3:
                os.kill(victim, signal.SIGKILL)
            (await http.post(f"{sim}/pay/{order['payment']['payment_id']}")).raise_for_status()
            await asyncio.sleep(0.02)
    return victim


async def _wait_delivered(api: str, orders: list[dict], timeout: float = 120) -> dict[str, list[str]]:
    import asyncio

    keys: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10) as http:
        while len(keys) < len(orders):
            assert time.monotonic() < deadline, f"only {len(keys)} of {len(orders)} orders delivered"
            for order in orders:
                if order["order_id"] in keys:
                    continue
                view = (
                    await http.get(
                        f"{api}/orders/{order['order_id']}", headers={"X-Order-Token": order["access_token"]}
                    )
                ).json()
                if view["status"] == "delivered":
                    keys[order["order_id"]] = view["keys"]
            await asyncio.sleep(0.5)
    return keys


def test_up_restarts_a_killed_worker_and_every_order_is_delivered_once(tmp_path: Path) -> None:
    import asyncio

    import asyncpg

    env = _env(tmp_path / "data")
    env["MIAOFA_RISK_EXEMPT_NETWORKS"] = "127.0.0.0/8"  # 50 orders from one address: a load run, by setting
    api = f"http://127.0.0.1:{env['MIAOFA_API_PORT']}"
    sim = env["MIAOFA_SIM_URL"]
    proc = subprocess.Popen(_miaofa("up"), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, f"{api}/healthz")

        async def durable() -> str:  # the PostgreSQL `miaofa up` runs commits synchronously
            password = json.loads((tmp_path / "data" / "dev-secrets.json").read_text())["postgres_password"]
            conn = await asyncpg.connect(
                host="127.0.0.1", port=int(env["MIAOFA_PG_PORT"]), user="postgres", password=password, database="miaofa"
            )
            try:
                return await conn.fetchval("SHOW synchronous_commit")
            finally:
                await conn.close()

        assert asyncio.run(durable()) == "on"
        orders = asyncio.run(_open_orders(api, 50))
        victim = asyncio.run(_pay_killing_the_worker(sim, orders, proc))
        delivered = asyncio.run(_wait_delivered(api, orders))

        assert proc.poll() is None  # `miaofa up` kept going
        restarted = _worker_pid(proc)
        assert restarted is not None and restarted != victim
        all_keys = [key for keys in delivered.values() for key in keys]
        assert all(len(keys) == 1 for keys in delivered.values())
        assert len(set(all_keys)) == 50  # exactly once: no key twice, no order without its key
        secrets = json.loads((tmp_path / "data" / "dev-secrets.json").read_text())
        stock = httpx.get(
            f"{api}/admin/products/demo-gift-card/stock", headers={"Authorization": f"Bearer {secrets['admin_token']}"}
        ).json()
        assert (stock["sold"], stock["reserved"], stock["available"]) == (50, 0, 50)
    finally:
        _stop(proc)
    output = proc.stdout.read().decode()
    assert "worker exited with code -9; restarting in 0.5 s" in output, output
    assert "worker exited with code -9; restarting in 0.5 s" in (tmp_path / "data" / "logs" / "worker.log").read_text()
    assert "Stopped." in output


def test_supervisor_backoff_doubles_to_30_s_and_resets_after_a_stable_run() -> None:
    from miaofa.devstack.supervisor import Supervised

    class Dead:
        returncode = -9

        def poll(self) -> int:
            return self.returncode

    started: list[float] = []
    child = Supervised("worker", start=lambda: started.append(1) or Dead(), proc=Dead(), started_at=0.0)
    now, waits = 0.0, []
    for _ in range(9):  # dies at once every time
        line = child.check(now)
        waits.append(float(line.rsplit("restarting in ", 1)[1].removesuffix(" s")))
        assert line.startswith("worker exited with code -9; restarting in ")
        assert child.check(now + waits[-1] - 0.01) is None and len(started) == len(waits) - 1  # not yet
        now += waits[-1]
        assert child.check(now) is None and len(started) == len(waits)  # restarted
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    # After a minute up, the next death restarts quickly again.
    assert child.check(now + 61).endswith("restarting in 0.5 s")


def test_each_worker_of_up_serves_metrics_on_its_own_port() -> None:
    from miaofa.devstack.up import worker_metrics_addresses
    from miaofa.settings import Settings

    assert worker_metrics_addresses(Settings(up_workers=3, worker_metrics_address="127.0.0.1:9464")) == [
        "127.0.0.1:9464",
        "127.0.0.1:9465",
        "127.0.0.1:9466",
    ]
    assert worker_metrics_addresses(Settings(up_workers=2, worker_metrics_address="")) == ["", ""]
