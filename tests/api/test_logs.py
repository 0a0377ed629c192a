"""Issue 7 item 10: logs carry error types and order ids, never what the client sent (emails, coupon
codes, SQL parameters) — whichever library logs the exception: ours, uvicorn or SQLAlchemy."""

import io
import logging
import uuid
from collections.abc import Iterator

import pytest
from fastapi import Request
from sqlalchemy import text

from miaofa.settings import Settings
from miaofa.telemetry import logs
from tests.helpers.stack import Stack


@pytest.fixture
def safe_logs() -> Iterator[None]:
    """The redaction as `miaofa api` and `miaofa worker` install it, undone after the test."""
    logs.install()
    try:
        yield
    finally:
        logs.uninstall()


def _boom_route(stack: Stack, path: str):
    """A route that sends client text to PostgreSQL and fails there; PostgreSQL quotes the value back."""

    async def boom(order_id: str, request: Request) -> None:
        statement = {
            "server": "SELECT set_config(:email, 'x', true)",  # 42602: a server error (500)
            "data": "SELECT CAST(:email AS integer)",
        }[request.headers["x-kind"]]  # 22000: 422
        async with stack.app.state.miaofa.sessionmaker() as session:
            await session.execute(text(statement), {"email": request.headers["x-email"]})

    stack.app.router.add_api_route(path, boom, methods=["POST"], include_in_schema=False)
    return stack.app.router.routes[-1]


async def test_an_unhandled_database_error_logs_its_type_and_order_id_only(
    dev_stack: Stack, safe_logs: None, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"leak-{uuid.uuid4().hex}@example.com"
    order_id = uuid.uuid4().hex[:20]
    route = _boom_route(dev_stack, "/test-only/orders/{order_id}/boom")
    uvicorn_logger = logging.getLogger("uvicorn")
    propagate = uvicorn_logger.propagate
    uvicorn_logger.propagate = True  # uvicorn's own handler would hide its records from caplog
    sql_logger = logging.getLogger("sqlalchemy.engine")
    sql_level = sql_logger.level
    sql_logger.setLevel(logging.INFO)  # statements and their parameters, as a debugging operator might
    caplog.set_level(logging.DEBUG)
    try:
        url = f"/test-only/orders/{order_id}/boom"
        answer = await dev_stack.http.post(url, headers={"X-Email": marker, "X-Kind": "server"})
        refused = await dev_stack.http.post(url, headers={"X-Email": marker, "X-Kind": "data"})
    finally:
        dev_stack.app.router.routes.remove(route)
        uvicorn_logger.propagate = propagate
        sql_logger.setLevel(sql_level)
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal_error",
        "detail": "something went wrong on our side; it has been logged",
    }
    assert marker not in answer.text
    # Client data the database refuses is the client's problem: a 422, logged by type.
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_input"
    assert marker not in refused.text
    logged = caplog.text
    assert marker not in logged and marker.split("@")[0] not in logged
    assert "[parameters:" not in logged
    # What is logged: the error type, where, the order id, and the frames.
    ours = [r for r in caplog.records if r.name == "miaofa.api" and "unhandled" in r.getMessage()]
    assert ours and "ProgrammingError" in ours[0].getMessage() and order_id in ours[0].getMessage()
    uvicorn_records = [r for r in caplog.records if r.name == "uvicorn.error"]
    assert uvicorn_records and "sqlalchemy.exc.ProgrammingError" in (uvicorn_records[0].exc_text or "")
    assert "Traceback (most recent call last)" in uvicorn_records[0].exc_text
    assert any(
        "refused" in r.getMessage() and "DataError" in r.getMessage() and order_id in r.getMessage()
        for r in caplog.records
    )


def test_an_exception_logged_anywhere_keeps_its_type_and_frames_not_its_message(
    safe_logs: None, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"coupon-{uuid.uuid4().hex}"

    def fail() -> None:
        try:
            raise KeyError(marker)
        except KeyError as exc:
            raise ValueError(f"bad coupon {marker}") from exc

    caplog.set_level(logging.DEBUG)
    try:
        fail()
    except ValueError as exc:
        logging.getLogger("temporalio.activity").warning("Completing activity as failed", exc_info=True)
        logging.getLogger("miaofa.worker").error("step failed: %s", exc)
        logging.getLogger("miaofa.worker").error(exc)
        logging.getLogger("miaofa.worker").error("step failed: %(error)s", {"error": exc})
    assert marker not in caplog.text
    assert "KeyError" in caplog.text and "ValueError" in caplog.text
    assert "The above exception was the direct cause of the following exception" in caplog.text
    assert "in fail" in caplog.text  # the frames stay: where it failed is not a secret
    assert "step failed: <ValueError>" in caplog.text


def test_the_cli_logging_setup_redacts_and_keeps_sql_loggers_quiet() -> None:
    from miaofa.cli.common import _logging

    root, sql = logging.getLogger(), logging.getLogger("sqlalchemy")
    levels = root.level, sql.level
    try:
        _logging(Settings(log_level="DEBUG"))
        assert sql.level == logging.WARNING  # statements, parameters and rows are never logged
        record = logging.getLogRecordFactory()("x", logging.ERROR, __file__, 1, "m %s", (RuntimeError("secret"),), None)
        assert record.getMessage() == "m <RuntimeError>"
    finally:
        logs.uninstall()
        root.setLevel(levels[0])
        sql.setLevel(levels[1])


# --- JSON lines (issue 12) ---------------------------------------------------------------------


@pytest.fixture
def json_lines(safe_logs: None) -> Iterator[io.StringIO]:
    """JSON lines as `MIAOFA_LOG_FORMAT=json` writes them, of every miaofa logger at INFO."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    root, shop = logging.getLogger(), logging.getLogger("miaofa")
    level = shop.level
    root.addHandler(handler)
    shop.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        shop.setLevel(level)


async def test_json_lines_of_an_order_carry_its_ids_and_no_key_token_or_email(
    dev_stack: Stack, json_lines: io.StringIO
) -> None:
    import json

    email = f"json-{uuid.uuid4().hex[:8]}@example.com"
    key = f"KEY-JSON-{uuid.uuid4().hex}"
    sku = await dev_stack.product([key])
    order = await dev_stack.ordered(sku, email=email)
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    await dev_stack.wait_stage(order, "email_sent")  # the email step logs right after the delivery
    text_lines = json_lines.getvalue().splitlines()
    records = [json.loads(line) for line in text_lines]
    mine = [r for r in records if r.get("order_id") == order["order_id"]]
    loggers = {r["logger"] for r in mine}
    assert {"miaofa.api.notify", "miaofa.activities.notify"} <= loggers, loggers
    assert {r["workflow_id"] for r in mine} == {f"order-{order['order_id']}"}
    assert {"time", "level", "logger", "message"} <= set(mine[0])
    for line in text_lines:
        assert email not in line and key not in line and order["access_token"] not in line


def test_json_lines_mask_emails_keep_exception_types_and_take_temporal_ids() -> None:
    import json

    formatter = logs.JsonFormatter()

    def line(msg: str, *args, exc: BaseException | None = None, **extra) -> dict:
        record = logging.LogRecord(
            "miaofa.test", logging.WARNING, __file__, 1, msg, args, (type(exc), exc, exc.__traceback__) if exc else None
        )
        record.__dict__.update(extra)
        return json.loads(formatter.format(record))

    assert line("mail to %s bounced", "buyer.one+x@example.com")["message"] == "mail to <email> bounced"
    code = "MF-" + "123"
    try:
        raise ValueError(f"coupon {code} for a buyer")  # the message, not this source line, holds the code
    except ValueError as exc:
        failed = line("failed", exc=exc)
    assert failed["error"].endswith(f"ValueError: {logs.WITHHELD}") and "MF-123" not in json.dumps(failed)
    workflow = line("w", temporal_workflow={"workflow_id": "order-abc123", "run_id": "r"})
    assert (workflow["order_id"], workflow["workflow_id"]) == ("abc123", "order-abc123")
    stray = line("s", temporal_workflow={"workflow_id": "stray-simulator-p1"})
    assert ("order_id" in stray, stray["workflow_id"]) == (False, "stray-simulator-p1")
    logs.bind_order("bound1")
    try:
        assert (line("b")["order_id"], line("b")["workflow_id"]) == ("bound1", "order-bound1")
    finally:
        logs.bind_order(None)
    assert "order_id" not in line("plain") and "workflow_id" not in line("plain")
