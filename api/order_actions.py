"""An action on an order through its workflow's Update (refund, resend, cancel, approve, reject),
for support staff and for a merchant's own people alike: answered with the new state, or the
refusal's error; audited either way, with who asked and the order's merchant."""

import uuid
from typing import Any

from api import order_client
from api.schemas import plain
from api.state import State
from miaofa import audit, orders
from miaofa import contract as c
from miaofa.errors import MiaofaError
from miaofa.text import control_character


async def act(
    state: State,
    order_id: str,
    update: str,
    actor: str,
    reason: str,
    key: str | None,
    *,
    prefix: str = "support",
    merchant_id: str | None = None,
) -> dict[str, Any]:
    if key is not None:
        plain("Idempotency-Key", key)
    request = c.SupportRequest(reason=reason, actor=actor)
    # An Idempotency-Key makes a retried click the same Update, answered once: the same person's click.
    # Another person's request with the same key is their own Update (refused if it no longer applies),
    # so the audit never says they did what someone else did. ":" cannot be in a name (miaofa/staff.py).
    update_id = f"{update}:{actor}:{key}" if key else f"{update}-{uuid.uuid4().hex}"
    action = f"{prefix}.{update}"
    try:
        await order_client.ensure_exists(state, order_id)
        result: c.SupportResult = await order_client.run_update(
            state, order_id, update, request, result_type=c.SupportResult, update_id=update_id
        )
    except MiaofaError as exc:
        await record(state, actor, action, order_id, merchant_id, outcome=exc.error, reason=request.reason)
        raise
    await record(
        state, actor, action, order_id, merchant_id, outcome="done", status=result.status, reason=request.reason
    )
    return {"order_id": result.order_id, "status": result.status, "detail": result.detail}


async def record(state: State, actor: str, action: str, target: str, merchant_id: str | None, **detail: Any) -> None:
    """Every action, done or refused, with who asked (in its own transaction)."""
    if control_character(target):  # an odd id is answered 404; its entry must not carry a NUL or a bidi mark
        target = target.encode("unicode_escape").decode("ascii")
    async with state.sessionmaker.begin() as session:
        if merchant_id is None:  # support acting: the row still names the order's shop
            merchant_id = await orders.merchant_of(session, target)
        audit.record(session, actor, action, target, merchant_id=merchant_id, **detail)
