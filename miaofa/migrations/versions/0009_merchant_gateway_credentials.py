"""merchant_gateway_credentials: a direct merchant's own gateway accounts, sealed by the vault

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'merchant_gateway_credentials',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('gateway', sa.String(length=32), nullable=False),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
        sa.Column('summary', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(
            ['merchant_id'], ['merchants.id'], name=op.f('fk_merchant_gateway_credentials_merchant_id_merchants')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_merchant_gateway_credentials')),
        sa.UniqueConstraint('merchant_id', 'gateway', name=op.f('uq_merchant_gateway_credentials_merchant_id')),
    )


def downgrade() -> None:
    op.drop_table('merchant_gateway_credentials')
