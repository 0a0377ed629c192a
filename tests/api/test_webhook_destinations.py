"""Where a merchant webhook may go (issue 17, N7): only public addresses unless
MIAOFA_WEBHOOK_ALLOW_NETWORKS says otherwise, in every spelling of an address, checked again on the
resolved addresses at each send and connected to exactly those; the receiver's answer is kept as a
class, never as an oracle; a retried event goes where it was queued for."""

import asyncio
import socket
import time
from urllib.parse import urlparse

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from miaofa.cli.common import settings_problems
from miaofa.db.models import Order, Product
from miaofa.messaging import outbox
from miaofa.netaddr import PUBLIC_ONLY, webhook_host_problem
from miaofa.settings import Settings
from tests.conftest import stack_settings
from tests.helpers.messaging import (
    LOOPBACK,
    WEBHOOK_SECRET,
    Receiver,
    dispatcher,
    drain,
    emit,
    make_order,
    new_email,
    rows,
)
from tests.helpers.servers import bind, serve
from tests.helpers.stack import running_stack
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.usefixtures("quiet_outbox")

# What the attack run reached or had accepted: the clouds' metadata, this machine's own services (in
# the spellings getaddrinfo reads), the LAN. Ports as `miaofa up` uses them.
INSIDE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud's
    "http://127.0.0.1:54329/",
    "http://[::ffff:127.0.0.1]:7233/",
    "http://2130706433:8233/",
    "http://0x7f.1:9464/metrics",
    "http://017700000001:8000/",
    "http://localhost:8010/control",
    "http://api.localhost/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0:8000/",
    "http://10.0.0.5/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://[64:ff9b::7f00:1]/",
]


@pytest.mark.parametrize("url", INSIDE)
def test_every_spelling_of_an_inside_address_is_refused_without_dns(url: str) -> None:
    assert webhook_host_problem(urlparse(url).hostname or "") == PUBLIC_ONLY


@pytest.mark.parametrize("host", ["merchant.example", "93.184.216.34", "[2606:2800:220:1::1]", "hooks.shop.cn"])
def test_public_hosts_pass_until_their_send(host: str) -> None:
    assert webhook_host_problem(host) is None


def test_the_allow_list_lets_a_network_in_and_no_other() -> None:
    assert [webhook_host_problem(h, "127.0.0.0/8,::1/128") for h in ("127.0.0.1", "[::1]", "2130706433")] == [
        None,
        None,
        None,
    ]
    assert webhook_host_problem("10.0.0.5", "127.0.0.0/8") == PUBLIC_ONLY
    assert webhook_host_problem("169.254.169.254", "10.0.0.0/8") == PUBLIC_ONLY


def test_an_inside_webhook_url_stops_the_start_unless_allowed() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(webhook_url="http://169.254.169.254/hook", webhook_secret=WEBHOOK_SECRET)
    assert settings_problems(raised.value) == [f"MIAOFA_WEBHOOK_URL {PUBLIC_ONLY}"]
    with pytest.raises(ValidationError) as raised:
        Settings(webhook_allow_networks="10.0.0.0/33")
    assert settings_problems(raised.value) == [
        "MIAOFA_WEBHOOK_ALLOW_NETWORKS '10.0.0.0/33' is not an address or network (e.g. 10.0.0.0/8)"
    ]
    allowed = Settings(
        webhook_url="http://10.1.2.3:8080/hook", webhook_secret=WEBHOOK_SECRET, webhook_allow_networks="10.0.0.0/8"
    )
    assert allowed.webhook_url == "http://10.1.2.3:8080/hook"


async def test_the_admin_api_refuses_inside_destinations_and_changes_nothing(
    dev_env, sessionmaker, sim_url, database_url
) -> None:
    async with running_stack(
        dev_env, sessionmaker, sim_url, webhook_secret=WEBHOOK_SECRET, **stack_settings(database_url, "")
    ) as stack:
        sku = "p-dest-" + str(int(time.time() * 1000))
        body = {"sku": sku, "name": "n", "price_cents": 100, "currency": "CNY"}
        for url in INSIDE:
            created = await stack.http.post("/admin/products", headers=stack.admin, json={**body, "webhook_url": url})
            assert (created.status_code, created.json()) == (
                422,
                {"error": "invalid_input", "detail": f"webhook_url: {PUBLIC_ONLY}"},
            ), url
        assert (await stack.http.get(f"/admin/products/{sku}/stock", headers=stack.admin)).status_code == 404
        good = "https://hooks.merchant.example/miaofa"
        created = await stack.http.post("/admin/products", headers=stack.admin, json={**body, "webhook_url": good})
        assert created.status_code == 201, created.text
        for url in INSIDE:
            answer = await stack.http.put(
                f"/admin/products/{sku}/webhook", headers=stack.admin, json={"webhook_url": url}
            )
            assert (answer.status_code, answer.json()["detail"]) == (422, f"webhook_url: {PUBLIC_ONLY}"), url
        async with sessionmaker() as session:
            assert await session.scalar(select(Product.webhook_url).where(Product.sku == sku)) == good


class FakeDns:
    """A resolver answering from a table, counting its questions."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table, self.asked = table, []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


async def test_a_destination_inside_is_refused_at_send_time_and_never_reached(sessionmaker) -> None:
    receiver = Receiver()
    sock = bind()
    port = sock.getsockname()[1]
    # One name resolves to a public and an internal address: every address is checked.
    dns = FakeDns({"mixed.merchant.test": ["93.184.216.34", "127.0.0.1"], "inside.merchant.test": ["10.9.8.7"]})
    async with serve(receiver.app(), sock):
        order_ids = [
            await make_order(sessionmaker, new_email(), webhook_url=f"http://{host}:{port}/hook")
            for host in ("localhost", "2130706433", "[::ffff:127.0.0.1]", "127.0.0.1", "mixed.merchant.test")
        ]
        order_ids.append(await make_order(sessionmaker, new_email(), webhook_url="http://inside.merchant.test/hook"))
        for order_id in order_ids:
            await emit(sessionmaker, order_id, outbox.Event.PAID)
        d = dispatcher(sessionmaker, webhook_allow_networks="", resolve=dns)  # as a real shop runs: no allow-list

        async def all_failed() -> list[tuple[str, int, str]]:
            await d.run_once()
            found = [(r.status, r.attempts, r.last_error) for o in order_ids for r in await rows(sessionmaker, o)]
            assert found and all(status == "failed" for status, _, _ in found), found
            return found

        found = await eventually(all_failed, timeout=15, message="every inside destination refused")
        await d.aclose()
    assert found == [("failed", 1, "destination_refused")] * 6  # for good at once: retrying cannot help
    assert receiver.hits == []
    assert sorted(dns.asked) == ["inside.merchant.test", "mixed.merchant.test"]  # literals never asked DNS


async def test_the_connection_goes_to_the_address_that_was_checked(sessionmaker) -> None:
    # The name resolves nowhere but in our resolver: the send reaches the receiver only if it connects
    # to the checked address rather than letting the HTTP client resolve the name again.
    receiver = Receiver()
    sock = bind()
    port = sock.getsockname()[1]
    dns = FakeDns({"hooks.merchant.test": ["127.0.0.1"]})
    async with serve(receiver.app(), sock):
        order_id = await make_order(sessionmaker, new_email(), webhook_url=f"http://hooks.merchant.test:{port}/hook")
        await emit(sessionmaker, order_id, outbox.Event.PAID)
        d = dispatcher(sessionmaker, resolve=dns)  # loopback allowed, as in the tests
        await drain(d, lambda: len(receiver.for_order(order_id)) == 1)
        await d.aclose()
    [hit] = receiver.for_order(order_id)
    assert hit.headers["host"] == f"hooks.merchant.test:{port}"
    assert dns.asked == ["hooks.merchant.test"]  # once per send: no second answer to rebind to


async def test_the_receivers_answer_is_kept_as_a_class_only(sessionmaker) -> None:
    not_found, not_allowed = Receiver(answers=[404]), Receiver(answers=[405])
    sock_a, sock_b = bind(), bind()

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")  # a service that is not HTTP
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(not_http, "127.0.0.1", 0)
    other_port = other.sockets[0].getsockname()[1]
    closed = bind()  # bound, never listening: refused
    closed_port = closed.getsockname()[1]
    async with serve(not_found.app(), sock_a) as url_a, serve(not_allowed.app(), sock_b) as url_b:
        urls = [
            f"{url_a}/hook",
            f"{url_b}/hook",
            f"http://127.0.0.1:{other_port}/hook",
            f"http://127.0.0.1:{closed_port}/",
        ]
        order_ids = [await make_order(sessionmaker, new_email(), webhook_url=url) for url in urls]
        for order_id in order_ids:
            await emit(sessionmaker, order_id, outbox.Event.PAID)
        d = dispatcher(sessionmaker, webhook_allow_networks=LOOPBACK)

        async def all_tried() -> list[str]:
            await d.run_once()
            errors = [r.last_error for o in order_ids for r in await rows(sessionmaker, o)]
            assert errors and all(errors), errors
            return errors

        errors = await eventually(all_tried, timeout=15, message="one failed attempt at each")
        await d.aclose()
    other.close()
    closed.close()
    assert errors == ["http_4xx", "http_4xx", "unreachable", "unreachable"]


async def test_a_retried_event_keeps_the_url_it_was_queued_for(sessionmaker) -> None:
    first, later = Receiver(answers=[500]), Receiver()
    sock_first, sock_later = bind(), bind()
    async with serve(first.app(), sock_first) as first_url, serve(later.app(), sock_later) as later_url:
        order_id = await make_order(sessionmaker, new_email(), webhook_url=f"{first_url}/hook")
        await emit(sessionmaker, order_id, outbox.Event.PAID)
        d = dispatcher(sessionmaker)
        await drain(d, lambda: len(first.for_order(order_id)) == 1)  # it failed (500): a retry is due
        async with sessionmaker.begin() as session:  # the admin points the product elsewhere meanwhile
            product_id = await session.scalar(select(Order.product_id).where(Order.id == order_id))
            await session.execute(
                update(Product).where(Product.id == product_id).values(webhook_url=f"{later_url}/hook")
            )
        await drain(d, lambda: len(first.for_order(order_id)) == 2)
        await d.aclose()
    assert later.hits == []
    [row] = await rows(sessionmaker, order_id)
    assert (row.status, row.attempts, row.detail["url"]) == ("sent", 2, f"{first_url}/hook")
