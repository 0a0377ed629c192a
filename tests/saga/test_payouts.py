"""Each fault of the simulator's payout rail ends right: paid exactly once under one transfer number,
or the money back in the merchant's balance with the rail's reason; never a second transfer."""

import logging
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from miaofa import contract as c
from tests.api.test_no_key_leaks import _payload_lists
from tests.conftest import replay_data_converter
from tests.helpers import payouts as p
from tests.helpers.stack import Stack
from workflows.payout import PayoutWorkflow

# payout_stack: the fee is 50, so a withdrawal of 1000 sends 950.


async def _start(stack: Stack, mode: str, amount: int = 1000) -> tuple[p.Shop, str]:
    shop = await p.funded_shop(stack, 5000)
    dest = await p.destination(stack, shop)
    await stack.control(payout=mode)
    return shop, await p.withdrawn(stack, shop, amount, dest)


async def test_normal_is_paid_once(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "normal")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "approved", "submitted", "paid"]
    assert (seen["amount_cents"], seen["fee_cents"], seen["rail"]) == (1000, 50, "simulator")
    assert "9.50 CNY" in seen["timeline"][-1]["note"]
    (transfer,) = await p.transfers(payout_stack, wid)
    assert (transfer["status"], transfer["amount_cents"], transfer["submits"]) == ("paid", 950, 1)
    assert await p.balance(payout_stack, shop) == {
        "pending": 0,
        "available": 4000,
        "reserved": 0,
        "debt": 0,
        "payable": 0,
    }
    await p.record_history(payout_stack, wid, "paid")
    await p.clean(payout_stack)


async def test_unknown_then_paid_is_paid_once(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "unknown")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert p.stages(seen) == ["requested", "approved", "submitted", "checking", "paid"]
    (transfer,) = await p.transfers(payout_stack, wid)
    assert (transfer["status"], transfer["submits"]) == ("paid", 1)  # queried, never resubmitted
    assert (await p.balance(payout_stack, shop))["available"] == 4000
    await p.record_history(payout_stack, wid, "unknown_then_paid")
    await p.clean(payout_stack)


async def test_timeout_then_paid_is_paid_once_under_one_number(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "timeout_then_paid")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert "resubmitted" not in p.stages(seen)
    transfers = await p.transfers(payout_stack, wid)
    assert [(t["transfer_no"], t["status"], t["submits"]) for t in transfers] == [(wid, "paid", 1)]
    assert (await p.balance(payout_stack, shop))["available"] == 4000
    await p.record_history(payout_stack, wid, "timeout_then_paid")
    await p.clean(payout_stack)


async def test_a_definitive_failure_brings_the_money_back_with_the_reason(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "fail")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_FAILED)
    assert p.stages(seen)[-1] == "failed"
    note = seen["timeline"][-1]["note"]
    assert "the name given does not match the account's holder" in note and "back in your balance" in note
    assert await p.balance(payout_stack, shop) == {
        "pending": 0,
        "available": 5000,
        "reserved": 0,
        "debt": 0,
        "payable": 0,
    }
    await p.record_history(payout_stack, wid, "failed")
    await p.clean(payout_stack)


async def test_a_return_after_paid_is_returned_and_the_money_back(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "return_after_paid")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_RETURNED)
    assert p.stages(seen) == ["requested", "approved", "submitted", "paid", "returned"]
    assert "account is closed" in seen["timeline"][-1]["note"]
    assert (await p.balance(payout_stack, shop))["available"] == 5000  # the fee comes back too
    (transfer,) = await p.transfers(payout_stack, wid)
    assert transfer["submits"] == 1
    await p.record_history(payout_stack, wid, "returned")
    await p.clean(payout_stack)


async def test_await_confirm_without_confirmation_is_cancelled_and_the_money_back(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "await_confirm")
    seen = await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_FAILED)
    assert p.stages(seen) == ["requested", "approved", "submitted", "await_confirm", "cancelled"]
    (transfer,) = await p.transfers(payout_stack, wid)
    assert transfer["status"] == "cancelled"
    assert (await p.balance(payout_stack, shop))["available"] == 5000
    await p.record_history(payout_stack, wid, "confirm_timed_out")
    await p.clean(payout_stack)


async def test_await_confirm_confirmed_in_time_is_paid(payout_stack: Stack) -> None:
    shop, wid = await _start(payout_stack, "await_confirm")
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_SUBMITTED)
    sim_auth = {"Authorization": f"Bearer {payout_stack.settings.sim_secret}"}

    async def confirmed() -> bool:
        answer = await payout_stack.sim.post(f"/api/payouts/{wid}/confirm", headers=sim_auth)
        return answer.status_code == 200

    from tests.helpers.waiting import eventually

    await eventually(confirmed, 5, "the transfer to reach the simulator")
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    assert (await p.balance(payout_stack, shop))["available"] == 4000
    await p.record_history(payout_stack, wid, "confirmed")
    await p.clean(payout_stack)


async def test_the_destination_is_never_in_clear_in_answers_logs_or_history(payout_stack: Stack, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    shop = await p.funded_shop(payout_stack, 5000)
    made = await payout_stack.http.post(
        "/merchant/payout-destinations",
        headers=shop.owner,
        json={"rail": "simulator", "account": p.ACCOUNT, "name": p.NAME},
    )
    assert made.status_code == 201
    assert made.json()["account"] == "****0123 (张*)"
    wid = await p.withdrawn(payout_stack, shop, 1000, made.json()["destination_id"])
    await p.wait_status(payout_stack, shop, wid, c.WITHDRAWAL_PAID)
    answers = [
        made.text,
        (await payout_stack.http.get("/merchant/payout-destinations", headers=shop.owner)).text,
        (await payout_stack.http.get(f"/merchant/withdrawals/{wid}", headers=shop.owner)).text,
        (await payout_stack.http.get("/merchant/withdrawals", headers=shop.owner)).text,
    ]
    assert not [a for a in answers if p.ACCOUNT in a or p.NAME in a]

    history = await payout_stack.env.client.get_workflow_handle(c.payout_workflow_id(wid)).fetch_history()
    decoded = []
    for event in history.events:
        for payloads in _payload_lists(event):
            decoded += await payout_stack.env.client.data_converter.payload_codec.decode(payloads)
    plain = " ".join(d.data.decode("utf-8", "replace") for d in decoded)
    assert wid in plain  # the codec really decrypts...
    assert p.ACCOUNT not in plain and p.NAME not in plain  # ...and the workflow carried ids only

    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(wid in line for line in ours)
    assert not [line for line in ours if p.ACCOUNT in line or p.NAME in line]
    await p.clean(payout_stack)


HISTORIES = sorted(p.HISTORIES.glob("v*/*.json"))
EVERY_PATH = {
    "paid",
    "unknown_then_paid",
    "timeout_then_paid",
    "failed",
    "returned",
    "confirm_timed_out",
    "confirmed",
    "review_approved",
    "review_rejected",
    "two_person_approved",
}


def test_the_first_version_covers_every_path() -> None:
    assert {path.stem for path in (p.HISTORIES / "v1").glob("*.json")} == EVERY_PATH


def test_the_second_version_holds_the_suspended_shops_review() -> None:
    """v2: PayoutInput.review_reason (a suspended shop's withdrawal, reviewed whatever its amount)."""
    assert {path.stem for path in (p.HISTORIES / "v2").glob("*.json")} == {"suspended_approved"}


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{path.parent.name}/{path.stem}" for path in HISTORIES])
async def test_payout_history_replays_on_todays_workflow(path: Path) -> None:
    """A change to PayoutWorkflow's commands must go behind workflow.patched until these replay."""
    history = WorkflowHistory.from_json(f"payout-{path.stem}", path.read_text())
    result = await Replayer(workflows=[PayoutWorkflow], data_converter=replay_data_converter()).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{path.parent.name}/{path.name}: {result.replay_failure}"
