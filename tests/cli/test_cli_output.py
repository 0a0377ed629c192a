"""How `miaofa` listings print: a table for a person at a terminal, whole values for a pipe."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from miaofa.cli.common import Column, print_rows


def test_a_pipe_gets_a_header_and_one_line_per_row_whatever_the_values_hold(capsys) -> None:
    rows = [
        {"id": "3704adc0a1b2c3d4e5f6", "detail": {"reason": "line\nbreak\tand tab"}, "late": False},
        {"id": "x", "detail": {}, "late": None},
    ]
    print_rows(rows, (Column("id", whole=True), Column("detail"), Column("late")), as_json=False, empty="None.")
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "id\tdetail\tlate",
        '3704adc0a1b2c3d4e5f6\t{"reason": "line\\nbreak\\tand tab"}\tfalse',
        "x\t{}\t",
    ]
    assert err == ""
    print_rows([], (Column("id"),), as_json=False, empty="None.")
    assert capsys.readouterr() == ("id\n", "None.\n")  # stdout holds data only
    print_rows(rows, (Column("id"),), as_json=True, empty="None.")
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows  # every field


def test_gateways_in_a_pipe_and_as_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    env["MIAOFA_DATA_DIR"] = str(tmp_path / "no-dev-secrets")

    def gateways(*flags: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "miaofa.cli", "gateways", *flags],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    header, first, *_ = gateways()
    assert (header, first) == (
        "gateway\tstate\tneeds\tbill",
        'simulator\toff\t["MIAOFA_SIM_SECRET"]\tstatement API, live',
    )
    assert json.loads(gateways("--json")[0]) == {
        "gateway": "simulator",
        "state": "off",
        "needs": ["MIAOFA_SIM_SECRET"],
        "bill": "statement API, live",
    }


def test_reconcile_run_refuses_an_unknown_gateway_before_reaching_temporal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    env.update(
        MIAOFA_DATA_DIR=str(tmp_path),
        MIAOFA_VAULT_KEY=base64.b64encode(b"k" * 32).decode(),
        MIAOFA_TEMPORAL_ADDRESS="127.0.0.1:9",
    )
    done = subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "reconcile", "run", "--gateway", "paypal"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert (
        "unknown gateway 'paypal': one of simulator, alipay, wechat, stripe, epay, epusdt" in done.stderr + done.stdout
    )
