"""Support Updates on the dev server: refund, resend, cancel, and each refusal with its reason."""

import asyncio
import base64
import json
import os
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import order_client
from miaofa import contract as c
from miaofa.db.models import AuditLog
from miaofa.devstack.temporal import temporal_binary
from miaofa.errors import TemporalUnavailable
from tests.helpers.messaging import part
from tests.helpers.stack import Stack
from tests.helpers.waiting import eventually


async def _delivered(stack: Stack, keys: list[str] | int = 1, email: str = "buyer@example.com") -> tuple[str, dict]:
    sku = await stack.product(keys)
    order = await stack.ordered(sku, email=email)
    await stack.pay(order)
    await stack.wait_status(order, "delivered")
    return sku, order


async def test_refund_a_delivered_order(dev_stack: Stack) -> None:
    sku, order = await _delivered(dev_stack)
    answer = await dev_stack.http.post(
        f"/support/orders/{order['order_id']}/refund",
        headers=dev_stack.support,
        json={"reason": "buyer says the key was invalid"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "refunded"
    view = await dev_stack.view(order)
    assert (view["status"], view["keys"]) == ("refunded", [])
    assert "refunded" in [event["stage"] for event in view["timeline"]]
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 0, "sold": 0, "refunded": 1}
    assert (await dev_stack.sim_payment(order["payment"]["payment_id"]))["status"] == "refunded"
    async with dev_stack.sessionmaker() as session:
        audit = await session.scalar(
            select(AuditLog).where(AuditLog.target == order["order_id"], AuditLog.action == "order.refund")
        )
    assert (audit.actor, audit.action) == ("support", "order.refund")

    again = await dev_stack.http.post(f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support)
    assert again.status_code == 409
    assert again.json() == {"error": "already_refunded", "detail": "the order is already refunded"}
    await dev_stack.record_history(order, "support_refund")


async def test_refund_of_an_unpaid_order_is_refused(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support)
    assert answer.status_code == 409
    assert answer.json() == {
        "error": "not_refundable",
        "detail": "only delivered orders can be refunded; this one is awaiting_payment",
    }
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"


async def _mails(mailbox, order: dict, expected: int) -> list:
    """The order's emails, once `expected` have arrived (delivery email goes out just after delivery)."""

    def arrived() -> list:
        mails = [m for m in mailbox.messages if order["order_id"] in m["Subject"]]
        return mails if len(mails) >= expected else []

    return await eventually(arrived, timeout=5, message=f"{expected} mail(s) about order {order['order_id']}")


async def test_resend_emails_the_keys_again(dev_stack: Stack, smtp) -> None:
    _, mailbox = smtp
    sku, order = await _delivered(dev_stack, ["RESEND-KEY-0001"])
    assert len(await _mails(mailbox, order, 1)) == 1
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/resend", headers=dev_stack.support)
    assert answer.status_code == 200, answer.text
    assert answer.json()["detail"] == "delivery email sent again"
    sent = await _mails(mailbox, order, 2)
    assert len(sent) == 2
    assert "RESEND-KEY-0001" in part(sent[1])
    assert sent[1]["To"] == "buyer@example.com"
    await dev_stack.record_history(order, "support_resend")


async def test_resend_of_an_undelivered_order_is_refused(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/resend", headers=dev_stack.support)
    assert answer.status_code == 409
    assert answer.json()["error"] == "not_delivered"


async def test_cancel_an_unpaid_order_releases_stock(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel", headers=dev_stack.support)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert (await dev_stack.view(order))["status"] == "cancelled"
    assert await dev_stack.stock(sku) == {"available": 1, "reserved": 0, "sold": 0, "refunded": 0}
    paid = await dev_stack.pay(order)
    assert (paid.status_code, paid.json()["error"]) == (409, "payment_closed")
    await dev_stack.record_history(order, "support_cancel")


async def test_cancel_of_a_delivered_order_is_refused(dev_stack: Stack) -> None:
    _, order = await _delivered(dev_stack)
    answer = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel", headers=dev_stack.support)
    assert answer.status_code == 409
    assert answer.json() == {
        "error": "not_cancellable",
        "detail": "only unpaid orders can be cancelled; this one is delivered",
    }


async def test_support_needs_the_support_token(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku)
    missing = await dev_stack.http.post(f"/support/orders/{order['order_id']}/cancel")
    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"
    wrong = await dev_stack.http.post(
        f"/support/orders/{order['order_id']}/cancel", headers={"Authorization": "Bearer nope"}
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_token")
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"


async def test_support_on_an_unknown_order_is_404(dev_stack: Stack) -> None:
    answer = await dev_stack.http.post("/support/orders/nosuchorder/refund", headers=dev_stack.support)
    assert answer.status_code == 404
    assert answer.json()["error"] == "order_not_found"


# ---- refusals are final, inputs are required, actors are recorded (issue 6, item 8) --------------


def _buyer() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


async def _refused(stack: Stack, order: dict, update: str, *args) -> ApplicationError:
    """Send an Update as any Temporal client would (the CLI, a script), and return its refusal."""
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await stack.handle(order).execute_update(update, args=list(args), result_type=c.SupportResult)
    assert isinstance(failed.value.cause, ApplicationError), repr(failed.value.cause)
    return failed.value.cause


async def test_a_refusal_is_final_for_any_temporal_client(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku, email=_buyer())
    refund = await _refused(dev_stack, order, c.REFUND_UPDATE, c.SupportRequest(reason="x", actor="ops"))
    assert (refund.type, refund.non_retryable, refund.message) == (
        "not_refundable",
        True,
        "only delivered orders can be refunded; this one is awaiting_payment",
    )
    resend = await _refused(dev_stack, order, c.RESEND_UPDATE, c.SupportRequest(reason="x", actor="ops"))
    assert (resend.type, resend.non_retryable) == ("not_delivered", True)
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"


async def test_an_update_without_input_or_actor_is_refused_with_what_it_needs(dev_stack: Stack) -> None:
    sku = await dev_stack.product(1)
    order = await dev_stack.ordered(sku, email=_buyer())
    for update in (c.REFUND_UPDATE, c.RESEND_UPDATE, c.CANCEL_UPDATE):
        bare = await _refused(dev_stack, order, update)  # what `temporal workflow update execute` sends without --input
        assert (update, bare.type, bare.non_retryable) == (update, "missing_input", True)
        assert bare.message == (
            f"{update} needs its input, encrypted through the codec (--codec-endpoint), "
            f'e.g. {{"reason": "…", "actor": "your name"}}'
        )
        assert "TypeError" not in str(bare) and "_validate" not in bare.message
        for actor in ("", "   "):
            nobody = await _refused(dev_stack, order, update, c.SupportRequest(reason="x", actor=actor))
            assert (update, nobody.type, nobody.message) == (
                update,
                "missing_input",
                f"{update} needs an actor: who is acting",
            )
    # Nothing was done: the unpaid order is still waiting, its stock still held.
    assert (await dev_stack.view(order))["status"] == "awaiting_payment"
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 1, "sold": 0, "refunded": 0}


def _stage(view: dict, stage: str) -> dict:
    found = [event for event in view["timeline"] if event["stage"] == stage]
    assert len(found) == 1, (stage, view["timeline"])
    return found[0]


async def test_the_actor_is_on_every_support_timeline_entry(dev_stack: Stack) -> None:
    _, order = await _delivered(dev_stack, email=_buyer())
    resent = await dev_stack.http.post(f"/support/orders/{order['order_id']}/resend", headers=dev_stack.support)
    assert resent.status_code == 200, resent.text
    refunded = await dev_stack.http.post(
        f"/support/orders/{order['order_id']}/refund", headers=dev_stack.support, json={"reason": "wrong region"}
    )
    assert refunded.status_code == 200, refunded.text
    view = await dev_stack.view(order)
    assert _stage(view, "resent")["detail"] == {"actor": "support"}
    assert _stage(view, "refunded")["detail"] == {"reason": "wrong region", "actor": "support"}

    # The admin token acts as support, recorded as "admin".
    _, by_admin = await _delivered(dev_stack, email=_buyer())
    answer = await dev_stack.http.post(
        f"/support/orders/{by_admin['order_id']}/refund", headers=dev_stack.admin, json={"reason": "goodwill"}
    )
    assert answer.status_code == 200, answer.text
    assert _stage(await dev_stack.view(by_admin), "refunded")["detail"] == {"reason": "goodwill", "actor": "admin"}

    # A named actor from the Temporal CLI (or any client) is recorded as given.
    _, by_cli = await _delivered(dev_stack, email=_buyer())
    result = await dev_stack.handle(by_cli).execute_update(
        c.REFUND_UPDATE, c.SupportRequest(reason="chargeback", actor="alice"), result_type=c.SupportResult
    )
    assert result.status == "refunded"
    assert _stage(await dev_stack.view(by_cli), "refunded")["detail"] == {"reason": "chargeback", "actor": "alice"}

    sku = await dev_stack.product(1)
    unpaid = await dev_stack.ordered(sku, email=_buyer())
    cancelled = await dev_stack.http.post(f"/support/orders/{unpaid['order_id']}/cancel", headers=dev_stack.support)
    assert cancelled.status_code == 200, cancelled.text
    assert _stage(await dev_stack.view(unpaid), "cancelled")["detail"] == {"released": "1", "actor": "support"}


# ---- support reads orders (issue 6, item 8) -----------------------------------------------------


async def test_support_reads_an_order_with_its_keys_masked(dev_stack: Stack) -> None:
    secret = [f"SUPPORT-VIEW-{uuid.uuid4().hex}-A1B2", f"SUPPORT-VIEW-{uuid.uuid4().hex}-C3D4"]
    sku = await dev_stack.product(secret)
    order = await dev_stack.ordered(sku, quantity=2, email=_buyer())
    await dev_stack.pay(order)
    await dev_stack.wait_status(order, "delivered")
    url = f"/support/orders/{order['order_id']}"

    answer = await dev_stack.http.get(url, headers=dev_stack.support)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["order_id"], body["status"], body["sku"], body["quantity"]) == (order["order_id"], "delivered", sku, 2)
    stages = [event["stage"] for event in body["timeline"]]
    assert stages[:4] == ["created", "risk", "reserved", "payment_created"] and "delivered" in stages
    payment = body["payment"]
    assert (
        payment["gateway"],
        payment["payment_id"],
        payment["status"],
        payment["amount_cents"],
        payment["currency"],
    ) == ("simulator", order["payment"]["payment_id"], "paid", 2 * 990, "CNY")
    assert payment["paid_at"] is not None and payment["refunded_at"] is None
    assert body["notifies"] and body["notifies"][0]["outcome"] == "accepted"
    assert {n["gateway"] for n in body["notifies"]} == {"simulator"}
    assert sorted(key["masked"] for key in body["keys"]) == ["••••••••A1B2", "••••••••C3D4"]
    assert {key["status"] for key in body["keys"]} == {"sold"}
    for key in secret:
        assert key not in answer.text and key[:-4] not in answer.text

    assert (await dev_stack.http.get(url)).status_code == 401
    wrong = await dev_stack.http.get(url, headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_token")
    unknown = await dev_stack.http.get("/support/orders/nosuchorder", headers=dev_stack.support)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "order_not_found")


async def test_support_finds_a_buyers_orders_by_email(dev_stack: Stack) -> None:
    email = f"Find-{uuid.uuid4().hex[:8]}@Example.com"
    first_sku, second_sku = await dev_stack.product(1), await dev_stack.product(1)
    delivered = await dev_stack.ordered(first_sku, email=email)
    await dev_stack.pay(delivered)
    await dev_stack.wait_status(delivered, "delivered")
    waiting = await dev_stack.ordered(second_sku, email=email)
    await dev_stack.ordered(await dev_stack.product(1), email=f"other-{uuid.uuid4().hex[:8]}@example.com")

    async def find(**params: str) -> list[str]:
        answer = await dev_stack.http.get("/support/orders", params=params, headers=dev_stack.support)
        assert answer.status_code == 200, answer.text
        return [found["order_id"] for found in answer.json()]

    # The server hashes the email as the shop does (trimmed, any case): staff type it as the buyer says it.
    assert await find(email=email.lower()) == [waiting["order_id"], delivered["order_id"]]  # newest first
    assert await find(email=f" {email.upper()} ") == [waiting["order_id"], delivered["order_id"]]
    assert await find(email=email, status="delivered") == [delivered["order_id"]]
    assert await find(email=email, status="awaiting_payment") == [waiting["order_id"]]
    assert await find(email=email, sku=second_sku) == [waiting["order_id"]]
    assert await find(email=email, sku=second_sku, status="delivered") == []
    assert await find(sku=first_sku) == [delivered["order_id"]]
    assert await find(email=f"nobody-{uuid.uuid4().hex[:8]}@example.com") == []

    summary = (
        await dev_stack.http.get(
            "/support/orders", params={"email": email, "status": "delivered"}, headers=dev_stack.support
        )
    ).json()[0]
    assert (summary["sku"], summary["status"], summary["gateway"], summary["amount_cents"]) == (
        first_sku,
        "delivered",
        "simulator",
        990,
    )
    assert email.lower() not in str(summary).lower()  # no buyer email in the answer

    assert (await dev_stack.http.get("/support/orders", params={"email": email})).status_code == 401


# ---- the Temporal CLI, as the README shows it (issue 6, item 8) -----------------------------------


ENCRYPTED = base64.b64encode(b"binary/encrypted").decode()  # the codec's encoding, as the CLI prints it


async def _temporal_cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    # Asynchronously: the API that serves /codec runs in this event loop.
    address = stack.env.client.service_client.config.target_host
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        *args,
        "--address",
        address,
        "--namespace",
        stack.env.client.namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}, **(env or {})},
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode()


async def test_the_temporal_cli_acts_through_the_codec_endpoint(dev_stack: Stack) -> None:
    email = _buyer()
    _, order = await _delivered(dev_stack, email=email)
    workflow_id = f"order-{order['order_id']}"
    codec = f"{dev_stack.settings.api_url}/codec"

    shown_blind = await _temporal_cli(dev_stack, "workflow", "show", "--workflow-id", workflow_id, "--output", "json")
    assert shown_blind[0] == 0, shown_blind[1]
    assert ENCRYPTED in shown_blind[1]  # without the codec endpoint: opaque blobs
    in_clear = " ".join(_plain_payloads(json.loads(shown_blind[1])))  # search attributes, summaries
    assert email not in in_clear and order["payment"]["payment_id"] not in in_clear

    # Without the codec the Update's input is in clear: the worker takes it as none, and refuses it.
    blind = await _temporal_cli(
        dev_stack,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "resend",
        "--input",
        '{"actor": "bob"}',
    )
    assert blind[0] != 0
    assert "resent" not in [event["stage"] for event in (await dev_stack.view(order))["timeline"]]

    # The codec endpoint needs a staff token, also from this machine: the CLI sends it with --codec-auth.
    tokenless = await _temporal_cli(
        dev_stack, "workflow", "show", "--workflow-id", workflow_id, "--codec-endpoint", codec, "--output", "json"
    )
    assert tokenless[0] != 0 and email not in tokenless[1] and ENCRYPTED not in tokenless[1]
    auth = dev_stack.support["Authorization"]

    refused = await _temporal_cli(
        dev_stack,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "refund",
        "--codec-endpoint",
        codec,
        "--codec-auth",
        auth,
    )
    assert refused[0] != 0
    assert "needs its input" in refused[1] and "TypeError" not in refused[1]

    done = await _temporal_cli(
        dev_stack,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "refund",
        "--input",
        '{"reason": "from the CLI", "actor": "alice"}',
        env={"TEMPORAL_CODEC_ENDPOINT": codec, "TEMPORAL_CODEC_AUTH": auth},
    )
    assert done[0] == 0, done[1]
    assert "refunded at the gateway" in done[1]
    view = await dev_stack.view(order)
    assert view["status"] == "refunded"
    assert _stage(view, "refunded")["detail"] == {"reason": "from the CLI", "actor": "alice"}

    status = await _temporal_cli(
        dev_stack,
        "workflow",
        "query",
        "--workflow-id",
        workflow_id,
        "--name",
        "status",
        "--codec-endpoint",
        codec,
        "--codec-auth",
        auth,
    )
    assert status[0] == 0, status[1]
    assert '"status":"refunded"' in status[1].replace(" ", ""), status[1]

    shown = await _temporal_cli(
        dev_stack,
        "workflow",
        "show",
        "--workflow-id",
        workflow_id,
        "--codec-endpoint",
        codec,
        "--codec-auth",
        auth,
        "--output",
        "json",
    )
    assert shown[0] == 0, shown[1]
    assert ENCRYPTED not in shown[1]
    decoded = _plain_payloads(json.loads(shown[1]))
    assert {"reason": "from the CLI", "actor": "alice"} in [_json_or_none(text) for text in decoded], decoded


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _plain_payloads(node) -> list[str]:
    """The json/plain payloads of `temporal workflow show --output json`, decoded (it prints them as base64)."""
    if isinstance(node, list):
        return [text for item in node for text in _plain_payloads(item)]
    if not isinstance(node, dict):
        return []
    found = [text for value in node.values() for text in _plain_payloads(value)]
    if node.get("metadata", {}).get("encoding") == base64.b64encode(b"json/plain").decode() and "data" in node:
        found.append(base64.b64decode(node["data"]).decode())
    return found


async def test_support_on_an_odd_order_id_is_404_and_an_outage_is_503(dev_stack: Stack) -> None:
    for odd in ("x" * 1200, "a%20b", "%E2%80%AE"):
        answer = await dev_stack.http.post(f"/support/orders/{odd}/refund", headers=dev_stack.support)
        assert (odd[:8], answer.status_code, answer.json()["error"]) == (odd[:8], 404, "order_not_found")

    class Down:  # a Temporal frontend that does not answer
        def get_workflow_handle(self, workflow_id: str):
            return self

        async def describe(self):
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    with pytest.raises(TemporalUnavailable):
        await order_client.ensure_exists(SimpleNamespace(temporal=Down()), "any")


async def test_a_refund_reason_with_a_control_character_is_refused_before_any_money_moves(dev_stack: Stack) -> None:
    _, order = await _delivered(dev_stack)
    for reason in ("bad\u0000reason", "lone \ud800 surrogate"):
        answer = await dev_stack.http.post(  # json.dumps escapes the lone surrogate as \ud800
            f"/support/orders/{order['order_id']}/refund",
            content=json.dumps({"reason": reason}),
            headers={**dev_stack.support, "content-type": "application/json"},
        )
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_input")
    # Through Temporal directly (no API edge), the workflow's validator refuses it too.
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await dev_stack.handle(order).execute_update(
            c.REFUND_UPDATE, c.SupportRequest(reason="x\u0000", actor="ops"), result_type=c.SupportResult
        )
    assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.type == "missing_input"
    view = await dev_stack.view(order)
    assert view["status"] == "delivered" and len(view["keys"]) == 1
    assert (await dev_stack.sim_payment(order["payment"]["payment_id"]))["status"] == "paid"
