"""ledger: accounts, transactions and entries (append-only, double-entry), holds; an order's list price

The database itself refuses an UPDATE, DELETE or TRUNCATE of an entry or a transaction, and a
transaction whose entries do not sum to zero per currency (checked at commit).

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

APPEND_ONLY = """
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the ledger is append-only: % on % is refused; post a reversing transaction', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$;
"""
BALANCED = """
CREATE FUNCTION ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM ledger_entries WHERE transaction_id = NEW.transaction_id GROUP BY currency HAVING sum(amount) <> 0
  ) THEN
    RAISE EXCEPTION 'ledger transaction % does not sum to zero', NEW.transaction_id USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.add_column('orders', sa.Column('list_cents', sa.BigInteger(), nullable=True))
    op.create_table(
        'ledger_accounts',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('owner', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=48), nullable=False),
        sa.Column('currency', sa.String(length=8), nullable=False),
        sa.Column('normal', sa.String(length=6), nullable=False),
        sa.Column('balance', sa.BigInteger(), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("normal in ('debit','credit')", name=op.f('ck_ledger_accounts_normal_known')),
        sa.CheckConstraint(
            "kind not in ('pending','available','reserved') or balance >= 0", name=op.f('ck_ledger_accounts_floor')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts')),
        sa.UniqueConstraint('owner', 'kind', 'currency', name=op.f('uq_ledger_accounts_owner')),
    )
    op.create_table(
        'ledger_transactions',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('idem_key', sa.String(length=120), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), nullable=True),
        sa.Column('order_id', sa.String(length=40), nullable=True),
        sa.Column('memo', sa.String(length=200), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_transactions')),
        sa.UniqueConstraint('idem_key', name=op.f('uq_ledger_transactions_idem_key')),
    )
    op.create_index(op.f('ix_ledger_transactions_merchant_id'), 'ledger_transactions', ['merchant_id'])
    op.create_index(op.f('ix_ledger_transactions_order_id'), 'ledger_transactions', ['order_id'])
    op.create_table(
        'ledger_entries',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('transaction_id', sa.BigInteger(), nullable=False),
        sa.Column('account_id', sa.BigInteger(), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=8), nullable=False),
        sa.Column('balance_after', sa.BigInteger(), nullable=False),
        sa.Column('account_version', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('amount <> 0', name=op.f('ck_ledger_entries_not_zero')),
        sa.ForeignKeyConstraint(
            ['account_id'], ['ledger_accounts.id'], name=op.f('fk_ledger_entries_account_id_ledger_accounts')
        ),
        sa.ForeignKeyConstraint(
            ['transaction_id'],
            ['ledger_transactions.id'],
            name=op.f('fk_ledger_entries_transaction_id_ledger_transactions'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries')),
    )
    op.create_index(op.f('ix_ledger_entries_transaction_id'), 'ledger_entries', ['transaction_id'])
    op.create_index('ix_ledger_entries_account', 'ledger_entries', ['account_id', 'id'])
    op.create_table(
        'ledger_holds',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('order_id', sa.String(length=40), nullable=False),
        sa.Column('currency', sa.String(length=8), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('remaining', sa.BigInteger(), nullable=False),
        sa.Column('reason', sa.String(length=120), nullable=False),
        sa.Column('release_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('remaining >= 0 and remaining <= amount', name=op.f('ck_ledger_holds_remaining_range')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_holds')),
        sa.UniqueConstraint('order_id', name=op.f('uq_ledger_holds_order_id')),
    )
    op.create_index(op.f('ix_ledger_holds_merchant_id'), 'ledger_holds', ['merchant_id'])
    op.create_index('ix_ledger_holds_due', 'ledger_holds', ['release_at'], postgresql_where=sa.text('released_at is null'))
    op.create_table(
        'ledger_statements',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('body', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('prev_hash', sa.String(length=64), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_statements')),
        sa.UniqueConstraint('merchant_id', 'day', name=op.f('uq_ledger_statements_merchant_id')),
    )
    op.execute(APPEND_ONLY)
    op.execute(BALANCED)
    for table in ('ledger_entries', 'ledger_transactions', 'ledger_statements'):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    op.execute(
        "CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_balanced()"
    )


def downgrade() -> None:
    op.drop_table('ledger_statements')
    op.drop_table('ledger_holds')
    op.drop_table('ledger_entries')
    op.drop_table('ledger_transactions')
    op.drop_table('ledger_accounts')
    op.execute('DROP FUNCTION ledger_balanced()')
    op.execute('DROP FUNCTION ledger_append_only()')
    op.drop_column('orders', 'list_cents')
