"""Logs carry ids and error types, never emails, keys, tokens or SQL parameters.

An exception's message can hold whatever the failing call was given: PostgreSQL echoes the
offending value, SQLAlchemy appends `[parameters: …]`, an asyncpg error quotes the duplicate key,
and uvicorn prints "Exception in ASGI application" with the whole chain. So every log record is
made safe where it is created, whichever library logs it and whichever handler writes it:
- an exception attached to a record (`exc_info`) becomes its type and its trace's frames, with
  every message in the chain withheld;
- an exception passed as the message or as an argument becomes its type name.
SQLAlchemy's own loggers stay at WARNING or above whatever the level (at INFO/DEBUG they print
statements' parameters and result rows), and engines are made with `hide_parameters=True`.
"""

import contextvars
import json
import logging
import re
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WITHHELD = "(message withheld: it may carry client data)"
QUIET_LOGGERS = (
    "sqlalchemy",
    "httpx",
    "httpcore",
)  # never below WARNING: statements, rows, request URLs (epay puts its key in them)

_previous_factory: Callable[..., logging.LogRecord] | None = None


def error_type(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def safe_traceback(exc: BaseException) -> str:
    """Like traceback.format_exception, frames and types only: no exception's message, no notes."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause of the following exception:"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception, another exception occurred:"
        else:
            current = None
    parts: list[str] = []
    for index, (item, _) in enumerate(reversed(chain)):
        if index:
            parts.append(f"\n{chain[len(chain) - index][1]}\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{error_type(item)}: {WITHHELD}\n")
    return "".join(parts).rstrip("\n")


def _safe_arg(value: Any) -> Any:
    return f"<{error_type(value)}>" if isinstance(value, BaseException) else value


def make_safe(record: logging.LogRecord) -> logging.LogRecord:
    exc_info = record.exc_info
    if exc_info and exc_info[1] is not None:
        record.exc_text = safe_traceback(exc_info[1])
        record.exc_info = None
    if isinstance(record.msg, BaseException):
        record.msg = _safe_arg(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_safe_arg(arg) for arg in record.args)
    elif isinstance(record.args, dict):
        record.args = {key: _safe_arg(value) for key, value in record.args.items()}
    return record


def install() -> None:
    """Make every record created from now on safe (idempotent)."""
    global _previous_factory
    if _previous_factory is not None:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return make_safe(previous(*args, **kwargs))

    _previous_factory = previous
    logging.setLogRecordFactory(factory)


def uninstall() -> None:
    """Back to the factory before install() (for tests)."""
    global _previous_factory
    if _previous_factory is not None:
        logging.setLogRecordFactory(_previous_factory)
        _previous_factory = None


def configure(level: str | int = "INFO", fmt: str = "text") -> None:
    """The log setup of every miaofa process: one format (text, or JSON lines), safe records, quiet
    SQL loggers."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=numeric, handlers=[handler])
    else:
        logging.basicConfig(level=numeric, format=FORMAT)
    install()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


# ---- JSON lines (MIAOFA_LOG_FORMAT=json) -------------------------------------------------------

_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("miaofa_log_order_id", default=None)
# Messages carry ids, not emails; an email that slips into one anyway is masked in JSON lines.
EMAIL = re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+\.[A-Za-z]{2,}")


def bind_order(order_id: str | None) -> None:
    """The order this task works on, for its log lines (a request or a CLI command; None forgets)."""
    _order_id.set(order_id)


def _ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """Order and workflow id: given with extra=, from Temporal's workflow/activity logger details,
    from the running activity, or bound by the API for this request."""
    order_id, workflow_id = getattr(record, "order_id", None), getattr(record, "workflow_id", None)
    details = getattr(record, "temporal_workflow", None) or getattr(record, "temporal_activity", None)
    if workflow_id is None and isinstance(details, dict):
        workflow_id = details.get("workflow_id")
    if workflow_id is None:
        from temporalio import activity

        if activity.in_activity():
            workflow_id = activity.info().workflow_id
    order_id = order_id or _order_id.get()
    if order_id is None and isinstance(workflow_id, str) and workflow_id.startswith("order-"):
        order_id = workflow_id.removeprefix("order-")
    if workflow_id is None and order_id is not None:
        workflow_id = f"order-{order_id}"
    return order_id, workflow_id


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, order_id and workflow_id where known,
    and an exception as its type and frames only."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": EMAIL.sub("<email>", record.getMessage()),
        }
        order_id, workflow_id = _ids(record)
        if order_id is not None:
            data["order_id"] = order_id
        if workflow_id is not None:
            data["workflow_id"] = workflow_id
        if record.exc_info and record.exc_info[1] is not None:  # a record made before install()
            data["error"] = safe_traceback(record.exc_info[1])
        elif record.exc_text:
            data["error"] = record.exc_text
        return json.dumps(data, ensure_ascii=False, default=str)
