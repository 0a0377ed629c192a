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


def test_blank_gateway_secrets_and_http_key_urls_stop_the_start_one_line_each(tmp_path: Path) -> None:
    # A key of spaces turned the gateway on, and md5(content + " ") is anybody's signature.
    done = _run(
        tmp_path,
        ["up"],
        MIAOFA_STRIPE__SECRET_KEY="sk_test_0123456789abcdef",
        MIAOFA_STRIPE__WEBHOOK_SECRET="whsec_",
        MIAOFA_EPAY__API_URL="http://pay.example/",
        MIAOFA_EPAY__PID="1001",
        MIAOFA_EPAY__KEY=" ",
        MIAOFA_EPUSDT__API_URL="http://usdt.example",
        MIAOFA_EPUSDT__API_TOKEN="\t ",
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "MIAOFA_STRIPE__WEBHOOK_SECRET is only the whsec_ prefix; set the endpoint's whole signing secret",
        "MIAOFA_EPAY__API_URL must be an https:// URL (http:// only to a loopback address)",
        "MIAOFA_EPAY__KEY is blank",
        "MIAOFA_EPUSDT__API_URL must be an https:// URL (http:// only to a loopback address)",
        "MIAOFA_EPUSDT__API_TOKEN is blank",
    ]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("section", "values", "line"),
    [
        ("epay", {"api_url": "https://pay.example/", "pid": "1001", "key": "   "}, "MIAOFA_EPAY__KEY is blank"),
        ("epay", {"api_url": "https://pay.example/", "pid": " ", "key": "k" * 32}, "MIAOFA_EPAY__PID is blank"),
        ("epusdt", {"api_url": "https://usdt.example", "api_token": " \n"}, "MIAOFA_EPUSDT__API_TOKEN is blank"),
        (
            "stripe",
            {"secret_key": " ", "webhook_secret": "whsec_" + "a" * 32},
            "MIAOFA_STRIPE__SECRET_KEY is blank",
        ),
        (
            "stripe",
            {"secret_key": "sk_test_0123456789abcdef", "webhook_secret": "whsec_  "},
            "MIAOFA_STRIPE__WEBHOOK_SECRET is only the whsec_ prefix; set the endpoint's whole signing secret",
        ),
        (
            "stripe",
            {"secret_key": "sk_test_0123456789abcdef", "webhook_secret": "whsec_abc", "api_base": "http://api.example"},
            "MIAOFA_STRIPE__API_BASE must be an https:// URL (http:// only to a loopback address)",
        ),
        (
            "wechat",
            {"mchid": "1", "appid": "a", "private_key": "k", "cert_serial_no": "s", "apiv3_key": " " * 32},
            "MIAOFA_WECHAT__APIV3_KEY is blank",
        ),
        (
            "alipay",
            {"app_id": "1", "private_key": "\n", "alipay_public_key": "k", "seller_id": "2088"},
            "MIAOFA_ALIPAY__PRIVATE_KEY is blank",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and value.isalpha() else None,
)
def test_each_gateway_secret_is_refused_when_blank(section: str, values: dict, line: str) -> None:
    from pydantic import ValidationError

    from miaofa.cli.common import settings_problems
    from miaofa.settings import Settings

    with pytest.raises(ValidationError) as raised:
        Settings(**{section: values})
    assert settings_problems(raised.value) == [line]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "[::1]"])
def test_http_gateway_urls_are_accepted_on_loopback_for_tests(host: str) -> None:
    from miaofa.settings import Settings

    settings = Settings(
        epay={"api_url": f"http://{host}:18101/", "pid": "1001", "key": "k" * 32},
        epusdt={"api_url": f"http://{host}:18102", "api_token": "t" * 32},
    )
    assert (settings.epay.api_url, settings.epusdt.api_url) == (f"http://{host}:18101/", f"http://{host}:18102")
