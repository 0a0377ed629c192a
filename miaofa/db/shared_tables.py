"""State the API processes share (UNLOGGED: not written to the WAL, emptied after a PostgreSQL crash).

Counters that live seconds to minutes: losing them in a crash costs a moment of leniency, never an
order. Written only by miaofa/capacity.py and miaofa/risk/shared_rates.py.
"""

from datetime import datetime

from sqlalchemy import ARRAY, DateTime, Float, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from miaofa.db.base import Base


class OrderStartSlot(Base):
    """One of ORDER_STARTS_TOTAL places for an order start in flight, across every API process.

    Free when `lease_until` has passed: a released slot is set to -infinity, and a crashed process's
    slot frees itself when its lease ends."""

    __tablename__ = "order_start_slots"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    order_id: Mapped[str | None] = mapped_column(String(40))
    holder: Mapped[str] = mapped_column(String(80), default="", server_default="")  # host:pid:nonce
    holders: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # same order, retried meanwhile
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("'-infinity'"))
    __table_args__ = {"prefixes": ["UNLOGGED"]}


class RateHit(Base):
    """A sliding window of attempts per rule and key (a keyed hash), as epoch seconds of the database clock."""

    __tablename__ = "rate_hits"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    hits: Mapped[list[float]] = mapped_column(ARRAY(Float), default=list, server_default="{}")
    __table_args__ = {"prefixes": ["UNLOGGED"]}
