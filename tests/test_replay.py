"""Replay saved histories of every saga path: a non-deterministic change to the workflow fails here.

Histories are recorded by the saga tests with MIAOFA_RECORD_HISTORIES=1 (see README) and encrypted
with the tests' fixed vault key, which the replayer uses to decode them.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.conftest import replay_data_converter
from workflows.order import OrderWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
EXPECTED = {"callback_in_time", "lost_callback_polled", "backup_channel", "never_paid_expired",
            "paid_after_expiry_delivered", "paid_after_expiry_refunded", "late_delivery_coupon",
            "support_refund", "support_cancel", "support_resend", "late_poll_delivered", "paid_before_close_refunded",
            "wrong_amount_polled_stray", "review_approved", "review_rejected", "review_timed_out"}


def test_every_path_has_a_saved_history() -> None:
    assert {path.stem for path in HISTORIES} == EXPECTED


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"order-{path.stem}", path.read_text())
    result = await Replayer(workflows=[OrderWorkflow], data_converter=replay_data_converter()).replay_workflow(
        history, raise_on_replay_failure=True)
    assert result.replay_failure is None
