"""order admissions: the open-order caps of the risk rules

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('order_admissions',
    sa.Column('order_id', sa.String(length=40), nullable=False),
    sa.Column('buyer_hash', sa.String(length=32), nullable=False),
    sa.Column('client_hash', sa.String(length=32), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_order_admissions'))
    )
    op.create_index('ix_order_admissions_buyer', 'order_admissions', ['buyer_hash', 'created_at'])
    op.create_index('ix_order_admissions_client', 'order_admissions', ['client_hash', 'created_at'])
    op.create_index('ix_order_admissions_created', 'order_admissions', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_order_admissions_created', table_name='order_admissions')
    op.drop_index('ix_order_admissions_client', table_name='order_admissions')
    op.drop_index('ix_order_admissions_buyer', table_name='order_admissions')
    op.drop_table('order_admissions')
