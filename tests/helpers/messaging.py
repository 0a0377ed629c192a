"""Helpers for the outbox, email and webhook tests: a webhook receiver, an SMTP server that can go
down and come back on its port, orders written straight through the nouns, and a dispatcher."""

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from miaofa import catalog
from miaofa.crypto.vault import Vault
from miaofa.db.models import Order, OutboxMessage
from miaofa.devstack.procs import free_port
from miaofa.messaging import outbox
from miaofa.messaging.dispatcher import Dispatcher
from miaofa.messaging.mailer import Mailer
from tests.conftest import TEST_VAULT_KEY
from tests.helpers.waiting import eventually

README = Path(__file__).resolve().parents[2] / "README.md"
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"
SHOP_URL = "http://shop.test"
FAST = outbox.Backoff(base_seconds=0.2, max_seconds=1.0, give_up_seconds=86400)
LOOPBACK = "127.0.0.0/8,::1/128"  # the receivers run on loopback: allowed as MIAOFA_WEBHOOK_ALLOW_NETWORKS would


def readme_verify() -> Callable:
    """The receiver's check exactly as README.md's Webhooks section shows it."""
    section = README.read_text().split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own README
    return scope["verify"]


@dataclass
class Hit:
    headers: httpx.Headers  # case-insensitive, as a receiver's framework gives them
    body: bytes
    at: float


@dataclass
class Receiver:
    """A merchant's endpoint: records every request; answers from `answers` (then 200), after `delay`."""

    hits: list[Hit] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    delay: float | Callable[[int], float] = 0.0  # seconds, or seconds for the n-th request

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.hits.append(Hit(httpx.Headers(request.headers.raw), await request.body(), time.monotonic()))
            status = self.answers.pop(0) if self.answers else 200  # decided on arrival, in order
            delay = self.delay(len(self.hits)) if callable(self.delay) else self.delay
            if delay:
                await asyncio.sleep(delay)
            return Response(status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def for_order(self, order_id: str) -> list[Hit]:
        import json

        return [hit for hit in self.hits if json.loads(hit.body)["data"]["order_id"] == order_id]


@dataclass
class Mailbox:
    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [message for rcpts, message in self.messages if address in rcpts]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 15) -> list[Message]:
        """The messages to `address`, once at least `count` have come."""
        return await eventually(
            lambda: len(self.to(address)) >= count and self.to(address), timeout, f"{count} message(s) to {address}"
        )


class Smtp:
    """A real SMTP server on a fixed loopback port, which can be stopped and started again."""

    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def part(message: Message, subtype: str = "plain") -> str:
    """The decoded text/plain (or text/html) part of a message, whatever its email policy."""
    for piece in message.walk():
        if piece.get_content_type() == f"text/{subtype}":
            return piece.get_payload(decode=True).decode(piece.get_content_charset() or "utf-8")
    raise AssertionError(f"no text/{subtype} part")


def dispatcher(
    sessionmaker: async_sessionmaker[AsyncSession],
    smtp_url: str = "",
    webhook_url: str = "",
    shop_url: str = SHOP_URL,
    **kwargs,
) -> Dispatcher:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("poll_seconds", 0.05)
    kwargs.setdefault("webhook_allow_networks", LOOPBACK)
    return Dispatcher(
        sessionmaker,
        Vault(TEST_VAULT_KEY),
        Mailer(smtp_url, "Miaofa <shop@miaofa.test>"),
        shop_url=shop_url,
        webhook_url=webhook_url,
        webhook_secret=WEBHOOK_SECRET,
        **kwargs,
    )


def new_email() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


async def make_order(
    sessionmaker: async_sessionmaker[AsyncSession],
    email: str,
    *,
    lang: str | None = None,
    status: str = "delivered",
    product_name: str = "Gift card 礼品卡",
    webhook_url: str | None = None,
    created_at: datetime | None = None,
) -> str:
    """An order row written through the nouns, no workflow: for what the dispatcher reads at send time."""
    vault = Vault(TEST_VAULT_KEY)
    order_id = uuid.uuid4().hex[:20]
    now = datetime.now(UTC)
    async with sessionmaker.begin() as session:
        product = await catalog.create_product(
            session,
            sku="p-" + uuid.uuid4().hex[:10],
            name=product_name,
            price_cents=990,
            currency="CNY",
            webhook_url=webhook_url,
        )
        session.add(
            Order(
                id=order_id,
                product_id=product.id,
                sku=product.sku,
                quantity=1,
                email=email,
                buyer_hash=vault.buyer_hash(email),
                amount_cents=990,
                currency="CNY",
                gateway="simulator",
                status=status,
                expires_at=now,
                paid_at=now,
                delivered_at=now,
                lang=lang,
                created_at=created_at or now,
            )
        )
    return order_id


async def emit(sessionmaker: async_sessionmaker[AsyncSession], order_id: str, event: outbox.Event) -> None:
    """An order's event, queued in a transaction of its own (as the step that makes it true does)."""
    async with sessionmaker.begin() as session:
        outbox.emit(session, event, order_id, datetime.now(UTC))


async def rows(sessionmaker: async_sessionmaker[AsyncSession], order_id: str) -> list[OutboxMessage]:
    async with sessionmaker() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.order_id == order_id).order_by(OutboxMessage.id)
            )
        )


async def drain(d: Dispatcher, until: Callable[[], bool], timeout: float = 15) -> None:
    """Run dispatcher rounds until `until()` holds."""

    async def round_done() -> bool:
        if until():
            return True
        await d.run_once()
        return until()

    await eventually(round_done, timeout, "the dispatcher to get there")
