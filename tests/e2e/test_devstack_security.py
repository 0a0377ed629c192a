"""Issue 7, items 7 and 8: the dev stack is not open to every local user, and nothing is a public default.

- the embedded PostgreSQL asks for a generated password (scram-sha-256), also on loopback, and a
  data dir an older version created with `trust` is migrated on its next start;
- the dev secrets, the data dir and the logs are private (0600/0700);
- the simulator's signing secret and control token are generated, never a published default, and
  the simulator gateway exists only where a secret is configured.
"""

import asyncio
import json
import os
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from miaofa.devstack import procs
from miaofa.devstack.postgres import LocalPostgres
from miaofa.devstack.secrets import SECRETS_FILE, load_or_create, with_dev_defaults
from miaofa.devstack.up import make_private
from miaofa.gateways.registry import build_gateways
from miaofa.settings import Settings


async def _login(port: int, password: str | None, database: str = "postgres") -> int:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", password=password, database=database)
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _refused(port: int, password: str | None) -> bool:
    try:
        asyncio.run(_login(port, password))
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return True
    return False


def _hba_methods(pgdata: Path) -> set[str]:
    methods = set()
    for line in (pgdata / "pg_hba.conf").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            methods.add(words[-1] if "=" not in words[-1] else words[-2])
    return methods


def test_embedded_postgres_asks_for_its_password(tmp_path: Path) -> None:
    server = LocalPostgres(tmp_path / "pg", procs.free_port(), tmp_path / "pg.log", password="pw-0123456789'x")
    server.start()
    try:
        server.ensure_database("miaofa")
        assert _hba_methods(server.pgdata) == {"scram-sha-256"}
        assert _refused(server.port, None) and _refused(server.port, "wrong")
        assert asyncio.run(_login(server.port, "pw-0123456789'x", "miaofa")) == 1
        assert "pw-0123456789" not in server.log.read_text()
        assert server.url().startswith("postgresql://postgres:pw-0123456789%27x@127.0.0.1:")
    finally:
        server.stop()


def test_a_trust_data_dir_is_migrated_to_a_password(tmp_path: Path) -> None:
    """Created by an older `miaofa up` (trust): the next start sets the password and switches pg_hba."""
    pgdata, port = tmp_path / "pg", procs.free_port()
    old = LocalPostgres(pgdata, port, tmp_path / "pg.log")
    old.start()
    try:
        old.ensure_database("miaofa")
        assert "trust" in _hba_methods(pgdata) and not _refused(port, None)

        async def keep() -> None:
            conn = await asyncpg.connect(old.url())
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
            await conn.close()

        asyncio.run(keep())
    finally:
        old.stop()

    for _ in range(2):  # the migration, then an ordinary start of the migrated dir
        new = LocalPostgres(pgdata, port, tmp_path / "pg.log", password="new-password-0123")
        new.start()
        try:
            assert _hba_methods(pgdata) == {"scram-sha-256"}
            assert _refused(port, None)

            async def read(new: LocalPostgres = new) -> str:
                conn = await asyncpg.connect(new.url())
                try:
                    return await conn.fetchval("SELECT v FROM kept")
                finally:
                    await conn.close()

            assert asyncio.run(read()) == "still here"
        finally:
            new.stop()
    assert "new-password-0123" not in (tmp_path / "pg.log").read_text()


def test_dev_secrets_are_generated_private_and_completed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    values = load_or_create(data)
    assert {"admin_token", "support_token", "vault_key", "sim_secret", "sim_control_token", "postgres_password"} <= set(
        values
    )
    assert os.stat(data).st_mode & 0o777 == 0o700
    assert os.stat(data / SECRETS_FILE).st_mode & 0o777 == 0o600
    assert load_or_create(data) == values  # stable

    # A file an older version wrote (three values, world-readable) gains the rest and is closed.
    older = tmp_path / "older"
    older.mkdir(mode=0o755)
    kept = {name: values[name] for name in ("admin_token", "support_token", "vault_key")}
    (older / SECRETS_FILE).write_text(json.dumps(kept))
    os.chmod(older / SECRETS_FILE, 0o644)
    completed = load_or_create(older)
    assert {name: completed[name] for name in kept} == kept
    assert completed["sim_secret"] and completed["postgres_password"] != values["postgres_password"]
    assert os.stat(older / SECRETS_FILE).st_mode & 0o777 == 0o600

    settings = with_dev_defaults(Settings(data_dir=data, pg_port=5555))
    assert settings.database_url == f"postgresql://postgres:{values['postgres_password']}@127.0.0.1:5555/miaofa"
    assert (settings.sim_secret, settings.sim_control_token) == (values["sim_secret"], values["sim_control_token"])
    assert list(build_gateways(settings)) == ["simulator"]  # `miaofa up` enables it for the demo


def test_no_simulator_gateway_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MIAOFA_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.sim_secret == "" and settings.sim_control_token == ""
    assert build_gateways(settings) == {}  # production defaults: no simulator
    assert list(build_gateways(Settings(sim_secret="a-real-random-secret-123"))) == ["simulator"]
    for public in ("sim-dev-secret-not-for-production", "changeme", "short"):
        with pytest.raises(ValueError):
            Settings(sim_secret=public)
        with pytest.raises(ValueError):
            Settings(sim_control_token=public)


def test_miaofa_sim_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIAOFA_")}
    env["MIAOFA_DATA_DIR"] = str(tmp_path / "nothing")
    done = subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "sim"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "MIAOFA_SIM_SECRET not set" in done.stderr


def test_logs_and_child_files_are_private(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    log.parent.mkdir()
    log.write_text("older, world-readable\n")
    os.chmod(log, 0o644)
    child = procs.spawn(["sh", "-c", "echo hello; echo state > made-by-child"], log=log, cwd=tmp_path)
    assert child.wait(10) == 0
    assert os.stat(log).st_mode & 0o777 == 0o600 and "hello" in log.read_text()
    assert os.stat(tmp_path / "made-by-child").st_mode & 0o777 == 0o600  # umask 077


def test_make_private_closes_an_older_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    os.chmod(data, 0o755)
    for path in (data / "temporal.db", data / "simulator.json", data / "logs" / "api.log"):
        path.write_text("x")
        os.chmod(path, 0o644)
    make_private(data)
    assert os.stat(data).st_mode & 0o777 == 0o700 and os.stat(data / "logs").st_mode & 0o777 == 0o700
    for path in (data / "temporal.db", data / "simulator.json", data / "logs" / "api.log"):
        assert os.stat(path).st_mode & 0o777 == 0o600, path


# ---- the dev Temporal UI behind its read-only proxy (issue 17, N5) ---------------------------------


def _fake_ui(seen: list[tuple[str, str, bytes]]):
    """Stands in for the embedded UI: records what reaches it, answers like it."""

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = (await receive()).get("body", b"")
        seen.append((scope["method"], scope["path"], body))
        if scope["path"] == "/api/v1/settings":
            content = json.dumps(
                {"Codec": {"Endpoint": "http://127.0.0.1:8000/codec", "IncludeCredentials": False}, "Version": "2.54.1"}
            ).encode()
        else:
            content = b"ui " + scope["path"].encode()
        headers = [(b"content-length", str(len(content)).encode()), (b"set-cookie", b"_csrf=abc; Path=/")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return app


async def test_the_dev_ui_proxy_forwards_reads_only_and_only_to_its_own_names() -> None:
    """N5: a rebinding page read the UI with `Host: evil.example` and refunded an order through it."""
    from miaofa.devstack.uiproxy import UiProxy
    from tests.helpers.servers import bind, serve

    seen: list[tuple[str, str, bytes]] = []
    async with serve(_fake_ui(seen), bind()) as upstream:
        sock = bind()
        port = sock.getsockname()[1]
        async with serve(UiProxy(port, upstream), sock) as url, httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/namespaces/default/workflows?query=x")
            assert (page.status_code, page.text) == (200, "ui /namespaces/default/workflows")
            assert page.headers["set-cookie"] == "_csrf=abc; Path=/"
            assert (await http.get("/", headers={"Host": f"localhost:{port}"})).status_code == 200
            assert (await http.head("/")).status_code == 200
            settings = (await http.get("/api/v1/settings")).json()
            assert (settings["DisableWriteActions"], settings["Codec"]["IncludeCredentials"]) == (True, True)
            assert settings["Codec"]["Endpoint"] == "http://127.0.0.1:8000/codec"
            reached = len(seen)

            for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "127.0.0.1"):
                rebound = await http.get("/", headers={"Host": host})
                assert rebound.status_code == 403, host
                assert "_csrf" not in rebound.headers.get("set-cookie", ""), host
            update = "/api/v1/namespaces/default/workflows/order-x/update/refund"
            for method in ("POST", "PUT", "PATCH", "DELETE", "TRACE", "OPTIONS"):
                refused = await http.request(method, update, content=b'{"reason":"rebinding","actor":"evil-page"}')
                assert refused.status_code == 403, method
            assert len(seen) == reached  # none of it reached the UI

        # Asked for (MIAOFA_TEMPORAL_UI_WRITES=true): writes go through, still only to its own names.
        sock = bind()
        port = sock.getsockname()[1]
        async with serve(UiProxy(port, upstream, writes=True), sock) as url, httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/api/v1/settings")).json()["DisableWriteActions"] is False
            signal = await http.post("/api/v1/namespaces/default/workflows/w/signal/s", content=b"{}")
            assert signal.status_code == 200 and seen[-1] == (
                "POST",
                "/api/v1/namespaces/default/workflows/w/signal/s",
                b"{}",
            )
            assert (await http.post("/x", headers={"Host": f"evil.example:{port}"})).status_code == 403


def test_the_embedded_ui_listens_where_no_browser_connects() -> None:
    from miaofa.devstack.uiproxy import BROWSER_BLOCKED_PORTS, hidden_ports

    ports = hidden_ports(2)
    assert len(set(ports)) == 2 and all(port in BROWSER_BLOCKED_PORTS for port in ports), ports
    # Unprivileged, and on the Fetch standard's list of ports browsers refuse.
    assert all(1024 < port < 65536 for port in BROWSER_BLOCKED_PORTS)
    assert {6665, 6666, 6667, 6668, 6669, 10080} <= set(BROWSER_BLOCKED_PORTS)
