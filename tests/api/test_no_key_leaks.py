"""A delivered key's text appears nowhere but the buyer's order page and email."""

import logging
from collections.abc import Sequence

from google.protobuf import json_format
from sqlalchemy import text

from tests.helpers.stack import Stack

KEY = "LEAKCHECK-9F3C-77AB-E21D"


async def test_key_text_is_not_in_history_logs_or_table(dev_stack: Stack, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    sku = await dev_stack.product([KEY])
    order = await dev_stack.ordered(sku, email="privacy@example.com")
    await dev_stack.pay(order)
    view = await dev_stack.wait_status(order, "delivered")
    assert view["keys"] == [KEY]
    resend = await dev_stack.http.post(f"/support/orders/{order['order_id']}/resend", headers=dev_stack.support)
    assert resend.status_code == 200

    handle = dev_stack.handle(order)
    history = await handle.fetch_history()
    raw = history.to_json()
    assert KEY not in raw
    assert "privacy@example.com" not in raw  # payloads are encrypted by the codec
    decoded = []
    for event in history.events:
        for payloads in _payload_lists(event):
            decoded += await dev_stack.env.client.data_converter.payload_codec.decode(payloads)
    assert decoded, "expected encrypted payloads in the history"
    plain = " ".join(json_format.MessageToJson(p) + p.data.decode("utf-8", "replace") for p in decoded)
    assert "privacy@example.com" in plain  # the codec really decrypts...
    assert KEY not in plain  # ...and even decrypted, the workflow carried key ids only

    described = await handle.describe()
    attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
    assert attributes["OrderStatus"] == "delivered"
    assert "privacy@example.com" not in str(attributes) and KEY not in str(attributes)

    # Everything the shop logs (API, worker, activities, HTTP clients); the test's SMTP server is
    # the buyer's mailbox, not ours, and logs the mail it receives.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    assert len(ours) > 10
    assert not [line for line in ours if KEY in line]
    async with dev_stack.sessionmaker() as session:
        rows = (await session.execute(text("SELECT t::text FROM card_keys t"))).scalars().all()
    assert rows and all(KEY not in row and KEY.encode().hex() not in row for row in rows)


def _payload_lists(event):
    """Every Payloads message inside one history event, found by walking the protobuf."""
    from temporalio.api.common.v1 import Payloads

    stack = [event]
    while stack:
        message = stack.pop()
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            values = value if getattr(field, "is_repeated", False) or isinstance(value, Sequence) else [value]
            for item in values:
                if isinstance(item, Payloads):
                    yield list(item.payloads)
                elif hasattr(item, "ListFields"):
                    stack.append(item)
