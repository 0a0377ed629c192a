"""`miaofa support …`, `miaofa audit` and `miaofa orders search` in a subprocess against a running shop.

Listings go to a pipe here (stdout captured): tab-separated whole values; `on_terminal` gives one a tty."""

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select

from miaofa.db.models import AuditLog
from tests.api.test_tokens import new_token, tokens_cli
from tests.conftest import stack_settings
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import eventually


def cli_env(stack: Stack, tmp_path: Path, api_url: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "MIAOFA_STAFF_API_URL": api_url or str(stack.http.base_url),
        "MIAOFA_DATABASE_URL": stack.settings.database_url,
        "MIAOFA_VAULT_KEY": stack.settings.vault_key,
        "MIAOFA_TEMPORAL_ADDRESS": stack.env.client.service_client.config.target_host,
        "MIAOFA_DATA_DIR": str(tmp_path / "no-dev-secrets"),
        "COLUMNS": "200",
    }
    env.pop("MIAOFA_SUPPORT_TOKEN", None)
    return env


def cli(
    stack: Stack, tmp_path: Path, *args: str, token: str | None = None, api_url: str | None = None
) -> subprocess.CompletedProcess:
    env = cli_env(stack, tmp_path, api_url)
    if token is not None:
        env["MIAOFA_STAFF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "miaofa.cli", *args], env=env, capture_output=True, text=True, timeout=90
    )


@pytest.fixture
def staff(dev_stack: Stack, tmp_path: Path) -> tuple[str, str]:
    """A support person's own named token: (name, token)."""
    return new_token(dev_stack, tmp_path)


async def _delivered(stack: Stack, email: str = "cli-buyer@example.com", sku: str | None = None) -> dict:
    sku = sku or await stack.product(["CLI-KEY-" + uuid.uuid4().hex[:12]])
    order = await stack.ordered(sku, email=email)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    return order


async def _audit(stack: Stack, order_id: str) -> list[tuple[str, str, dict]]:
    async with stack.sessionmaker() as session:
        rows = await session.scalars(select(AuditLog).where(AuditLog.target == order_id).order_by(AuditLog.id))
        return [(row.actor, row.action, row.detail) for row in rows]


def _run(stack: Stack, tmp_path: Path, token: str, *args: str) -> subprocess.CompletedProcess:
    return cli(stack, tmp_path, *args, token=token)


async def test_show_prints_the_order_with_its_keys_masked(dev_stack: Stack, tmp_path: Path, staff) -> None:
    order = await _delivered(dev_stack)
    key = (await dev_stack.view(order))["keys"][0]
    shown = await asyncio.to_thread(_run, dev_stack, tmp_path, staff[1], "support", "show", order["order_id"])
    assert shown.returncode == 0, shown.stderr
    assert f"Order {order['order_id']}  delivered  1 × " in shown.stdout
    assert f"Keys: ••••••••{key[-4:]} (sold)" in shown.stdout
    for stage in ("created", "paid", "delivered"):
        assert f" {stage} " in shown.stdout
    assert "accepted" in shown.stdout  # the notify log
    assert key not in shown.stdout

    as_json = await asyncio.to_thread(
        _run, dev_stack, tmp_path, staff[1], "support", "show", "--json", order["order_id"]
    )
    view = json.loads(as_json.stdout)
    assert (view["status"], [k["masked"] for k in view["keys"]]) == ("delivered", [f"••••••••{key[-4:]}"])
    assert key not in as_json.stdout


async def test_refund_then_the_refusal_with_its_exit_status_and_the_actor_audited(
    dev_stack: Stack, tmp_path: Path, staff
) -> None:
    name, token = staff
    order = await _delivered(dev_stack)
    oid = order["order_id"]
    done = await asyncio.to_thread(_run, dev_stack, tmp_path, token, "support", "refund", oid, "--reason", "bad key")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (
        0,
        f"Order {oid} is refunded: refunded at the gateway; keys marked refunded.",
        "",
    )
    again = await asyncio.to_thread(_run, dev_stack, tmp_path, token, "support", "refund", oid)
    assert (again.returncode, again.stdout, again.stderr.strip()) == (
        1,
        "",
        "Refused (already_refunded): the order is already refunded.",
    )
    assert await _audit(dev_stack, oid) == [
        (name, "order.refund", {"reason": "bad key"}),
        (name, "support.refund", {"outcome": "done", "status": "refunded", "reason": "bad key"}),
        (name, "support.refund", {"outcome": "already_refunded", "reason": ""}),
    ]


async def test_resend_and_cancel_done_and_refused(dev_stack: Stack, tmp_path: Path, staff) -> None:
    name, token = staff
    delivered = await _delivered(dev_stack)
    sku = await dev_stack.product(1)
    unpaid = await dev_stack.ordered(sku)

    resent = await asyncio.to_thread(_run, dev_stack, tmp_path, token, "support", "resend", delivered["order_id"])
    assert (resent.returncode, resent.stdout.strip()) == (
        0,
        f"Order {delivered['order_id']} is delivered: delivery email sent again.",
    )
    not_delivered = await asyncio.to_thread(_run, dev_stack, tmp_path, token, "support", "resend", unpaid["order_id"])
    assert not_delivered.returncode == 1
    assert not_delivered.stderr.startswith("Refused (not_delivered): ")
    not_cancellable = await asyncio.to_thread(
        _run, dev_stack, tmp_path, token, "support", "cancel", delivered["order_id"], "--reason", "asked"
    )
    assert not_cancellable.returncode == 1
    assert not_cancellable.stderr.startswith("Refused (not_cancellable): ")
    cancelled = await asyncio.to_thread(
        _run,
        dev_stack,
        tmp_path,
        token,
        "support",
        "cancel",
        unpaid["order_id"],
        "--reason",
        "buyer changed their mind",
    )
    assert (cancelled.returncode, cancelled.stdout.strip()) == (
        0,
        f"Order {unpaid['order_id']} is cancelled: order cancelled and its stock released.",
    )

    assert [
        (actor, action, detail["outcome"]) for actor, action, detail in await _audit(dev_stack, delivered["order_id"])
    ] == [(name, "support.resend", "done"), (name, "support.cancel", "not_cancellable")]
    assert [
        (actor, action, detail["outcome"]) for actor, action, detail in await _audit(dev_stack, unpaid["order_id"])
    ] == [(name, "support.resend", "not_delivered"), (name, "support.cancel", "done")]


async def test_reveal_prints_the_keys_and_audits_who_and_why(dev_stack: Stack, tmp_path: Path, staff) -> None:
    name, token = staff
    order = await _delivered(dev_stack)
    [key] = (await dev_stack.view(order))["keys"]
    revealed = await asyncio.to_thread(
        _run, dev_stack, tmp_path, token, "support", "reveal", order["order_id"], "--reason", "buyer lost the email"
    )
    assert (revealed.returncode, revealed.stdout) == (0, f"{key}\tsold\n")
    assert await _audit(dev_stack, order["order_id"]) == [
        (name, "order.keys_revealed", {"keys": 1, "reason": "buyer lost the email"})
    ]
    # Without a reason there is no reveal (and no audit entry).
    no_reason = await asyncio.to_thread(_run, dev_stack, tmp_path, token, "support", "reveal", order["order_id"])
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    # An order not delivered has nothing to reveal.
    unpaid = await dev_stack.ordered(await dev_stack.product(1))
    nothing = await asyncio.to_thread(
        _run, dev_stack, tmp_path, token, "support", "reveal", unpaid["order_id"], "--reason", "checking"
    )
    assert (nothing.returncode, nothing.stderr.strip()) == (1, f"Order {unpaid['order_id']} holds no delivered keys.")
    assert await _audit(dev_stack, unpaid["order_id"]) == [
        (name, "order.keys_revealed", {"keys": 0, "reason": "checking"})
    ]


async def test_bad_input_and_settings_exit_2_refusals_exit_1(dev_stack: Stack, tmp_path: Path, staff) -> None:
    name, token = staff
    order = await _delivered(dev_stack)
    oid = order["order_id"]
    cases = [
        (
            dict(token=token),
            ("support", "resend", oid, "--reason", "line\nbreak"),
            2,
            "Bad input: reason: must not contain control characters.",
        ),
        (dict(token=token), ("support", "refund", "no-such-order"), 1, "Refused (order_not_found): no such order."),
        (
            dict(),
            ("support", "show", oid),
            2,
            "MIAOFA_STAFF_TOKEN is not set: ask an admin for one (`miaofa tokens add`).",
        ),
        (
            dict(token="mfs_" + "x" * 43),
            ("support", "show", oid),
            2,
            "The API refused the token: the token is not a support token.",
        ),
        (
            dict(token=token, api_url="http://127.0.0.1:9"),
            ("support", "show", oid),
            1,
            "Cannot reach the API at http://127.0.0.1:9 (ConnectError); set MIAOFA_STAFF_API_URL.",
        ),
        (
            dict(token=token),
            ("orders", "search", "--status", "lost"),
            2,
            "--status must be one of: awaiting_payment, in_review, paid, delivered, delivery_failed, expired, "
            "cancelled, rejected, refunded.",
        ),
        (
            dict(token=token),
            ("orders", "search", "--sku", "x' OR ProductSku != '"),
            2,
            "--sku may hold letters, digits and . _ : - only.",
        ),
    ]
    for options, args, code, message in cases:
        done = await asyncio.to_thread(cli, dev_stack, tmp_path, *args, **options)
        assert (done.returncode, done.stdout, done.stderr.strip()) == (code, "", message), args
    # A revoked token: refused as a bad setting, and nothing is done.
    assert tokens_cli(dev_stack, tmp_path, "revoke", name).returncode == 0
    revoked = await asyncio.to_thread(cli, dev_stack, tmp_path, "support", "refund", oid, token=token)
    assert (revoked.returncode, revoked.stderr.strip()) == (
        2,
        "The API refused the token: the token is not a support token.",
    )
    assert (await dev_stack.view(order))["status"] == "delivered"
    assert await _audit(dev_stack, oid) == []  # neither the bad input nor the revoked token did anything


async def test_audit_lists_entries_filtered_and_as_json(dev_stack: Stack, tmp_path: Path, staff) -> None:
    name, token = staff
    order = await _delivered(dev_stack)
    for action in ("resend", "refund"):
        assert (
            await asyncio.to_thread(_run, dev_stack, tmp_path, token, "support", action, order["order_id"])
        ).returncode == 0
    listed = await asyncio.to_thread(cli, dev_stack, tmp_path, "audit", "--actor", name, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["actor"], row["action"], row["target"]) for row in rows] == [
        (name, "support.refund", order["order_id"]),
        (name, "order.refund", order["order_id"]),
        (name, "support.resend", order["order_id"]),
    ]
    filtered = await asyncio.to_thread(
        cli,
        dev_stack,
        tmp_path,
        "audit",
        "--target",
        order["order_id"],
        "--action",
        "support.",
        "--limit",
        "1",
        "--json",
    )
    assert [json.loads(line)["action"] for line in filtered.stdout.splitlines()] == ["support.refund"]
    # In a pipe: whole values, tab-separated under a header line of the JSON keys.
    piped = await asyncio.to_thread(cli, dev_stack, tmp_path, "audit", "--actor", name)
    assert piped.returncode == 0, piped.stderr
    header, *lines = piped.stdout.splitlines()
    assert header == "id\tat\tactor\taction\ttarget\tdetail"
    assert [line.split("\t")[2:5] for line in lines] == [
        [name, "support.refund", order["order_id"]],
        [name, "order.refund", order["order_id"]],
        [name, "support.resend", order["order_id"]],
    ]
    assert [json.loads(line.split("\t")[5]) for line in lines] == [row["detail"] for row in rows]
    nobody = await asyncio.to_thread(cli, dev_stack, tmp_path, "audit", "--actor", "nobody-" + name)
    assert (nobody.returncode, nobody.stdout, nobody.stderr.strip()) == (
        0,
        "id\tat\tactor\taction\ttarget\tdetail\n",
        "No entries.",
    )


async def _search(stack: Stack, tmp_path: Path, *args: str, expect: int, timeout: float = 15) -> list[dict]:
    """Visibility is eventually consistent: ask again until `expect` orders are listed."""

    async def listed() -> tuple[list[dict]]:
        done = await asyncio.to_thread(cli, stack, tmp_path, "orders", "search", "--json", *args)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(rows) == expect, rows
        return (rows,)  # truthy even when no order is the right answer

    [rows] = await eventually(listed, timeout, f"{expect} orders listed for {args}", interval=0.5)
    return rows


async def test_search_by_email_status_sku_and_gateway(dev_stack: Stack, tmp_path: Path) -> None:
    email = f"Search-{uuid.uuid4().hex[:8]}@Example.com"
    sku = await dev_stack.product(3)
    delivered = await _delivered(dev_stack, email=email, sku=sku)
    unpaid = await dev_stack.ordered(sku, email=email.lower())
    other = await dev_stack.ordered(sku, email="someone-else@example.com")

    by_email = await _search(dev_stack, tmp_path, "--email", f"  {email.upper()} ", expect=2)
    assert {row["order_id"] for row in by_email} == {delivered["order_id"], unpaid["order_id"]}
    assert {row["buyer_hash"] for row in by_email} == {dev_stack.vault.buyer_hash(email)}
    by_sku = await _search(dev_stack, tmp_path, "--sku", sku, expect=3)
    assert [row["order_id"] for row in by_sku] == [other["order_id"], unpaid["order_id"], delivered["order_id"]]
    by_status = await _search(dev_stack, tmp_path, "--sku", sku, "--status", "delivered", expect=1)
    assert [
        (row["order_id"], row["status"], row["sku"], row["gateway"], row["amount_cents"], row["late"])
        for row in by_status
    ] == [(delivered["order_id"], "delivered", sku, "simulator", 990, False)]
    assert len(await _search(dev_stack, tmp_path, "--sku", sku, "--gateway", "simulator", expect=3)) == 3
    assert await _search(dev_stack, tmp_path, "--sku", sku, "--gateway", "stripe", expect=0, timeout=0) == []
    assert await _search(dev_stack, tmp_path, "--sku", sku, "--late", expect=0, timeout=0) == []
    assert len(await _search(dev_stack, tmp_path, "--sku", sku, "--limit", "2", expect=2)) == 2

    piped = await asyncio.to_thread(cli, dev_stack, tmp_path, "orders", "search", "--email", email)
    assert piped.returncode == 0, piped.stderr
    assert {line.split("\t")[0] for line in piped.stdout.splitlines()[1:]} == {
        delivered["order_id"],
        unpaid["order_id"],
    }
    assert email.lower() not in piped.stdout.lower()
    none = await asyncio.to_thread(cli, dev_stack, tmp_path, "orders", "search", "--email", "nobody@example.com")
    assert (none.returncode, none.stdout, none.stderr.strip()) == (0, "\t".join(SEARCH_FIELDS) + "\n", "No orders.")


SEARCH_FIELDS = (
    "order_id",
    "status",
    "sku",
    "gateway",
    "amount_cents",
    "late",
    "started_at",
    "closed_at",
    "merchant_id",
)


async def test_search_in_a_pipe_prints_whole_ids_and_on_a_terminal_a_table(dev_stack: Stack, tmp_path: Path) -> None:
    sku = await dev_stack.product(2)
    delivered = await _delivered(dev_stack, sku=sku)
    unpaid = await dev_stack.ordered(sku)
    await _search(dev_stack, tmp_path, "--sku", sku, expect=2)  # visibility has both, and the delivered status:
    await _search(dev_stack, tmp_path, "--sku", sku, "--status", "delivered", expect=1)

    # stdout captured, not a terminal: one order a line, every field whole, under a header line.
    piped = await asyncio.to_thread(cli, dev_stack, tmp_path, "orders", "search", "--sku", sku)
    assert piped.returncode == 0, piped.stderr
    header, *lines = piped.stdout.splitlines()
    assert header.split("\t") == list(SEARCH_FIELDS)
    rows = [dict(zip(SEARCH_FIELDS, line.split("\t"), strict=True)) for line in lines]
    assert [(row["order_id"], row["status"], row["sku"], row["amount_cents"], row["late"]) for row in rows] == [
        (unpaid["order_id"], "awaiting_payment", sku, "990", "false"),
        (delivered["order_id"], "delivered", sku, "990", "false"),
    ]
    assert len(delivered["order_id"]) == 20 and "…" not in piped.stdout
    assert rows[0]["closed_at"] == "" and datetime.fromisoformat(rows[1]["started_at"]).tzinfo is not None

    # On a terminal 80 columns wide: a table, and its order ids still whole.
    shown = await asyncio.to_thread(on_terminal, dev_stack, tmp_path, "orders", "search", "--sku", sku)
    assert "┃ order " in shown and "━" in shown
    assert delivered["order_id"] in shown and unpaid["order_id"] in shown


def on_terminal(stack: Stack, tmp_path: Path, *args: str) -> str:
    """The command's stdout when it is a terminal (a pseudo-terminal, 80 columns), colours stripped."""
    import pty

    main, child = pty.openpty()
    env = {**cli_env(stack, tmp_path), "COLUMNS": "80", "LINES": "50"}
    proc = subprocess.Popen([sys.executable, "-m", "miaofa.cli", *args], env=env, stdout=child, stderr=subprocess.PIPE)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(90) == 0, proc.stderr.read() if proc.stderr else ""
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())


async def test_the_readme_ui_queries_are_valid_and_find_the_buyer(dev_stack: Stack, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("**Support in the Temporal UI.**", 1)[1].split("\nTo act", 1)[0]
    queries = [
        line.split("|")[2].strip().split("`")[1]
        for line in section.splitlines()
        if line.startswith("| ") and "`" in line
    ]
    assert len(queries) == 4
    email = f"ui-{uuid.uuid4().hex[:8]}@example.com"
    order = await dev_stack.ordered(await dev_stack.product(1), email=email)
    hashed = await asyncio.to_thread(cli, dev_stack, tmp_path, "orders", "buyer-hash", email)
    assert (hashed.returncode, hashed.stdout.strip()) == (0, dev_stack.vault.buyer_hash(email))
    client = dev_stack.env.client
    for query in queries:
        query = query.replace("<hash>", hashed.stdout.strip())
        found = [w.id async for w in client.list_workflows(query, limit=50)]  # an invalid query raises
        if "BuyerHash" in query:
            found = await eventually(
                partial(_workflow_ids, client, query),
                timeout=15,
                interval=0.5,
                message=f"the buyer's order found by {query}",
            )
            assert found == [f"order-{order['order_id']}"]


async def _workflow_ids(client, query: str) -> list[str]:
    return [w.id async for w in client.list_workflows(query, limit=50)]


@pytest.fixture(scope="module")
async def held(dev_env, sessionmaker, sim_url, database_url, smtp, tmp_path_factory):
    """A shop whose rules hold every order from @review.example for review."""
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text('[blocklist]\nemails = ["@review.example"]\n\n[verdicts]\nblocklist_email = "review"\n')
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        risk_rules_file=str(path),
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=60,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
    ) as stack:
        yield stack


async def test_approve_and_reject_a_held_order(held: Stack, tmp_path: Path) -> None:
    name, token = new_token(held, tmp_path)
    sku = await held.product(2)
    orders = []
    for _ in range(2):
        answer = await held.order(sku, email=f"b-{uuid.uuid4().hex[:6]}@review.example")
        assert (answer.status_code, answer.json()["status"]) == (202, "in_review"), answer.text
        orders.append(answer.json()["order_id"])
    first, second = orders

    approved = await asyncio.to_thread(_run, held, tmp_path, token, "support", "approve", first, "--reason", "called")
    assert (approved.returncode, approved.stdout.strip()) == (
        0,
        f"Order {first} is awaiting_payment: approved; the buyer can pay now.",
    )
    again = await asyncio.to_thread(_run, held, tmp_path, token, "support", "approve", first)
    assert again.returncode == 1 and again.stderr.startswith("Refused (not_in_review): ")
    rejected = await asyncio.to_thread(
        _run, held, tmp_path, token, "support", "reject", second, "--reason", "stolen card pattern"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stdout.startswith(f"Order {second} is rejected: ")

    support = [
        (actor, action, detail) for actor, action, detail in await _audit(held, first) if action.startswith("support.")
    ]
    assert [(actor, action, detail["outcome"]) for actor, action, detail in support] == [
        (name, "support.approve", "done"),
        (name, "support.approve", "not_in_review"),
    ]
    support = [
        (actor, action, detail) for actor, action, detail in await _audit(held, second) if action.startswith("support.")
    ]
    assert [(actor, action, detail["outcome"], detail["reason"]) for actor, action, detail in support] == [
        (name, "support.reject", "done", "stolen card pattern")
    ]


async def test_an_action_on_an_odd_order_id_is_audited_escaped(dev_stack: Stack, tmp_path: Path, staff) -> None:
    name, token = staff
    odd = "x\u202e" + uuid.uuid4().hex[:6]
    answer = await dev_stack.http.post(f"/support/orders/{odd}/resend", headers={"Authorization": f"Bearer {token}"})
    assert (answer.status_code, answer.json()["error"]) == (404, "order_not_found")
    assert await _audit(dev_stack, "x\\u202e" + odd[2:]) == [
        (name, "support.resend", {"outcome": "order_not_found", "reason": ""})
    ]
