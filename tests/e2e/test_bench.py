"""`miaofa bench`: one tiny scenario end to end on a stack of its own, and the arithmetic it relies on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miaofa.bench.base import BenchError
from miaofa.bench.stack import parse_overrides, stack_defaults
from miaofa.bench.stats import histogram_quantile, percentile
from miaofa.devstack.procs import port_open
from miaofa.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_latency_on_a_started_stack_writes_the_result(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    result = tmp_path / "latency.json"
    done = subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "bench", "latency", "--start", "--orders", "2", "--json", str(result)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "notify → key visible p50" in done.stdout  # the table

    record = json.loads(result.read_text())
    assert "error" not in record
    assert record["scenario"] == "latency"
    assert record["command"].endswith("bench latency --start --orders 2 --json " + str(result))
    assert record["git"]["commit"] and isinstance(record["git"]["dirty"], bool)
    assert record["machine"]["cores"] == os.cpu_count() and record["machine"]["memory_total_gib"] > 0
    assert len(record["load_before"]) == 3 and len(record["load_after"]) == 3
    assert record["params"] == {"orders": 2, "poll_ms": 5.0}
    assert record["postgres"]["synchronous_commit"] == "on"
    assert record["settings"]["admin_token"] == "(set)"  # secrets never written out
    for name in (
        "notify_to_key_visible_ms",
        "create_to_201_ms",
        "paid_to_delivered_db_ms",
        "paid_to_delivery_committed_db_ms",
    ):
        assert record["metrics"][name]["n"] == 2
        assert 0 < record["metrics"][name]["p50"] <= record["metrics"][name]["p99"]
    assert set(record["metrics"]["stages"]["after_paid_ms"]) >= {"notified", "delivered"}
    [target] = record["targets"]
    assert target["name"] == "notify → key visible p50" and target["limit"] == 40
    assert target["pass"] == (target["value"] <= 40)

    # The started stack is gone: its API no longer answers and its temp dir is removed.
    assert record["stack"]["started"] is True
    assert not port_open("127.0.0.1", record["settings"]["api_port"])
    assert not Path(record["stack"]["log"]).parent.exists()


def test_percentiles_and_histogram_quantiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([10.0, 20.0], 0.99) == pytest.approx(19.9)
    # 100 requests: 50 under 10 ms, 49 more under 100 ms, 1 above 1 s.
    buckets = {0.01: 50, 0.1: 99, 1.0: 99, float("inf"): 100}
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.999) == 1.0  # in +Inf: the top finite bound, as Prometheus does
    assert histogram_quantile({0.01: 0, float("inf"): 0}, 0.5) is None


def test_stack_settings() -> None:
    assert parse_overrides(["CALLBACK_GRACE_SECONDS=3", "miaofa_poll_interval_seconds=1"]) == {
        "callback_grace_seconds": "3",
        "poll_interval_seconds": "1",
    }
    with pytest.raises(BenchError):
        parse_overrides(["NO_SUCH_SETTING=1"])
    # Every risk limit of the shop is switched off in a started stack, and the values are valid.
    defaults = stack_defaults()
    assert {name for name in Settings.model_fields if name.startswith("risk_")} <= set(defaults)
    Settings(**defaults)


async def test_lean_http_client_reuses_connections_and_reads_both_body_kinds() -> None:
    import asyncio

    from miaofa.bench.lean_http import LeanHTTP

    connections = 0
    answers = [
        b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n3\r\nsol\r\n5\r\nd out\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye",
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            await reader.readexactly(length)
            writer.write(answers.pop(0))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = LeanHTTP(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        assert await client.request("POST", "/orders", {"sku": "x"}) == (201, b"ok")
        assert await client.request("POST", "/orders", {"sku": "x"}) == (409, b"sold out")
        assert await client.request("POST", "/pay/1") == (200, b"bye")
        assert connections == 1 and client.idle == []  # one kept-alive connection, closed when asked
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


def test_a_scenario_that_brings_its_own_services_needs_no_shop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    result = tmp_path / "sim.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "miaofa.cli",
            "bench",
            "sim-storage",
            "--payments",
            "20",
            "--slice",
            "10",
            "--json",
            str(result),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(result.read_text())
    assert "error" not in record and "settings" not in record
    assert record["stack"] == {"started": False, "shop": False}
    assert [(s["first"], s["last"]) for s in record["metrics"]["slices"]] == [(1, 10), (11, 20)]
    assert all(s["ms_per_change"] > 0 for s in record["metrics"]["slices"])


def test_the_ledger_check_bench_seeds_books_that_add_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    result = tmp_path / "ledger.json"
    done = subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "bench", "ledger-check", "--orders", "200", "--json", str(result)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads(result.read_text())["metrics"]
    assert (metrics["orders"], metrics["entries"]) == (200, 660)  # 3 per sale, 3 per refund of one in ten
    assert len(metrics["check_seconds"]) == 3


def test_the_payouts_bench_pays_withdrawals_on_a_started_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    result = tmp_path / "payouts.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "miaofa.cli",
            "bench",
            "payouts",
            "--start",
            "--withdrawals",
            "3",
            "--json",
            str(result),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(result.read_text())
    assert "error" not in record
    assert record["params"] == {"withdrawals": 3, "amount": 500, "poll_ms": 20.0}
    assert record["metrics"]["withdrawals"] == 3
    for name in ("request_to_paid_db_ms", "request_to_paid_seen_ms"):
        assert record["metrics"][name]["n"] == 3
        assert 0 < record["metrics"][name]["p50"] <= record["metrics"][name]["max"]
    assert [t["name"] for t in record["targets"]] == ["request → paid p50 (DB)", "request → paid p99 (DB)"]
