"""The audit log: who did what to which order or product, and when."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.db.models import AuditLog


def record(
    session: AsyncSession, actor: str, action: str, target: str, *, merchant_id: str | None = None, **detail: Any
) -> None:
    """Add an entry to the caller's transaction; detail values are short texts, never keys or emails.
    merchant_id: the shop the action touched (None: the platform itself)."""
    session.add(
        AuditLog(
            merchant_id=merchant_id,
            actor=actor[:40],
            action=action[:60],
            target=target[:80],
            detail={name: value if isinstance(value, int) else str(value)[:200] for name, value in detail.items()},
        )
    )


async def entries(
    session: AsyncSession,
    *,
    target: str | None = None,
    action_prefix: str | None = None,
    actor: str | None = None,
    merchant_id: str | None = None,
    limit: int = 100,
) -> list[AuditLog]:
    query = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if merchant_id is not None:
        query = query.where(AuditLog.merchant_id == merchant_id)
    if actor is not None:
        query = query.where(AuditLog.actor == actor)
    if target is not None:
        query = query.where(AuditLog.target == target)
    if action_prefix is not None:
        query = query.where(AuditLog.action.startswith(action_prefix))
    return list(await session.scalars(query))
