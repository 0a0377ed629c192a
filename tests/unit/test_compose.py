"""docker-compose.yml, the Dockerfile and .dockerignore agree with the code.

No Docker here: the files are parsed and checked against the CLI, the Settings class, the
workflow contract and pyproject.toml, so a renamed command, setting or search attribute breaks
this test instead of a deployment.
"""

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from miaofa import contract
from miaofa.cli import app
from miaofa.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The shop's roles that run from the project's image, and the command each runs.
EXPECTED_COMMANDS = {"migrate": ["db", "upgrade"], "api": ["api"], "worker": ["worker"], "sim": ["sim"]}
# What each command refuses to start without (`_require` in miaofa/cli/run.py).
REQUIRED_SETTINGS = {
    "migrate": ["database_url"],
    "api": ["database_url", "vault_key", "admin_token", "support_token"],
    "worker": ["database_url", "vault_key"],
}
SECRETS = ["MIAOFA_ADMIN_TOKEN", "MIAOFA_SUPPORT_TOKEN", "MIAOFA_VAULT_KEY"]
# The simulator's: optional, set for staging only; without them there is no simulator gateway.
STAGING_SECRETS = ["MIAOFA_SIM_SECRET", "MIAOFA_SIM_CONTROL_TOKEN"]
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _uses_project_image(service: dict) -> bool:
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return context in (".", "./")


PROJECT_SERVICES = sorted(name for name, service in SERVICES.items() if _uses_project_image(service))


def _env(name: str) -> dict[str, str]:
    env = SERVICES[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _depends_on(name: str) -> dict[str, str]:
    deps = SERVICES[name].get("depends_on") or {}
    if isinstance(deps, list):
        return {dep: "service_started" for dep in deps}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in deps.items()}


def _ports(name: str) -> list[tuple[int, int]]:
    """(host port, container port) of each published port, from `[ip:]host:container`."""
    result = []
    for spec in SERVICES[name].get("ports") or []:
        *_, host, container = str(spec).split(":")
        result.append((int(host), int(container.split("/")[0])))
    return result


def _setting_default(field: str):
    return Settings.model_fields[field].default


def _is_group(command) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _cli_leaf(words: list[str]):
    """The command object `miaofa <words>` runs, or None if the words name no command.

    Walks the `commands` of the click-style group typer builds (typer may vendor click, so no
    isinstance checks against the click package).
    """
    command = typer.main.get_command(app)
    for word in words:
        if not _is_group(command):
            return None
        command = command.commands.get(word)
        if command is None:
            return None
    return command


def _register_script() -> str:
    registers = [
        name for name, service in SERVICES.items() if str(service.get("image", "")).startswith("temporalio/admin-tools")
    ]
    assert registers == ["temporal-register"]
    service = SERVICES["temporal-register"]
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts.extend([value] if isinstance(value, str) else value)
    return "\n".join(parts)


# --- commands -------------------------------------------------------------------------------


def test_project_image_runs_exactly_the_shop_roles():
    assert PROJECT_SERVICES == sorted(EXPECTED_COMMANDS)


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_service_command_is_a_cli_command(name: str):
    command = SERVICES[name].get("command")
    assert isinstance(command, list), f"{name}: command must be an exec-form list"
    assert command == EXPECTED_COMMANDS[name]
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    leaf = _cli_leaf(command)
    assert leaf is not None and not _is_group(leaf), f"`miaofa {' '.join(command)}` is not a command"


def test_cli_check_rejects_unknown_commands():
    """The check above can fail: a misspelt or incomplete command does not pass it."""
    assert CliRunner().invoke(app, ["db", "upgrad", "--help"]).exit_code != 0
    assert _cli_leaf(["db", "upgrad"]) is None
    assert _is_group(_cli_leaf(["db"]))


def test_project_services_share_one_image():
    assert {SERVICES[name].get("image") for name in PROJECT_SERVICES} == {"miaofa:local"}


# --- settings -------------------------------------------------------------------------------


def test_every_miaofa_variable_is_a_setting():
    names = {key for service in SERVICES for key in _env(service) if key.startswith("MIAOFA_")}
    assert "MIAOFA_SIM_HOST" in names  # the simulator must listen beyond loopback in a container
    unknown = sorted(key for key in names if key.removeprefix("MIAOFA_").lower() not in Settings.model_fields)
    assert unknown == []


@pytest.mark.parametrize("name", sorted(REQUIRED_SETTINGS))
def test_shop_services_get_the_settings_their_command_requires(name: str):
    env = _env(name)
    missing = [field for field in REQUIRED_SETTINGS[name] if not env.get(f"MIAOFA_{field.upper()}")]
    assert missing == []


def test_secrets_come_from_the_users_environment_and_are_required():
    seen = set()
    for service in SERVICES:
        env = _env(service)
        for secret in SECRETS:
            if secret in env:
                seen.add(secret)
                assert env[secret] == f"${{{secret}:?set {secret}}}", (service, secret)
    assert seen == set(SECRETS)
    staging = set()
    for service in SERVICES:
        for secret in STAGING_SECRETS:
            if secret in _env(service):
                staging.add(secret)
                assert _env(service)[secret] == f"${{{secret}:-}}", (service, secret)  # no default value
    assert staging == set(STAGING_SECRETS)
    password = "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    assert _env("postgres")["POSTGRES_PASSWORD"] == password
    assert _env("temporal")["POSTGRES_PWD"] == password


def test_database_url_points_at_the_postgres_service():
    postgres = _env("postgres")
    for name in REQUIRED_SETTINGS:
        match = re.fullmatch(r"postgresql://(\w+):(.+)@([\w-]+):(\d+)/(\w+)", _env(name)["MIAOFA_DATABASE_URL"])
        assert match, name
        user, password, host, port, database = match.groups()
        assert (user, password, host, port, database) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "postgres",
            "5432",
            postgres["POSTGRES_DB"],
        )
    assert "postgres" in SERVICES
    temporal = _env("temporal")
    assert (temporal["DB"], temporal["POSTGRES_SEEDS"], temporal["DB_PORT"], temporal["POSTGRES_USER"]) == (
        "postgres12",
        "postgres",
        "5432",
        postgres["POSTGRES_USER"],
    )


def test_processes_listen_on_all_interfaces_inside_their_containers():
    assert _env("api")["MIAOFA_API_HOST"] == "0.0.0.0"
    assert _env("sim")["MIAOFA_SIM_HOST"] == "0.0.0.0"


def test_simulator_gets_only_its_own_settings():
    """It plays an outside party: no database URL, vault key or shop tokens."""
    allowed = {
        "MIAOFA_SIM_URL",
        "MIAOFA_SIM_SECRET",
        "MIAOFA_SIM_HOST",
        "MIAOFA_SIM_PORT",
        "MIAOFA_SIM_MERCHANT_ID",
        "MIAOFA_SIM_PUBLIC_URL",
        "MIAOFA_SIM_CONTROL_TOKEN",
        "MIAOFA_LOG_LEVEL",
    }
    assert sorted(set(_env("sim")) - allowed) == []
    assert _env("sim")["MIAOFA_SIM_SECRET"] == _env("api")["MIAOFA_SIM_SECRET"]


def test_urls_and_ports_agree_with_settings():
    api = _env("api")
    api_port = int(api.get("MIAOFA_API_PORT", _setting_default("api_port")))
    sim_port = int(_env("sim").get("MIAOFA_SIM_PORT", _setting_default("sim_port")))
    assert [container for _, container in _ports("api")] == [api_port]
    assert [container for _, container in _ports("sim")] == [sim_port]
    for name in ("api", "worker", "sim"):
        assert _env(name)["MIAOFA_SIM_URL"] == f"http://sim:{sim_port}"
    # Gateways (the simulator) post notifies to the API by its name inside the compose network;
    # buyers' browsers get links on the published port.
    assert api["MIAOFA_NOTIFY_BASE_URL"] == f"http://api:{api_port}"
    assert api["MIAOFA_PUBLIC_URL"] == f"${{MIAOFA_PUBLIC_URL:-http://localhost:{api_port}}}"
    assert _env("sim")["MIAOFA_SIM_PUBLIC_URL"] == f"http://localhost:{sim_port}"
    assert _env("worker")["MIAOFA_PUBLIC_URL"] == api["MIAOFA_PUBLIC_URL"]


def test_temporal_address_and_namespace_agree_everywhere():
    address = _env("api")["MIAOFA_TEMPORAL_ADDRESS"]
    host, port = address.split(":")
    assert host in SERVICES and host == "temporal"
    assert (7233, int(port)) in _ports("temporal")
    for name in ("api", "worker"):
        assert _env(name)["MIAOFA_TEMPORAL_ADDRESS"] == address
        assert _env(name).get("MIAOFA_TEMPORAL_NAMESPACE", _setting_default("temporal_namespace")) == "default"
    assert _env("temporal-register")["TEMPORAL_ADDRESS"] == address
    assert _env("temporal-ui")["TEMPORAL_ADDRESS"] == address


def test_temporal_ui_codec_endpoint_and_cors_match_the_api():
    from api.routes.codec import router

    ui = _env("temporal-ui")
    ui_port = int(_env("api").get("MIAOFA_TEMPORAL_UI_PORT", _setting_default("temporal_ui_port")))
    assert [host for host, container in _ports("temporal-ui") if container == 8080] == [ui_port]
    api_host_port = _ports("api")[0][0]
    assert router.prefix == "/codec"
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{api_host_port}{router.prefix}"
    assert ui["TEMPORAL_CORS_ORIGINS"] == f"http://localhost:{ui_port}"


# --- networks: who can reach whom (issue 7, items 3 and 7) --------------------------------------


def _networks(name: str) -> set[str]:
    networks = SERVICES[name].get("networks")
    return set(networks or ["default"])


def _subnet(network: str) -> str:
    [config] = COMPOSE["networks"][network]["ipam"]["config"]
    return config["subnet"]


def test_every_service_names_its_networks():
    """No service falls back to the implicit `default` network, which would join everything again."""
    for name, service in SERVICES.items():
        assert service.get("networks"), f"{name} must list its networks"
        assert _networks(name) <= set(COMPOSE["networks"]), name


def test_simulator_shares_no_network_with_temporal_or_postgres():
    """The simulator is an outside party: it must not reach temporal:7233 (start, signal, terminate or
    update any order) nor postgres:5432; it reaches the API (notify) and the worker reaches it (queries)."""
    sim = _networks("sim")
    for name in ("temporal", "temporal-ui", "temporal-register", "postgres", "migrate"):
        assert not sim & _networks(name), f"sim shares {sim & _networks(name)} with {name}"
    assert sim & _networks("api") and sim & _networks("worker")
    shared = set.union(*(sim & _networks(name) for name in ("api", "worker")))
    for network in shared:
        assert COMPOSE["networks"][network].get("internal") is True, network  # no way out, no published port
        members = sorted(name for name in SERVICES if network in _networks(name))
        assert members == ["api", "sim", "worker"], (network, members)
    # Its other network publishes the pay page and holds nothing of the shop.
    for network in sim - shared:
        assert [name for name in SERVICES if network in _networks(name)] == ["sim"]


def test_simulator_runs_for_staging_only():
    assert SERVICES["sim"].get("profiles") == ["staging"]
    assert not any(SERVICES[name].get("profiles") for name in SERVICES if name != "sim")
    assert "sim" not in {dep for name in SERVICES for dep in _depends_on(name)}
    example = (ROOT / "deploy" / "miaofa.env.example").read_text()
    for secret in STAGING_SECRETS:  # the production example leaves the simulator off
        assert not re.search(rf"^{secret}=\S", example, re.M), secret


def test_codec_trusts_no_network_and_the_ui_sends_its_cookie():
    """N5: no network may call /codec without a token; the UI's browser sends the codec cookie."""
    for name in ("api", "worker", "migrate"):
        assert "MIAOFA_CODEC_TRUSTED_NETWORKS" not in _env(name), name
    assert _env("temporal-ui")["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"
    # The API's published port arrives through backend, its only network with a way out.
    assert [
        n for n in sorted(_networks("api")) if not COMPOSE["networks"][n] or not COMPOSE["networks"][n].get("internal")
    ] == ["backend"]
    assert "backend" not in _networks("sim")


def test_temporal_frontend_and_ui_are_loopback_only_and_the_ui_read_only():
    for name in ("temporal", "temporal-ui", "sim"):
        for spec in SERVICES[name].get("ports") or []:
            assert str(spec).startswith("127.0.0.1:"), (name, spec)
    assert _env("temporal-ui")["TEMPORAL_DISABLE_WRITE_ACTIONS"] == "true"


# --- search attributes ----------------------------------------------------------------------


def test_registered_search_attributes_are_the_contracts():
    script = _register_script()
    lines = [line for line in script.splitlines() if "search-attribute create" in line]
    registered: dict[str, str] = {}
    for line in lines:
        match = re.fullmatch(
            r"\s*registered (\w+) \|\| temporal operator search-attribute create "
            r"--namespace (\S+) --name (\w+) --type (\w+)\s*",
            line,
        )
        assert match, line
        guard, namespace, name, kind = match.groups()
        assert (guard, namespace) == (name, "default")
        assert name not in registered, f"{name} registered twice"
        registered[name] = kind
    assert registered == contract.SEARCH_ATTRIBUTES


def test_register_waits_until_every_attribute_is_queryable():
    script = _register_script()
    match = re.search(r'temporal workflow list --namespace default --limit 1 --query "([^"]+)"', script)
    assert match
    assert set(re.findall(r"(\w+) = ", match.group(1))) == set(contract.SEARCH_ATTRIBUTES)
    assert "until temporal operator namespace describe --namespace default" in script


# --- startup order --------------------------------------------------------------------------


def test_depends_on_names_existing_services_with_valid_conditions():
    for name in SERVICES:
        for dep, condition in _depends_on(name).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            assert condition in DEPENDS_CONDITIONS, (name, dep, condition)
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart", "no") == "no", f"{dep} is waited on to exit; it must not restart"


def test_shop_processes_start_after_migrations_and_search_attributes():
    assert _depends_on("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert _depends_on(name) == {
            "migrate": "service_completed_successfully",
            "temporal": "service_started",
            "temporal-register": "service_completed_successfully",
        }
    assert _depends_on("temporal") == {"postgres": "service_healthy"}
    assert _depends_on("temporal-register") == {"temporal": "service_started"}


def test_postgres_healthcheck_uses_pg_isready():
    assert SERVICES["postgres"]["image"] in ("postgres:16", "postgres:17")
    test = SERVICES["postgres"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "pgdata" in COMPOSE["volumes"]


# --- Dockerfile -----------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (name, arguments), continuation lines joined, per stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def _final(instruction: str) -> str:
    values = [args for name, args in _dockerfile_stages()[-1] if name == instruction]
    assert values, f"no {instruction} in the final stage"
    return values[-1]


def _copied_sources() -> set[str]:
    sources = set()
    for stage in _dockerfile_stages():
        for name, args in stage:
            words = args.split()
            if name != "COPY" or any(word.startswith("--from") for word in words):
                continue
            words = [word for word in words if not word.startswith("--")]
            sources.update(word.removeprefix("./").rstrip("/") for word in words[:-1])
    return sources


def _packaged_top_level() -> set[str]:
    setuptools = PYPROJECT["tool"]["setuptools"]
    patterns = setuptools["packages"]["find"]["include"]
    packages = {
        path.name
        for path in ROOT.iterdir()
        if path.is_dir()
        and (path / "__init__.py").is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
    }
    return packages | {f"{module}.py" for module in setuptools.get("py-modules", [])}


def test_dockerfile_entrypoint_is_the_miaofa_script():
    assert json.loads(_final("ENTRYPOINT")) == ["miaofa"]
    assert PYPROJECT["project"]["scripts"]["miaofa"] == "miaofa.cli:app"
    cmd = json.loads(_final("CMD"))
    assert cmd == ["api"]
    assert _cli_leaf(cmd) is not None and not _is_group(_cli_leaf(cmd))


def test_dockerfile_copies_every_packaged_module():
    packaged = _packaged_top_level()
    assert packaged >= {"miaofa", "api", "workflows", "activities", "worker.py"}
    needed = packaged | {"pyproject.toml"}
    if "readme" in PYPROJECT["project"]:
        needed.add(PYPROJECT["project"]["readme"])
    assert sorted(needed - _copied_sources()) == []


def test_dockerignore_keeps_what_is_copied_and_drops_secrets():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    excluded = [source for source in _copied_sources() if any(fnmatch.fnmatch(source, pattern) for pattern in patterns)]
    assert excluded == []
    assert {".env", ".venv", "data", ".git"} <= set(patterns)


def test_dockerfile_installs_without_extras_and_runs_unprivileged():
    stages = _dockerfile_stages()
    assert [args.split()[0] for stage in stages for name, args in stage if name == "FROM"] == [
        "python:3.11-slim",
        "python:3.11-slim",
    ]
    installs = [args for stage in stages for name, args in stage if name == "RUN" and "pip install" in args]
    assert len(installs) == 1
    assert re.search(r"pip install (\S+)$", installs[0]).group(1) == "."
    assert _final("USER") not in ("root", "0")
