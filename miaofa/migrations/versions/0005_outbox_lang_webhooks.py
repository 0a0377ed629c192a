"""outbox (emails and merchant webhooks), the order's language, a product's webhook URL

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=40), nullable=False),
    sa.Column('order_id', sa.String(length=40), nullable=True),
    sa.Column('buyer_hash', sa.String(length=32), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_error', sa.String(length=80), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("channel in ('email','webhook')", name=op.f('ck_outbox_channel_known')),
    sa.CheckConstraint("status in ('pending','sent','skipped','failed')", name=op.f('ck_outbox_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    op.create_index('ix_outbox_due', 'outbox', ['next_attempt_at'], postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_outbox_order', 'outbox', ['order_id'])
    op.add_column('orders', sa.Column('lang', sa.String(length=8), nullable=True))
    op.add_column('products', sa.Column('webhook_url', sa.String(length=500), nullable=True))


def downgrade() -> None:
    op.drop_column('products', 'webhook_url')
    op.drop_column('orders', 'lang')
    op.drop_index('ix_outbox_order', table_name='outbox')
    op.drop_index('ix_outbox_due', table_name='outbox')
    op.drop_table('outbox')
