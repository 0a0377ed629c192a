"""admission networks: an address's /56 and /48 (keyed hashes) and the product's unpaid units

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('order_admissions', sa.Column('net56_hash', sa.String(length=32), server_default='', nullable=False))
    op.add_column('order_admissions', sa.Column('net48_hash', sa.String(length=32), server_default='', nullable=False))
    op.create_index('ix_order_admissions_net56', 'order_admissions', ['net56_hash', 'created_at'])
    op.create_index('ix_order_admissions_net48', 'order_admissions', ['net48_hash', 'created_at'])
    op.create_index('ix_order_admissions_product', 'order_admissions', ['product_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_order_admissions_product', table_name='order_admissions')
    op.drop_index('ix_order_admissions_net48', table_name='order_admissions')
    op.drop_index('ix_order_admissions_net56', table_name='order_admissions')
    op.drop_column('order_admissions', 'net48_hash')
    op.drop_column('order_admissions', 'net56_hash')
