"""Contracts by name, errors from one catalogue, and a broken invariant that ends visibly instead of
retrying forever (issue 6, item 10)."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import text
from temporalio.api.enums.v1 import EventType, RetryState

from miaofa import contract as c
from miaofa import errors
from miaofa import steps as s
from tests.helpers.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_imports_no_workflow_code() -> None:
    probe = (
        "import api.app, sys; bad = [m for m in sys.modules if m == 'workflows' or m.startswith('workflows.')]; "
        "assert not bad, bad; assert 'api.order_client' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _all_error_classes(cls: type[errors.MiaofaError] = errors.MiaofaError) -> list[type[errors.MiaofaError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _all_error_classes(sub)
    return found


def test_every_catalogued_code_is_one_class() -> None:
    classes = _all_error_classes()
    codes = [cls.error for cls in classes]
    assert len(codes) == len(set(codes)), sorted(code for code in codes if codes.count(code) > 1)
    assert set(errors.CATALOGUE) == set(codes)  # every class is catalogued, under its own code
    for code, cls in errors.CATALOGUE.items():
        assert (code, cls.error) == (code, code)
        made = errors.from_code(code, "why", errors.Conflict)
        assert (type(made), made.error, made.detail, made.status_code) == (cls, code, "why", cls.status_code)
        assert 400 <= cls.status_code < 600


def test_every_refusal_code_of_the_workflow_is_catalogued() -> None:
    refusals = {name: value for name, value in vars(c).items() if name.startswith("REFUSED_")}
    assert refusals  # the contract names them
    for name, code in refusals.items():
        assert (name, code in errors.CATALOGUE) == (name, True)
        expected = 422 if code == c.REFUSED_MISSING_INPUT else 409
        assert (name, errors.CATALOGUE[code].status_code) == (name, expected)


def test_an_unknown_code_keeps_its_text_under_the_default_status() -> None:
    made = errors.from_code("gateway_said_no", "the gateway refused", errors.Conflict)
    assert (type(made), made.error, made.detail, made.status_code) == (
        errors.Conflict,
        "gateway_said_no",
        "the gateway refused",
        409,
    )
    blank = errors.from_code("", "no code at all", errors.InvalidInput)
    assert (type(blank), blank.error, blank.status_code) == (errors.InvalidInput, "invalid_input", 422)
    # A default's instance never changes the class: the next error of that class has its own code.
    assert errors.Conflict("x").error == "conflict"


async def test_an_order_with_no_reserved_keys_fails_delivery_once_and_is_refunded(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku, email=f"invariant-{uuid.uuid4().hex[:10]}@example.com")
    # Break the invariant behind the saga's back: the order's reservation vanishes.
    async with dev_stack.sessionmaker.begin() as session:
        freed = await session.execute(
            text("UPDATE card_keys SET status = 'available', order_id = NULL, reserved_at = NULL WHERE order_id = :id"),
            {"id": order["order_id"]},
        )
        assert freed.rowcount == 1
    await dev_stack.pay(order)

    view = await dev_stack.wait_status(order, "refunded", timeout=30)
    assert view["keys"] == []
    stages = [event["stage"] for event in view["timeline"]]
    assert stages.index("delivery_failed") < stages.index("refunded"), stages
    assert "delivered" not in stages
    failed = next(event for event in view["timeline"] if event["stage"] == "delivery_failed")
    assert failed["detail"] == {"reason": "NoReservedKeys"}
    refunded = next(event for event in view["timeline"] if event["stage"] == "refunded")
    assert refunded["detail"] == {"reason": "delivery failed (NoReservedKeys)", "actor": "system"}

    gateway = await dev_stack.sim.get(
        f"/api/payments/{order['payment']['payment_id']}",
        headers={"Authorization": f"Bearer {dev_stack.settings.sim_secret}"},
    )
    assert gateway.status_code == 200, gateway.text
    assert gateway.json()["status"] == "refunded"
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}

    # Tried once, failed for good: no endless retry of a broken invariant.
    handle = dev_stack.handle(order)
    state = await handle.query(c.STATUS_QUERY, result_type=c.OrderState)
    assert (state.status, state.paid, state.delivered_key_count) == ("refunded", True, 0)
    assert [st for st in state.stages if st in ("paid", "delivery_failed", "refunded")] == [
        "paid",
        "delivery_failed",
        "refunded",
    ]
    failures = _deliver_keys_failures(await handle.fetch_history())
    assert len(failures) == 1, failures  # one attempt, one failure
    assert failures[0].application_failure_info.type == "NoReservedKeys"
    assert failures[0].application_failure_info.non_retryable is True
    # The pending-activity list is empty: nothing is retrying in the background.
    assert list((await handle.describe()).raw_description.pending_activities) == []


def _deliver_keys_failures(history) -> list:
    """Every failed attempt of the deliver_keys step in a history, whether it ran as an activity or
    as a local activity (a marker; its own data says which step it was)."""
    attempts, failures = 0, []
    scheduled = set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == s.DELIVER_KEYS:
                scheduled.add(event.event_id)
                attempts += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = event.activity_task_failed_event_attributes
            if failed.scheduled_event_id in scheduled:
                assert failed.retry_state == RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
                failures.append(failed.failure)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            data = marker.details["data"].payloads[0].data if "data" in marker.details else b""
            if (
                marker.marker_name == "core_local_activity"
                and json.loads(data or b"{}").get("activity_type") == s.DELIVER_KEYS
            ):
                attempts += 1
                if marker.HasField("failure"):
                    failures.append(marker.failure)
    assert attempts == len(failures), (attempts, failures)
    return failures
