"""notify proofs and reconciliation findings

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('notify_log', sa.Column('proof', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_table('reconcile_findings',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('payment_id', sa.String(length=128), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('amount_cents', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('times_seen', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconcile_findings'))
    )
    op.create_index('ix_reconcile_findings_payment_kind', 'reconcile_findings', ['gateway', 'payment_id', 'kind'],
                    unique=True)


def downgrade() -> None:
    op.drop_index('ix_reconcile_findings_payment_kind', table_name='reconcile_findings')
    op.drop_table('reconcile_findings')
    op.drop_column('notify_log', 'proof')
