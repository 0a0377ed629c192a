"""merchants: many shops on one platform; everything a merchant owns carries its id

Existing rows move into the merchant `default`. Composite foreign keys make isolation a fact of the
schema: a key belongs to a product of its own merchant and is held only by that merchant's orders;
an order's product and coupon are its merchant's.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

OWNED = ('products', 'card_keys', 'orders', 'coupons')


def upgrade() -> None:
    op.create_table(
        'merchants',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('slug', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('settlement', sa.String(length=16), nullable=False),
        sa.Column('fee_bps', sa.Integer(), nullable=False),
        sa.Column('hold_seconds', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('status_reason', sa.String(length=300), server_default='', nullable=False),
        sa.Column('risk_rules', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column('webhook_url', sa.String(length=500), nullable=True),
        sa.Column('webhook_secret', sa.LargeBinary(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("settlement in ('platform','direct')", name=op.f('ck_merchants_settlement_known')),
        sa.CheckConstraint("status in ('active','suspended')", name=op.f('ck_merchants_status_known')),
        sa.CheckConstraint('fee_bps between 0 and 10000', name=op.f('ck_merchants_fee_range')),
        sa.CheckConstraint('hold_seconds >= 0', name=op.f('ck_merchants_hold_not_negative')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_merchants')),
        sa.UniqueConstraint('slug', name=op.f('uq_merchants_slug')),
    )
    op.execute(
        "INSERT INTO merchants (id, slug, name, settlement, fee_bps, hold_seconds, status) "
        "VALUES ('default', 'default', 'Miaofa', 'platform', 0, 0, 'active')"
    )
    op.create_table(
        'merchant_tokens',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_by', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role in ('owner','staff')", name=op.f('ck_merchant_tokens_role_known')),
        sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_merchant_tokens_merchant_id_merchants')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_merchant_tokens')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_merchant_tokens_token_hash')),
    )
    op.create_index(
        'ix_merchant_tokens_live_name', 'merchant_tokens', ['merchant_id', 'name'], unique=True,
        postgresql_where=sa.text('revoked_at is null'),
    )

    for table in OWNED:
        op.add_column(table, sa.Column('merchant_id', sa.String(length=32), server_default='default', nullable=False))
        op.create_foreign_key(op.f(f'fk_{table}_merchant_id_merchants'), table, 'merchants', ['merchant_id'], ['id'])
        op.create_index(op.f(f'ix_{table}_merchant_id'), table, ['merchant_id'])

    op.add_column('products', sa.Column('description', sa.String(length=2000), server_default='', nullable=False))
    op.add_column('products', sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.drop_constraint('uq_products_sku', 'products', type_='unique')
    op.create_unique_constraint(op.f('uq_products_merchant_id'), 'products', ['merchant_id', 'sku'])
    op.create_unique_constraint(op.f('uq_products_id'), 'products', ['id', 'merchant_id'])

    op.drop_constraint('uq_coupons_code', 'coupons', type_='unique')
    op.create_unique_constraint(op.f('uq_coupons_merchant_id'), 'coupons', ['merchant_id', 'code'])
    op.create_unique_constraint(op.f('uq_coupons_id'), 'coupons', ['id', 'merchant_id'])

    op.create_unique_constraint(op.f('uq_orders_id'), 'orders', ['id', 'merchant_id'])
    op.drop_constraint('fk_orders_product_id_products', 'orders', type_='foreignkey')
    op.drop_constraint('fk_orders_coupon_id_coupons', 'orders', type_='foreignkey')
    op.create_foreign_key(
        'fk_orders_product_merchant', 'orders', 'products', ['product_id', 'merchant_id'], ['id', 'merchant_id']
    )
    op.create_foreign_key(
        'fk_orders_coupon_merchant', 'orders', 'coupons', ['coupon_id', 'merchant_id'], ['id', 'merchant_id']
    )
    op.create_index('ix_orders_merchant_created', 'orders', ['merchant_id', 'created_at'])

    op.drop_constraint('uq_card_keys_key_hash', 'card_keys', type_='unique')
    op.create_unique_constraint(op.f('uq_card_keys_merchant_id'), 'card_keys', ['merchant_id', 'key_hash'])
    op.create_index(op.f('ix_card_keys_key_hash'), 'card_keys', ['key_hash'])
    op.drop_constraint('fk_card_keys_product_id_products', 'card_keys', type_='foreignkey')
    op.create_foreign_key(
        'fk_card_keys_product_merchant', 'card_keys', 'products', ['product_id', 'merchant_id'], ['id', 'merchant_id']
    )
    op.create_foreign_key(
        'fk_card_keys_order_merchant', 'card_keys', 'orders', ['order_id', 'merchant_id'], ['id', 'merchant_id']
    )

    op.add_column('audit_log', sa.Column('merchant_id', sa.String(length=32), nullable=True))
    op.create_foreign_key(op.f('fk_audit_log_merchant_id_merchants'), 'audit_log', 'merchants', ['merchant_id'], ['id'])
    op.create_index(op.f('ix_audit_log_merchant_id'), 'audit_log', ['merchant_id'])

    op.create_table(
        'key_flags',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('key_hash', sa.LargeBinary(), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('product_id', sa.Integer(), nullable=False),
        sa.Column('held_by', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_key_flags_merchant_id_merchants')),
        sa.ForeignKeyConstraint(['held_by'], ['merchants.id'], name=op.f('fk_key_flags_held_by_merchants')),
        sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_key_flags_product_id_products')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_key_flags')),
        sa.UniqueConstraint('merchant_id', 'key_hash', 'held_by', name=op.f('uq_key_flags_merchant_id')),
    )


def downgrade() -> None:
    op.drop_table('key_flags')
    op.drop_index(op.f('ix_audit_log_merchant_id'), table_name='audit_log')
    op.drop_constraint(op.f('fk_audit_log_merchant_id_merchants'), 'audit_log', type_='foreignkey')
    op.drop_column('audit_log', 'merchant_id')
    op.drop_constraint('fk_card_keys_order_merchant', 'card_keys', type_='foreignkey')
    op.drop_constraint('fk_card_keys_product_merchant', 'card_keys', type_='foreignkey')
    op.create_foreign_key('fk_card_keys_product_id_products', 'card_keys', 'products', ['product_id'], ['id'])
    op.drop_index(op.f('ix_card_keys_key_hash'), table_name='card_keys')
    op.drop_constraint(op.f('uq_card_keys_merchant_id'), 'card_keys', type_='unique')
    op.create_unique_constraint('uq_card_keys_key_hash', 'card_keys', ['key_hash'])
    op.drop_index('ix_orders_merchant_created', table_name='orders')
    op.drop_constraint('fk_orders_coupon_merchant', 'orders', type_='foreignkey')
    op.drop_constraint('fk_orders_product_merchant', 'orders', type_='foreignkey')
    op.create_foreign_key('fk_orders_coupon_id_coupons', 'orders', 'coupons', ['coupon_id'], ['id'])
    op.create_foreign_key('fk_orders_product_id_products', 'orders', 'products', ['product_id'], ['id'])
    op.drop_constraint(op.f('uq_orders_id'), 'orders', type_='unique')
    op.drop_constraint(op.f('uq_coupons_id'), 'coupons', type_='unique')
    op.drop_constraint(op.f('uq_coupons_merchant_id'), 'coupons', type_='unique')
    op.create_unique_constraint('uq_coupons_code', 'coupons', ['code'])
    op.drop_constraint(op.f('uq_products_id'), 'products', type_='unique')
    op.drop_constraint(op.f('uq_products_merchant_id'), 'products', type_='unique')
    op.create_unique_constraint('uq_products_sku', 'products', ['sku'])
    op.drop_column('products', 'active')
    op.drop_column('products', 'description')
    for table in reversed(OWNED):
        op.drop_index(op.f(f'ix_{table}_merchant_id'), table_name=table)
        op.drop_constraint(op.f(f'fk_{table}_merchant_id_merchants'), table, type_='foreignkey')
        op.drop_column(table, 'merchant_id')
    op.drop_index('ix_merchant_tokens_live_name', table_name='merchant_tokens')
    op.drop_table('merchant_tokens')
    op.drop_table('merchants')
