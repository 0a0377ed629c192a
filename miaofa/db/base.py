"""The declarative base, its naming convention and the columns many tables share."""

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


DEFAULT_MERCHANT = "default"  # a single-shop deployment is the platform with this one merchant


def merchant_column() -> Mapped[str]:
    return mapped_column(
        String(32), ForeignKey("merchants.id"), server_default=DEFAULT_MERCHANT, nullable=False, index=True
    )
