"""The buyer's links work (issue 6, item 9): the emailed `?token=` link, and the simulator's return
to the shop after paying, as a browser does it."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.helpers.messaging import part
from tests.helpers.stack import Stack
from tests.helpers.waiting import eventually


def _tampered(token: str) -> str:
    """The token with its first character changed (to "y" if it was an "x": else it is the same token)."""
    return ("y" if token[0] == "x" else "x") + token[1:]


def _buyer() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


async def test_the_emailed_link_with_token_in_the_query_opens_the_order(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku, email=_buyer())
    url = f"/orders/{order['order_id']}"

    linked = await dev_stack.http.get(url, params={"token": order["access_token"]})
    assert linked.status_code == 200, linked.text
    assert (linked.json()["order_id"], linked.json()["status"]) == (order["order_id"], "awaiting_payment")
    assert linked.headers["cache-control"] == "no-store"
    assert linked.json() == (await dev_stack.http.get(url, headers={"X-Order-Token": order["access_token"]})).json()

    # A wrong token answers exactly like a wrong header, and like an unknown order: ids cannot be probed.
    not_found = {"error": "order_not_found", "detail": "no such order"}
    wrong_query = await dev_stack.http.get(url, params={"token": _tampered(order["access_token"])})
    wrong_header = await dev_stack.http.get(url, headers={"X-Order-Token": _tampered(order["access_token"])})
    unknown = await dev_stack.http.get("/orders/nosuchorder", params={"token": order["access_token"]})
    for answer in (wrong_query, wrong_header, unknown):
        assert (answer.status_code, answer.json()) == (404, not_found)
    assert (await dev_stack.http.get(url, params={"token": ""})).status_code == 404


async def test_the_delivery_emails_link_opens_the_order(dev_stack: Stack, smtp) -> None:
    _, mailbox = smtp
    sku = await dev_stack.product(["EMAILED-LINK-KEY-7788"])
    order = await dev_stack.ordered(sku, email=_buyer())
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    mails = await eventually(
        lambda: [m for m in mailbox.messages if order["order_id"] in m["Subject"]],
        timeout=5,
        message="the delivery email",
    )
    assert len(mails) == 1
    text = part(mails[0])
    links = [line for line in text.splitlines() if line.startswith("http")]
    assert links == [f"{dev_stack.settings.api_url}/o/{order['order_id']}?token={order['access_token']}"] * 2  # zh, en
    async with httpx.AsyncClient(timeout=10) as browser:
        opened = await browser.get(links[0])
    assert opened.status_code == 200, opened.text
    assert "<code>EMAILED-LINK-KEY-7788</code>" in opened.text


async def _pay_as_a_browser(stack: Stack, order: dict, headers: dict[str, str]) -> httpx.Response:
    return await stack.sim.post(
        f"/pay/{order['payment']['payment_id']}", headers=headers, content=b"", follow_redirects=False
    )


def _return_link(stack: Stack, order: dict, location: str) -> str:
    """The gateway's return link: the order's return page with a ticket, and never the order token."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{stack.settings.api_url}/o/{order['order_id']}/return"
    assert list(parse_qs(parts.query)) == ["ticket"]
    assert order["access_token"] not in location
    return location


@asynccontextmanager
async def _buyers_browser(stack: Stack, order: dict) -> AsyncIterator[httpx.AsyncClient]:
    """The browser that placed the order: it has opened the order page (and so keeps its cookie)."""
    async with httpx.AsyncClient(timeout=10) as browser:
        opened = await browser.get(
            f"{stack.settings.api_url}/o/{order['order_id']}", params={"token": order["access_token"]}
        )
        assert opened.status_code == 200, opened.text
        yield browser


async def test_paying_on_the_simulator_page_returns_the_buyer_to_the_order(dev_stack: Stack) -> None:
    sku = await dev_stack.product(2)
    expected = f"{dev_stack.settings.api_url}/o/{{}}?token={{}}"  # the order page (HTML)
    assert dev_stack.settings.api_url == str(dev_stack.http.base_url).rstrip("/")

    # The pay page's form posts an empty form body.
    order = await dev_stack.ordered(sku, email=_buyer())
    form = await _pay_as_a_browser(dev_stack, order, {"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 303, form.text
    link = _return_link(dev_stack, order, form.headers["location"])
    async with _buyers_browser(dev_stack, order) as browser:
        back = await browser.get(link)
        assert (back.status_code, back.headers["location"]) == (
            303,
            expected.format(order["order_id"], order["access_token"]).removeprefix(dev_stack.settings.api_url),
        )
        assert back.headers["cache-control"] == "no-store"
        landed = await browser.get(link, follow_redirects=True)
    assert landed.status_code == 200, landed.text
    assert str(landed.url) == expected.format(order["order_id"], order["access_token"])
    assert f'data-order-id="{order["order_id"]}"' in landed.text and 'id="order"' in landed.text
    delivered = await dev_stack.wait_status(order, "delivered")  # the redirect is no proof; the notify is
    assert len(delivered["keys"]) == 1

    # A browser that asks for HTML is sent back too.
    other = await dev_stack.ordered(sku, email=_buyer())
    html = await _pay_as_a_browser(dev_stack, other, {"accept": "text/html,application/xhtml+xml"})
    assert html.status_code == 303, html.text
    _return_link(dev_stack, other, html.headers["location"])
    await dev_stack.wait_status(other, "delivered")


async def test_a_replayed_order_gives_nothing_that_opens_it(dev_stack: Stack) -> None:
    """Email + Idempotency-Key (a guessable key) are no proof of being the buyer: the replayed answer,
    its pay link, the gateway's return link and the pages behind it never give the token or the keys."""
    key = "PAID-ON-THE-RETURN-LINK-1"
    sku = await dev_stack.product([key])
    idem = {"Idempotency-Key": f"checkout-{uuid.uuid4().hex[:8]}-0001"}
    email = _buyer()
    order = await dev_stack.ordered(sku, email=email, headers=idem)
    token = order["access_token"]
    replay = await dev_stack.order(sku, email=email, headers=idem)  # the attacker
    assert replay.status_code == 200 and replay.json()["access_token"] is None
    assert token not in replay.text

    # Declining on the gateway's page sends the attacker's browser to the return link: a status page.
    pay_url = replay.json()["payment"]["pay_url"]
    declined = await dev_stack.sim.post(
        urlsplit(pay_url).path + "/fail", headers={"accept": "text/html"}, follow_redirects=False
    )
    assert declined.status_code == 303
    link = _return_link(dev_stack, order, declined.headers["location"])
    async with httpx.AsyncClient(timeout=10) as attacker:
        waiting = await attacker.get(link, headers={"Accept-Language": "en"})
        assert waiting.status_code == 200, waiting.text
        assert '<span class="badge status-awaiting_payment" id="status">Awaiting payment</span>' in waiting.text
        assert token not in waiting.text and "?token=" not in waiting.text
        assert waiting.headers["cache-control"] == "no-store" and "set-cookie" not in waiting.headers

        await dev_stack.pay(order)
        await dev_stack.wait_status(order, "delivered")
        paid_page = await dev_stack.sim.get(urlsplit(pay_url).path)  # "Back to the shop" once paid
        assert f'href="{link}"' in paid_page.text.replace("&amp;", "&") and token not in paid_page.text
        done = await attacker.get(link, headers={"Accept-Language": "en"})
        assert done.status_code == 200
        assert '<span class="badge status-delivered" id="status">Delivered</span>' in done.text
        assert token not in done.text and key not in done.text

        # The ticket names one order: another order's id, a changed or an expired ticket opens nothing.
        ticket = parse_qs(urlsplit(link).query)["ticket"][0]
        expiry, mac = ticket.split(".")
        vault = dev_stack.vault
        stale = vault.return_ticket(order["order_id"], datetime.now(UTC) - timedelta(seconds=1))
        for bad in (
            f"/o/{uuid.uuid4().hex[:20]}/return?ticket={ticket}",
            f"/o/{order['order_id']}/return?ticket={int(expiry) + 1}.{mac}",
            f"/o/{order['order_id']}/return?ticket={stale}",
            f"/o/{order['order_id']}/return",
        ):
            refused = await attacker.get(dev_stack.settings.api_url + bad)
            assert refused.status_code == 404 and "Order not found" in refused.text, bad


async def test_an_api_client_paying_still_gets_json(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku, email=_buyer())
    paid = await dev_stack.sim.post(f"/pay/{order['payment']['payment_id']}", follow_redirects=False)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["payment_id"], paid.json()["status"]) == (order["payment"]["payment_id"], "paid")
    await dev_stack.wait_status(order, "delivered")
