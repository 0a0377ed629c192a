"""Replay every released history against today's workflow: a change that breaks one fails here.

tests/histories/<version>/ holds the histories recorded on each released version of the order
workflow (README, "Deploying a workflow change"). They are never re-recorded: a change to the
workflow's commands must be guarded with `workflow.patched` until this test passes again. The
histories are encrypted with the tests' fixed vault key, which the replayer uses to decode them.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.conftest import replay_data_converter
from workflows.order import OrderWorkflow

ROOT = Path(__file__).parents[1] / "histories"
VERSIONS = sorted((path for path in ROOT.iterdir() if path.is_dir()), key=lambda path: int(path.name[1:]))
HISTORIES = sorted(ROOT.glob("v*/*.json"))
EVERY_PATH = {
    "callback_in_time",
    "lost_callback_polled",
    "backup_channel",
    "never_paid_expired",
    "paid_after_expiry_delivered",
    "paid_after_expiry_refunded",
    "late_delivery_coupon",
    "support_refund",
    "support_cancel",
    "support_resend",
    "late_poll_delivered",
    "paid_before_close_refunded",
    "wrong_amount_polled_stray",
    "review_approved",
    "review_rejected",
    "review_timed_out",
}


def test_at_least_two_versions_are_kept() -> None:
    assert [path.name for path in VERSIONS][:2] == ["v1", "v2"]


def test_the_first_and_the_newest_version_cover_every_path() -> None:
    assert {path.stem for path in VERSIONS[0].glob("*.json")} == EVERY_PATH
    assert {path.stem for path in VERSIONS[-1].glob("*.json")} >= EVERY_PATH


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{path.parent.name}/{path.stem}" for path in HISTORIES])
async def test_history_replays_on_todays_workflow(path: Path) -> None:
    history = WorkflowHistory.from_json(f"order-{path.stem}", path.read_text())
    result = await Replayer(workflows=[OrderWorkflow], data_converter=replay_data_converter()).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{path.parent.name}/{path.name}: {result.replay_failure}"
