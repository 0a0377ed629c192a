"""Named staff tokens: made once and kept hashed, the holder's name on every action, revocable."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text

from miaofa.db.models import AuditLog, StaffToken
from tests.helpers.stack import Stack


def tokens_cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MIAOFA_DATABASE_URL": stack.settings.database_url,
        "MIAOFA_VAULT_KEY": stack.settings.vault_key,
        "MIAOFA_DATA_DIR": str(tmp_path / "no-dev-secrets"),
    }
    return subprocess.run(
        [sys.executable, "-m", "miaofa.cli", "tokens", *args], env=env, capture_output=True, text=True, timeout=60
    )


def new_token(stack: Stack, tmp_path: Path, role: str = "support") -> tuple[str, str]:
    name = f"{role[:3]}-{uuid.uuid4().hex[:8]}"
    made = tokens_cli(stack, tmp_path, "add", name, "--role", role)
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == f"Token for {name} ({role}) made. Shown once: store it now."
    return name, made.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _listed(stack: Stack, tmp_path: Path, *flags: str) -> dict[str, dict]:
    listed = tokens_cli(stack, tmp_path, "list", "--json", *flags)
    assert listed.returncode == 0, listed.stderr
    return {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}


async def test_a_token_is_shown_once_and_stored_only_as_its_keyed_hash(dev_stack: Stack, tmp_path: Path) -> None:
    name, token = new_token(dev_stack, tmp_path)
    assert token.startswith("mfs_") and len(token) == 47
    async with dev_stack.sessionmaker() as session:
        row = await session.scalar(select(StaffToken).where(StaffToken.name == name))
        assert (row.role, row.token_hash, row.revoked_at, row.last_used_at) == (
            "support",
            dev_stack.vault.staff_token_hash(token),
            None,
            None,
        )
        # The token appears nowhere in the database: every row of every table, as text.
        tables = (await session.scalars(text("select tablename from pg_tables where schemaname = 'public'"))).all()
        assert "staff_tokens" in tables
        for table in tables:
            dump = (
                await session.scalars(text(f"select coalesce(string_agg(t::text, '\n'), '') from \"{table}\" t"))
            ).one()
            assert token not in dump and token[4:] not in dump, table
        audit = await session.scalar(select(AuditLog).where(AuditLog.target == f"token:{name}"))
    assert (audit.actor.startswith("cli:"), audit.action, audit.detail) == (True, "token.add", {"role": "support"})

    listed = await _listed(dev_stack, tmp_path)
    assert listed[name]["role"] == "support" and listed[name]["last_used_at"] is None
    assert token not in json.dumps(listed)
    table = tokens_cli(dev_stack, tmp_path, "list")
    assert name in table.stdout and token not in table.stdout

    answer = await dev_stack.http.get("/support/orders/no-such-order", headers=bearer(token))
    assert answer.status_code == 404 and answer.json()["error"] == "order_not_found"
    assert (await _listed(dev_stack, tmp_path))[name]["last_used_at"] is not None


async def test_the_holder_is_the_actor_and_a_revoked_token_is_refused(dev_stack: Stack, tmp_path: Path) -> None:
    name, token = new_token(dev_stack, tmp_path)
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    cancelled = await dev_stack.http.post(
        f"/support/orders/{order['order_id']}/cancel", headers=bearer(token), json={"reason": "buyer asked"}
    )
    assert cancelled.status_code == 200, cancelled.text
    async with dev_stack.sessionmaker() as session:
        rows = (
            await session.scalars(select(AuditLog).where(AuditLog.target == order["order_id"]).order_by(AuditLog.id))
        ).all()
    assert [(row.actor, row.action, row.detail) for row in rows] == [
        (name, "support.cancel", {"outcome": "done", "status": "cancelled", "reason": "buyer asked"})
    ]

    revoked = tokens_cli(dev_stack, tmp_path, "revoke", name)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, f"Token of {name} revoked.")
    refused = await dev_stack.http.get(f"/support/orders/{order['order_id']}", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json() == {"error": "invalid_token", "detail": "the token is not a support token"}
    again = tokens_cli(dev_stack, tmp_path, "revoke", name)
    assert (again.returncode, again.stderr.strip()) == (1, f"Refused: no live token named '{name}'.")
    assert name not in await _listed(dev_stack, tmp_path)
    assert (await _listed(dev_stack, tmp_path, "--revoked"))[name]["revoked_at"] is not None

    # The same person gets a new token under the same name; the old one stays refused.
    remade = tokens_cli(dev_stack, tmp_path, "add", name, "--role", "support")
    assert remade.returncode == 0, remade.stderr
    fresh = remade.stdout.strip()
    assert fresh != token
    assert (await dev_stack.http.get(f"/support/orders/{order['order_id']}", headers=bearer(fresh))).status_code == 200
    assert (await dev_stack.http.get(f"/support/orders/{order['order_id']}", headers=bearer(token))).status_code == 401


async def test_roles_support_may_not_administer_an_admin_may_support(dev_stack: Stack, tmp_path: Path) -> None:
    _, support_token = new_token(dev_stack, tmp_path, "support")
    admin_name, admin_token = new_token(dev_stack, tmp_path, "admin")
    sku = "p-" + uuid.uuid4().hex[:10]
    product = {"sku": sku, "name": "Tokens", "price_cents": 100, "currency": "CNY"}
    refused = await dev_stack.http.post("/admin/products", headers=bearer(support_token), json=product)
    assert refused.status_code == 401
    assert refused.json() == {"error": "invalid_token", "detail": "the token is not the admin token"}
    created = await dev_stack.http.post("/admin/products", headers=bearer(admin_token), json=product)
    assert created.status_code == 201, created.text
    assert (await dev_stack.http.get("/support/orders/nope", headers=bearer(admin_token))).status_code == 404
    async with dev_stack.sessionmaker() as session:
        audit = await session.scalar(select(AuditLog).where(AuditLog.target == sku))
    assert (audit.actor, audit.action) == (admin_name, "product.create")
    # The settings' tokens keep working, as the holders "admin" and "support".
    assert (await dev_stack.http.get(f"/admin/products/{sku}/stock", headers=dev_stack.admin)).status_code == 200
    assert (await dev_stack.http.get("/support/orders/nope", headers=dev_stack.support)).status_code == 404


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ("add", "Ann", "--role", "support"),
            2,
            "Bad name: a name is 1-32 characters: lowercase letters, digits, "
            "'.', '_' or '-', starting with a letter or digit.",
        ),
        (
            ("add", "admin", "--role", "admin"),
            2,
            "Bad name: 'admin' is reserved (it names the settings' tokens or the shop itself).",
        ),
        (("add", "ann", "--role", "root"), 2, "--role must be one of: support, admin, finance."),
        (("revoke", "nobody-here"), 1, "Refused: no live token named 'nobody-here'."),
    ],
)
def test_bad_token_commands_are_one_line(
    dev_stack: Stack, tmp_path: Path, args: tuple, code: int, message: str
) -> None:
    done = tokens_cli(dev_stack, tmp_path, *args)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (code, "", message)


def test_a_live_name_cannot_hold_two_tokens(dev_stack: Stack, tmp_path: Path) -> None:
    name, _ = new_token(dev_stack, tmp_path)
    twice = tokens_cli(dev_stack, tmp_path, "add", name, "--role", "admin")
    assert (twice.returncode, twice.stdout, twice.stderr.strip()) == (
        1,
        "",
        f"Refused: '{name}' already holds a live token; revoke it first.",
    )


def test_a_revoked_name_is_never_reissued_with_another_role(dev_stack: Stack, tmp_path: Path) -> None:
    """N8: carl (support), revoked, came back as carl (admin): the log's "carl" named two people's powers."""
    name, _ = new_token(dev_stack, tmp_path, "support")
    assert tokens_cli(dev_stack, tmp_path, "revoke", name).returncode == 0
    other_role = tokens_cli(dev_stack, tmp_path, "add", name, "--role", "admin")
    assert (other_role.returncode, other_role.stdout, other_role.stderr.strip()) == (
        1,
        "",
        f"Refused: '{name}' was a support token; a name keeps its role, so pick another name.",
    )
    assert name not in tokens_cli(dev_stack, tmp_path, "list").stdout
    # The same role under the same name is a new token for the same person: allowed.
    same_role = tokens_cli(dev_stack, tmp_path, "add", name, "--role", "support")
    assert same_role.returncode == 0, same_role.stderr


async def test_the_codec_takes_a_named_token_from_outside_the_trusted_browser(dev_stack: Stack, tmp_path: Path) -> None:
    name, token = new_token(dev_stack, tmp_path)
    body = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "MQ=="}]}
    foreign = {"Host": "evil.example"}  # not one of the shop's own names: the loopback pass does not apply
    assert (await dev_stack.http.post("/codec/encode", json=body, headers=foreign)).status_code == 401
    encoded = await dev_stack.http.post("/codec/encode", json=body, headers={**foreign, **bearer(token)})
    assert encoded.status_code == 200, encoded.text
    assert tokens_cli(dev_stack, tmp_path, "revoke", name).returncode == 0
    assert (
        await dev_stack.http.post("/codec/encode", json=body, headers={**foreign, **bearer(token)})
    ).status_code == 401
