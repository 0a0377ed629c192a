"""Payout test helpers: a shop with money, a destination, a withdrawal, waiting for its status."""

import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from miaofa import contract as c
from miaofa.ledger.posting import PLATFORM, credit, debit, post
from tests.api.test_merchants import Shop
from tests.helpers.stack import Stack
from tests.helpers.waiting import eventually

ACCOUNT = "6222021234567890123"  # a payee account: never to be seen in clear outside the rail
NAME = "张三丰"


async def funded_shop(stack: Stack, available_cents: int) -> Shop:
    """A platform shop whose `available` holds this much (posted as a sale the buyer's gateway holds)."""
    from tests.api.test_ledger import money_shop

    shop = await money_shop(stack, hold_seconds=0)
    await fund(stack, shop, available_cents)
    return shop


async def fund(stack: Stack, shop: Shop, cents: int, kind: str = "available") -> None:
    async with stack.sessionmaker.begin() as session:
        lines = (
            [debit(PLATFORM, "gateway_clearing:simulator", cents), credit(shop.merchant_id, "available", cents)]
            if kind == "available"
            else [debit(shop.merchant_id, "debt", cents), credit(PLATFORM, "gateway_clearing:simulator", cents)]
        )
        await post(
            session,
            key=f"test_fund:{uuid.uuid4().hex}",
            kind="test_fund",
            currency="CNY",
            lines=lines,
            at=datetime.now(UTC),
            merchant_id=shop.merchant_id,
        )


async def destination(stack: Stack, shop: Shop, account: str = ACCOUNT, name: str = NAME) -> str:
    made = await stack.http.post(
        "/merchant/payout-destinations",
        headers=shop.owner,
        json={"rail": "simulator", "account": account, "name": name},
    )
    assert made.status_code == 201, made.text
    return made.json()["destination_id"]


async def withdraw(
    stack: Stack, shop: Shop, amount_cents: int, destination_id: str, key: str | None = None
) -> httpx.Response:
    return await stack.http.post(
        "/merchant/withdrawals",
        headers={**shop.owner, "Idempotency-Key": key or uuid.uuid4().hex},
        json={"amount_cents": amount_cents, "currency": "CNY", "destination_id": destination_id},
    )


async def withdrawn(stack: Stack, shop: Shop, amount_cents: int, destination_id: str) -> str:
    answer = await withdraw(stack, shop, amount_cents, destination_id)
    assert answer.status_code == 201, answer.text
    return answer.json()["withdrawal_id"]


async def view(stack: Stack, shop: Shop, withdrawal_id: str) -> dict[str, Any]:
    answer = await stack.http.get(f"/merchant/withdrawals/{withdrawal_id}", headers=shop.owner)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def wait_status(stack: Stack, shop: Shop, withdrawal_id: str, status: str, timeout: float = 20) -> dict:
    async def reached() -> dict[str, Any]:
        seen = await view(stack, shop, withdrawal_id)
        assert seen["status"] == status, f"{seen['status']}: {[e['stage'] for e in seen['timeline']]}"
        return seen

    return await eventually(reached, timeout, f"withdrawal {withdrawal_id} to be {status!r}", interval=0.1)


def stages(seen: dict[str, Any]) -> list[str]:
    return [event["stage"] for event in seen["timeline"]]


async def transfers(stack: Stack, number: str) -> list[dict[str, Any]]:
    """The simulator rail's transfers under this number (its own statement)."""
    answer = await stack.sim.get("/api/payouts", headers={"Authorization": f"Bearer {stack.settings.sim_secret}"})
    assert answer.status_code == 200, answer.text
    return [t for t in answer.json() if t["transfer_no"] == number]


async def balance(stack: Stack, shop: Shop) -> dict[str, int]:
    from tests.api.test_ledger import balance as ledger_balance

    return await ledger_balance(stack, shop)


async def clean(stack: Stack) -> None:
    answer = (await stack.http.get("/admin/ledger/check", headers=stack.admin)).json()
    assert answer == {"ok": True, "violations": []}


HISTORIES = Path(__file__).parents[1] / "histories_payout"


async def record_history(stack: Stack, withdrawal_id: str, name: str) -> None:
    """With MIAOFA_RECORD_PAYOUT_HISTORIES=<version> (v1, v2 …), save the finished run's history for the
    replay test (tests/saga/test_payouts.py). A released history is never overwritten."""
    version = os.environ.get("MIAOFA_RECORD_PAYOUT_HISTORIES", "")
    if not version:
        return
    if not re.fullmatch(r"v[0-9]+", version):
        raise AssertionError(f"MIAOFA_RECORD_PAYOUT_HISTORIES must name a version such as v2, not {version!r}")
    path = HISTORIES / version / f"{name}.json"
    if path.exists():
        raise AssertionError(f"{path} is a released history and is never re-recorded: record a new version")
    handle = stack.env.client.get_workflow_handle(c.payout_workflow_id(withdrawal_id))
    await handle.result()  # a paid one watches for a return a few seconds more
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((await handle.fetch_history()).to_json())


async def reserve_for_withdrawal(session: Any, merchant_id: str, cents: int, at: datetime) -> str:
    """available → reserved as a withdrawal does, with the open withdrawal row the check holds it to
    (no workflow: a test that only needs the money set aside). Its id."""
    from miaofa.db.payout_tables import PayoutDestination, Withdrawal

    wid, destination = "wd_" + uuid.uuid4().hex[:20], "pd_" + uuid.uuid4().hex[:20]
    session.add(
        PayoutDestination(
            id=destination,
            merchant_id=merchant_id,
            rail="simulator",
            sealed=b"-",
            masked="****",
            created_by="test",
            usable_at=at,
            created_at=at,
        )
    )
    await session.flush()
    session.add(
        Withdrawal(
            id=wid,
            merchant_id=merchant_id,
            destination_id=destination,
            rail="simulator",
            amount_cents=cents,
            fee_cents=0,
            currency="CNY",
            status=c.WITHDRAWAL_SUBMITTED,
            idem_key=wid,
            requested_by="test",
        )
    )
    await session.flush()
    await post(
        session,
        key=f"payout_reserve:{wid}",
        kind="payout_reserve",
        currency="CNY",
        lines=[debit(merchant_id, "available", cents), credit(merchant_id, "reserved", cents)],
        at=at,
        merchant_id=merchant_id,
    )
    return wid


async def reconcile(stack: Stack, lookback_seconds: int, gateway: str | None = None) -> c.ReconcileReport:
    """One ReconcileWorkflow run now; `gateway` keeps the payment side to that gateway's bill."""
    return await stack.env.client.execute_workflow(
        c.RECONCILE_WORKFLOW,
        c.ReconcileInput(lookback_seconds=lookback_seconds, grace_seconds=0, gateway=gateway),
        id=f"reconcile-payouts-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=c.ReconcileReport,
    )


async def findings(stack: Stack, number: str) -> list[tuple[str, str, str, int]]:
    """(gateway, kind, action, times seen) of the reconciliation findings about this transfer number."""
    from sqlalchemy import select

    from miaofa.db.models import ReconcileFinding

    async with stack.sessionmaker() as session:
        rows = await session.scalars(select(ReconcileFinding).where(ReconcileFinding.payment_id == number))
        return [(row.gateway, row.kind, row.action, row.times_seen) for row in rows]
