"""`miaofa notify list` and `miaofa notify replay`: support sees every notify and can run one again."""

import json
import os
import subprocess
import sys

from sqlalchemy import select

from miaofa.db.models import AuditLog, NotifyLog
from tests.helpers.stack import Stack


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MIAOFA_DATABASE_URL": stack.settings.database_url,
        "MIAOFA_VAULT_KEY": stack.settings.vault_key,
        "MIAOFA_SIM_SECRET": stack.settings.sim_secret,
        "MIAOFA_SIM_MERCHANT_ID": stack.settings.sim_merchant_id,
        "MIAOFA_SIM_URL": stack.settings.sim_url,
        "MIAOFA_TEMPORAL_ADDRESS": stack.env.client.service_client.config.target_host,
    }
    return subprocess.run(
        [sys.executable, "-m", "miaofa.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def _notifies(stack: Stack, order_id: str) -> list[NotifyLog]:
    async with stack.sessionmaker() as session:
        return list(
            await session.scalars(select(NotifyLog).where(NotifyLog.order_id == order_id).order_by(NotifyLog.id))
        )


async def test_a_replayed_notify_goes_through_verification_and_changes_nothing_twice(dev_stack: Stack) -> None:
    sku = await dev_stack.product(2)
    order = await dev_stack.ordered(sku, email="replay@example.com")
    await dev_stack.pay(order)
    delivered = await dev_stack.wait_status(order, "delivered")
    [first] = await _notifies(dev_stack, order["order_id"])
    assert first.outcome == "accepted"

    replayed = _cli(dev_stack, "notify", "replay", str(first.id), "--actor", "support:ann")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"Notify {first.id} replayed: duplicate ({order['order_id']})."
    again = await _notifies(dev_stack, order["order_id"])
    assert [(row.outcome, row.headers.get("x-miaofa-replay-of")) for row in again] == [
        ("accepted", None),
        ("duplicate", str(first.id)),
    ]
    assert (await dev_stack.view(order))["keys"] == delivered["keys"]
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 1, "refunded": 0}
    async with dev_stack.sessionmaker() as session:
        audit = await session.scalar(select(AuditLog).where(AuditLog.target == f"notify:{first.id}"))
    assert (audit.actor, audit.action, audit.detail) == ("support:ann", "notify.replayed", {"outcome": "duplicate"})

    listed = _cli(dev_stack, "notify", "list", "--json", "--order", order["order_id"])
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["outcome"], row["method"], row["gateway"]) for row in rows] == [
        ("duplicate", "POST", "simulator"),
        ("accepted", "POST", "simulator"),
    ]


async def test_a_forged_notify_replayed_is_refused_again(dev_stack: Stack) -> None:
    forged = await dev_stack.http.post(
        "/payments/simulator/notify",
        content=b'{"status":"paid"}',
        headers={"Content-Type": "application/json", "X-Sim-Timestamp": "1", "X-Sim-Signature": "0" * 64},
    )
    assert forged.status_code == 400
    async with dev_stack.sessionmaker() as session:
        row = await session.scalar(
            select(NotifyLog).where(NotifyLog.outcome == "rejected").order_by(NotifyLog.id.desc()).limit(1)
        )
    assert row.headers[":method"] == "POST" and row.body == '{"status":"paid"}'
    replayed = _cli(dev_stack, "notify", "replay", str(row.id))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip().startswith(f"Notify {row.id} replayed: rejected (")


def test_replaying_a_notify_that_does_not_exist_is_one_line(dev_stack: Stack) -> None:
    missing = _cli(dev_stack, "notify", "replay", "987654321")
    assert (missing.returncode, missing.stdout, missing.stderr.strip()) == (1, "", "Error: no notify 987654321")
