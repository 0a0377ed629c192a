"""payouts: destinations (sealed in the vault), withdrawals and their timelines

Revision ID: 0011
Revises: 0010

"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

STATUSES = "('requested', 'in_review', 'approved', 'submitted', 'paid', 'failed', 'rejected', 'returned')"


def upgrade() -> None:
    op.create_table(
        'payout_destinations',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), server_default='default', nullable=False),
        sa.Column('rail', sa.String(length=16), nullable=False),
        sa.Column('sealed', sa.LargeBinary(), nullable=False),
        sa.Column('masked', sa.String(length=80), nullable=False),
        sa.Column('created_by', sa.String(length=40), nullable=False),
        sa.Column('usable_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(
            ['merchant_id'], ['merchants.id'], name=op.f('fk_payout_destinations_merchant_id_merchants')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_payout_destinations')),
    )
    op.create_index(op.f('ix_payout_destinations_merchant_id'), 'payout_destinations', ['merchant_id'])
    op.create_table(
        'withdrawals',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), server_default='default', nullable=False),
        sa.Column('destination_id', sa.String(length=40), nullable=False),
        sa.Column('rail', sa.String(length=16), nullable=False),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.Column('fee_cents', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=8), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('idem_key', sa.String(length=200), nullable=False),
        sa.Column('requested_by', sa.String(length=40), nullable=False),
        sa.Column('rail_code', sa.String(length=64), server_default='', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('fee_cents >= 0 and amount_cents > fee_cents', name=op.f('ck_withdrawals_amounts')),
        sa.CheckConstraint(f'status in {STATUSES}', name=op.f('ck_withdrawals_status_known')),
        sa.ForeignKeyConstraint(
            ['destination_id'],
            ['payout_destinations.id'],
            name=op.f('fk_withdrawals_destination_id_payout_destinations'),
        ),
        sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_withdrawals_merchant_id_merchants')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_withdrawals')),
        sa.UniqueConstraint('merchant_id', 'idem_key', name=op.f('uq_withdrawals_merchant_id')),
    )
    op.create_index(op.f('ix_withdrawals_merchant_id'), 'withdrawals', ['merchant_id'])
    op.create_table(
        'withdrawal_events',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('withdrawal_id', sa.String(length=40), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('stage', sa.String(length=32), nullable=False),
        sa.Column('note', sa.String(length=300), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['withdrawal_id'], ['withdrawals.id'], name=op.f('fk_withdrawal_events_withdrawal_id_withdrawals')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_withdrawal_events')),
        sa.UniqueConstraint('withdrawal_id', 'seq', name=op.f('uq_withdrawal_events_withdrawal_id')),
    )
    op.create_index(op.f('ix_withdrawal_events_withdrawal_id'), 'withdrawal_events', ['withdrawal_id'])


def downgrade() -> None:
    op.drop_table('withdrawal_events')
    op.drop_table('withdrawals')
    op.drop_table('payout_destinations')
