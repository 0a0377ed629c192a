"""A merchant's payout destinations: sealed in the vault, shown only masked, usable after a cooling-off.

The cooling-off is the defence against a stolen token: a new destination waits before any money may
go to it, and only the owner may add one."""

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.crypto.vault import Vault
from miaofa.db.payout_tables import PayoutDestination
from miaofa.errors import MerchantSuspended, NotFound
from miaofa.merchants import accounts

RAILS = (
    "simulator",
    "alipay",
    "wechat",
    "stripe",
)  # the rails a destination may name (this deployment offers: rail_set.offered)


def mask(account: str, name: str) -> str:
    """The last four characters of the account and the holder's first character: enough to recognise."""
    tail = account[-4:] if len(account) > 6 else account[-2:]
    holder = (name[:1] + "*") if name else ""
    return f"****{tail}" + (f" ({holder})" if holder else "")


async def add(
    session: AsyncSession,
    vault: Vault,
    *,
    merchant_id: str,
    rail: str,
    account: str,
    name: str,
    actor: str,
    now: datetime,
    delay_seconds: int,
) -> PayoutDestination:
    await refuse_while_suspended(session, merchant_id)
    destination = PayoutDestination(
        id="pd_" + secrets.token_hex(10),
        merchant_id=merchant_id,
        rail=rail,
        sealed=vault.encrypt(json.dumps({"account": account, "name": name})),
        masked=mask(account, name),
        created_by=actor,
        usable_at=now + timedelta(seconds=delay_seconds),
        created_at=now,
    )
    session.add(destination)
    await session.flush()
    return destination


async def refuse_while_suspended(session: AsyncSession, merchant_id: str) -> None:
    """A suspended shop's destinations stay as they are: whoever holds its tokens cannot redirect the
    money while the platform looks into it. Every change to a destination calls this first."""
    reason = await accounts.suspension(session, merchant_id)
    if reason is not None:
        raise MerchantSuspended(
            f"the shop is suspended ({reason}); its payout destinations cannot be added or changed until "
            "the platform resumes it"
        )


async def owned(session: AsyncSession, merchant_id: str, destination_id: str) -> PayoutDestination:
    """This merchant's destination; another merchant's is not found, exactly like a missing one."""
    found = await session.scalar(
        select(PayoutDestination).where(
            PayoutDestination.id == destination_id, PayoutDestination.merchant_id == merchant_id
        )
    )
    if found is None:
        raise NotFound("no such payout destination", error="destination_not_found")
    return found


async def listing(session: AsyncSession, merchant_id: str) -> list[PayoutDestination]:
    rows = await session.scalars(
        select(PayoutDestination)
        .where(PayoutDestination.merchant_id == merchant_id)
        .order_by(PayoutDestination.created_at)
    )
    return list(rows)


def public(destination: PayoutDestination) -> dict[str, Any]:
    return {
        "destination_id": destination.id,
        "rail": destination.rail,
        "account": destination.masked,
        "usable_at": destination.usable_at.isoformat(),
        "created_at": destination.created_at.isoformat(),
    }


def unseal(vault: Vault, destination: PayoutDestination) -> tuple[str, str]:
    """(account, holder's name): for the rail's request only, never kept or logged."""
    sealed = json.loads(vault.decrypt(destination.sealed))
    return sealed["account"], sealed["name"]
