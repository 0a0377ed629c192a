"""Waiting in tests: one helper that either gets its answer or fails saying what it waited for."""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = ..., message: str = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(check: Callable[[], T], timeout: float = ..., message: str = ..., interval: float = ...) -> T: ...
async def eventually(check: Callable[[], Any], timeout: float = 20, message: str = "", interval: float = 0.05) -> Any:
    """Call `check` (sync or async) until it returns something truthy, and return that.

    A check may also raise AssertionError while its condition does not hold yet. When `timeout`
    seconds pass, this raises AssertionError with `message` and the last value or assertion seen, so
    a wait never falls through silently. `timeout=0` checks exactly once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except AssertionError as failed:
            last: Any = failed
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            what = message or getattr(check, "__name__", "the condition")
            raise AssertionError(f"{what}: not within {timeout:g} s; last: {last!r}") from (
                last if isinstance(last, AssertionError) else None
            )
        await asyncio.sleep(interval)
