"""A bad setting stops every `miaofa` command at once: one line per problem on stderr, exit status 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [["up"], ["api"], ["worker"], ["sim"], ["db", "upgrade"], ["keys", "import", "keys.txt", "--sku", "x"]]


def _run(tmp_path: Path, args: list[str], **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    env.update(MIAOFA_DATA_DIR=str(tmp_path / "data"), **settings)
    return subprocess.run(
        [sys.executable, "-m", "miaofa.cli", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_a_bad_setting_is_one_line_and_exit_2_for_every_command(tmp_path: Path, args: list[str]) -> None:
    done = _run(tmp_path, args, MIAOFA_ADMIN_TOKEN="short")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["MIAOFA_ADMIN_TOKEN must be at least 16 characters"]
    # Nothing was started or created: `up` did not even make its data dir.
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"MIAOFA_API_PORT": "abc"}, "MIAOFA_API_PORT must be an integer"),
        ({"MIAOFA_UPDATE_TIMEOUT_SECONDS": "soon"}, "MIAOFA_UPDATE_TIMEOUT_SECONDS must be a number"),
        ({"MIAOFA_SIM_PORT": "70000"}, "MIAOFA_SIM_PORT must be a port number between 1 and 65535"),
        ({"MIAOFA_SUPPORT_TOKEN": "changethis"}, "MIAOFA_SUPPORT_TOKEN is a placeholder; set a real random token"),
        ({"MIAOFA_VAULT_KEY": "not base64!"}, "MIAOFA_VAULT_KEY is not valid base64"),
        ({"MIAOFA_VAULT_KEY": "c2hvcnQ="}, "MIAOFA_VAULT_KEY must decode to 32 bytes"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_each_kind_of_bad_value_is_named_as_its_variable(tmp_path: Path, settings: dict, line: str) -> None:
    done = _run(tmp_path, ["up"], **settings)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [line]
    assert not (tmp_path / "data").exists()


def test_every_problem_gets_its_own_line_and_no_value_is_echoed(tmp_path: Path) -> None:
    done = _run(tmp_path, ["worker"], MIAOFA_API_PORT="abc", MIAOFA_ADMIN_TOKEN="secret-shorty")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "MIAOFA_API_PORT must be an integer",
        "MIAOFA_ADMIN_TOKEN must be at least 16 characters",
    ]
    assert "secret-shorty" not in done.stderr + done.stdout
