"""A shop's webhook: its order events go to its URL, signed with its own secret, never to the
platform's URL nor with the platform's secret; another shop's events never reach it."""

import json

import pytest

from tests.api.test_merchants import open_shop, shop_order, shop_product
from tests.helpers.messaging import LOOPBACK, WEBHOOK_SECRET, Receiver, drain, readme_verify, rows
from tests.helpers.servers import bind, serve
from tests.helpers.stack import Stack
from worker import outbox_dispatcher

pytestmark = pytest.mark.usefixtures("quiet_outbox")


async def test_a_shops_events_go_to_its_own_url_signed_with_its_own_secret(dev_stack: Stack) -> None:
    verify = readme_verify()
    shop_hook, platform_hook = Receiver(), Receiver()
    a, b = await open_shop(dev_stack, "A"), await open_shop(dev_stack, "B")
    async with (
        serve(shop_hook.app(), bind()) as shop_url,
        serve(platform_hook.app(), bind()) as platform_url,
    ):
        staff = await dev_stack.http.post("/merchant/tokens", headers=a.owner, json={"name": "sam"})
        as_staff = {"Authorization": f"Bearer {staff.json()['token']}"}
        assert (
            await dev_stack.http.put("/merchant/webhook", headers=as_staff, json={"url": shop_url})
        ).status_code == 403
        inside = await dev_stack.http.put("/merchant/webhook", headers=a.owner, json={"url": "http://169.254.169.254/"})
        assert inside.status_code == 422
        dev_stack.settings.webhook_allow_networks = LOOPBACK  # the test's receivers are on loopback
        try:
            made = await dev_stack.http.put("/merchant/webhook", headers=a.owner, json={"url": f"{shop_url}/hook"})
        finally:
            dev_stack.settings.webhook_allow_networks = ""
        assert made.status_code == 200, made.text
        secret = made.json()["secret"]
        assert secret.startswith("whsec_")
        shown = (await dev_stack.http.get("/merchant/webhook", headers=a.owner)).json()
        assert shown == {"url": f"{shop_url}/hook", "secret_set": True}  # never the secret again

        order_a = await shop_order(dev_stack, a, await shop_product(dev_stack, a, ["HOOK-A-1"]))
        order_b = await shop_order(dev_stack, b, await shop_product(dev_stack, b, ["HOOK-B-1"]))
        for order in (order_a, order_b):
            await dev_stack.pay(order)
            await dev_stack.wait_status(order, "delivered")
        settings = dev_stack.settings.model_copy(
            update={
                "webhook_url": f"{platform_url}/hook",
                "webhook_secret": WEBHOOK_SECRET,
                "webhook_allow_networks": LOOPBACK,
            }
        )
        d = outbox_dispatcher(settings, dev_stack.sessionmaker, dev_stack.vault)

        await drain(d, lambda: len(shop_hook.for_order(order_a["order_id"])) == 2)
        await d.run_once()  # and a round more: B's events are settled too
        await d.aclose()
    hits = shop_hook.for_order(order_a["order_id"])
    assert sorted(json.loads(h.body)["type"] for h in hits) == ["order.delivered", "order.paid"]
    assert all(verify(secret, h.headers, h.body) for h in hits)
    assert not any(verify(WEBHOOK_SECRET, h.headers, h.body) for h in hits)
    assert shop_hook.for_order(order_b["order_id"]) == []
    assert platform_hook.for_order(order_a["order_id"]) == platform_hook.for_order(order_b["order_id"]) == []
    skipped = {r.status for r in await rows(dev_stack.sessionmaker, order_b["order_id"]) if r.channel == "webhook"}
    assert skipped == {"skipped"}  # B set no webhook: nowhere, not the platform's URL
