"""The simulator rail's answers as the workflow sees them: only a whitelisted failure is definitive;
a timeout, a 5xx, an unreadable body or an unfamiliar failure code is unknown, never failed."""

import httpx
import pytest

from miaofa import steps as s
from miaofa.payouts.rails import SimulatorRail


def _rail(handler) -> SimulatorRail:
    rail = SimulatorRail("http://rail.invalid", "secret", timeout=1)
    rail._http = httpx.AsyncClient(base_url="http://rail.invalid", transport=httpx.MockTransport(handler))
    return rail


def _answer(status: int, body: object = None, *, raw: bytes | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=raw) if raw is not None else httpx.Response(status, json=body)

    return handler


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("slow", request=request)


@pytest.mark.parametrize(
    ("handler", "status", "definitive"),
    [
        (_answer(200, {"status": "paid"}), s.TRANSFER_PAID, False),
        (_answer(200, {"status": "failed", "code": "PAYEE_NAME_MISMATCH"}), s.TRANSFER_FAILED, True),
        (_answer(200, {"status": "failed", "code": "SOMETHING_NEW"}), s.TRANSFER_UNKNOWN, False),
        (_answer(200, {"status": "failed"}), s.TRANSFER_UNKNOWN, False),
        (_answer(200, {"status": "exploded"}), s.TRANSFER_UNKNOWN, False),
        (_answer(503, {"error": "system_busy"}), s.TRANSFER_UNKNOWN, False),
        (_answer(200, raw=b"<html>gateway</html>"), s.TRANSFER_UNKNOWN, False),
        (_answer(200, ["paid"]), s.TRANSFER_UNKNOWN, False),
        (_answer(404, {"error": "not_found"}), s.TRANSFER_NOT_FOUND, False),
        (_timeout, s.TRANSFER_UNKNOWN, False),
    ],
)
async def test_only_a_whitelisted_failure_is_definitive(handler, status: str, definitive: bool) -> None:
    rail = _rail(handler)
    try:
        answer = await rail.query("wd_0123456789abcdef0123")
    finally:
        await rail.aclose()
    assert (answer.status, answer.definitive) == (status, definitive)
    if definitive:
        assert answer.reason == "the name given does not match the account's holder"
