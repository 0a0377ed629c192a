"""longer currency codes: USDT and other tokens beside ISO 4217

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = [("products", False), ("orders", False), ("payments", False), ("coupons", True),
           ("reconcile_findings", False)]


def upgrade() -> None:
    for table, nullable in COLUMNS:
        op.alter_column(table, 'currency', type_=sa.String(length=8), existing_type=sa.String(length=3),
                        existing_nullable=nullable)


def downgrade() -> None:
    for table, nullable in COLUMNS:
        op.alter_column(table, 'currency', type_=sa.String(length=3), existing_type=sa.String(length=8),
                        existing_nullable=nullable)
