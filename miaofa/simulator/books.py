"""The simulator's books: its payments, its control knobs, and the notify sender."""

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from miaofa.gateways.sim_protocol import ACK_BODY, SIGNATURE_HEADER, TIMESTAMP_HEADER, make_signature

logger = logging.getLogger("miaofa.simulator")

# Waits before each retry of an unacknowledged notify (so 1 + 5 attempts in all), like real
# gateways' growing back-off, only much shorter.
NOTIFY_RETRY_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16)
NOTIFY_TIMEOUT_SECONDS = 5.0

SimStatus = Literal["pending", "paid", "closed", "refunded"]
NotifyMode = Literal["normal", "drop", "delay"]
FailChannel = Literal["primary", "backup", "both"]
PayoutMode = Literal["normal", "fail", "unknown", "timeout_then_paid", "return_after_paid", "await_confirm"]


class SimError(Exception):
    """An API error answered as JSON `{"error", "detail"}`."""

    def __init__(self, status_code: int, error: str, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail


def _log_records(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # the last write was cut short by a crash: that change is lost
                break
            raise
    return records


def _line(payment: "Payment") -> str:
    return json.dumps(asdict(payment), default=lambda v: v.isoformat(), separators=(",", ":")) + "\n"


def _utc(dt: datetime) -> datetime:
    # Naive datetimes from callers are taken as UTC rather than local time.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---- state ----------------------------------------------------------------------------------


@dataclass
class Control:
    notify: NotifyMode = "normal"
    delay_seconds: float = 0.0
    duplicate: bool = False
    query_fail_rate: float = 0.0
    query_fail_channel: FailChannel = "primary"
    close_fail: bool = False  # the gateway cannot close: the buyer may still pay after our window
    create_fail: bool = False  # creating a payment answers 503 (a gateway blip while orders open)
    payout: PayoutMode = "normal"  # how the next new payout transfer behaves (miaofa/simulator/payouts.py)
    payout_hang_seconds: float = 3.0  # timeout_then_paid: how long the submit's answer is held back


@dataclass
class Payment:
    payment_id: str
    merchant_id: str
    order_id: str
    amount_cents: int
    currency: str
    subject: str
    notify_url: str
    expires_at: datetime
    status: SimStatus = "pending"
    paid_at: datetime | None = None
    refund_id: str | None = None
    refund_cents: int | None = None
    return_url: str | None = None  # where the buyer's browser goes after paying
    paid_cents: int | None = None  # what the buyer actually paid, when it differs (a wrong transfer)

    def state(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "order_id": self.order_id,
            "status": self.status,
            "amount_cents": self.paid_cents if self.paid_cents is not None else self.amount_cents,
            "currency": self.currency,
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
        }

    def notice(self) -> dict[str, Any]:
        return {**self.state(), "merchant_id": self.merchant_id}


class Simulator:
    """The gateway's books plus its notify sender."""

    def __init__(
        self,
        merchant_id: str,
        secret: str,
        public_url: str,
        retry_delays: Sequence[float],
        rng: Callable[[], float],
        state_file: Path | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self.secret = secret
        # More merchant accounts (POST /control/merchants), each with its own secret: the shop's direct
        # merchants. In memory only: a restart forgets them (the first account is the configured one).
        self.accounts: dict[str, str] = {merchant_id: secret}
        self.public_url = public_url.rstrip("/")
        self.retry_delays = tuple(retry_delays)
        self.rng = rng
        self.payments: dict[str, Payment] = {}
        # (merchant, order_id) is the idempotency key: each account has its own orders.
        self.by_order: dict[tuple[str, str], str] = {}
        # Handlers await between reading and writing a record only under this lock.
        self.lock = asyncio.Lock()
        self.control = Control()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self.state_file = state_file
        self._load()

    # -- persistence: a gateway does not forget payments when it restarts --
    # An append-only log, one JSON line per change of a payment (the last line wins): a change
    # costs one short write, whatever the number of payments. Compacted once at start.

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        text = self.state_file.read_text()
        for record in json.loads(text) if text.lstrip().startswith("[") else _log_records(text):
            for name in ("expires_at", "paid_at"):
                if record.get(name):
                    record[name] = datetime.fromisoformat(record[name])
            payment = Payment(**record)
            self.payments[payment.payment_id] = payment
            self.by_order.setdefault(
                (payment.merchant_id, payment.order_id), payment.payment_id
            )  # the order's first payment
        self._compact()

    def _compact(self) -> None:
        assert self.state_file is not None
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text("".join(_line(p) for p in self.payments.values()))
        temporary.replace(self.state_file)  # atomic: a crash never leaves half a file

    def save(self, payment: Payment) -> None:
        if self.state_file is None:
            return
        with self.state_file.open("a") as log:
            log.write(_line(payment))

    def merchant_of(self, token: str) -> str | None:
        """The account whose secret this bearer token is."""
        for merchant_id, secret in self.accounts.items():
            if hmac.compare_digest(token.encode(), secret.encode()):
                return merchant_id
        return None

    def get(self, payment_id: str, merchant_id: str | None = None) -> Payment:
        """merchant_id: the caller's account; another account's payment is not found."""
        payment = self.payments.get(payment_id)
        if payment is None or (merchant_id is not None and payment.merchant_id != merchant_id):
            raise SimError(404, "not_found", "no such payment")
        return payment

    def pay_url(self, payment: Payment) -> str:
        return f"{self.public_url}/pay/{payment.payment_id}"

    def check_query_channel(self, channel: Literal["primary", "backup"]) -> None:
        control = self.control
        if control.query_fail_rate <= 0 or control.query_fail_channel not in (channel, "both"):
            return
        if self.rng() < control.query_fail_rate:
            logger.info("query on the %s channel failed (control)", channel)
            raise SimError(503, "service_unavailable", f"simulated {channel} query failure")
        logger.info("query on the %s channel answered (control)", channel)

    # -- notify sending --

    def schedule_notify(self, payment: Payment) -> None:
        """Send the payment's current state to its notify_url in the background, per the control."""
        control = replace(self.control)  # the knobs as they were when the event happened
        if control.notify == "drop":
            logger.info("notify %s status=%s dropped (control)", payment.payment_id, payment.status)
            return
        body = json.dumps(payment.notice(), separators=(",", ":")).encode()
        secret = self.accounts.get(payment.merchant_id, self.secret)  # signed with its own account's secret
        self._spawn(self._deliver(payment.notify_url, body, payment.payment_id, control, secret))

    @property
    def sending(self) -> int:
        """Notify deliveries still on their way (first sends and retry chains); tests wait for 0."""
        return len(self._tasks)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # a bare task may be garbage-collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, payment_id: str, control: Control, secret: str) -> None:
        if control.notify == "delay" and control.delay_seconds > 0:
            await asyncio.sleep(control.delay_seconds)
        copies = 2 if control.duplicate else 1
        for copy in range(1, copies + 1):
            # Each copy gets its own retry chain, so the second copy follows the first at once.
            if not await self._send_once(url, body, payment_id, copy, 1, secret):
                self._spawn(self._retry(url, body, payment_id, copy, secret))

    async def _retry(self, url: str, body: bytes, payment_id: str, copy: int, secret: str) -> None:
        for attempt, delay in enumerate(self.retry_delays, start=2):
            await asyncio.sleep(delay)
            if await self._send_once(url, body, payment_id, copy, attempt, secret):
                return
        logger.warning("notify %s copy=%d gave up after %d attempts", payment_id, copy, len(self.retry_delays) + 1)

    async def _send_once(self, url: str, body: bytes, payment_id: str, copy: int, attempt: int, secret: str) -> bool:
        # A fresh timestamp per attempt, so a retry is never stale at the receiver.
        timestamp = int(time.time())
        headers = {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: make_signature(secret, timestamp, body),
            "Content-Type": "application/json",
        }
        where = url.split("?", 1)[0]
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.info(
                "notify %s copy=%d attempt=%d to %s failed: %s", payment_id, copy, attempt, where, type(exc).__name__
            )
            return False
        ok = response.status_code == 200 and response.content == ACK_BODY.encode()
        logger.info(
            "notify %s copy=%d attempt=%d to %s -> HTTP %d%s",
            payment_id,
            copy,
            attempt,
            where,
            response.status_code,
            "" if ok else " (not acknowledged)",
        )
        return ok

    def _http(self) -> httpx.AsyncClient:
        # Created lazily so the app also works under transports that skip the lifespan.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=NOTIFY_TIMEOUT_SECONDS)
        return self._client

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
