"""ledger: accounts, transactions and entries (append-only, double-entry), holds; an order's list price

The database itself refuses an UPDATE, DELETE or TRUNCATE of an entry or a transaction, and a
transaction whose entries do not sum to zero per currency (checked at commit).

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

APPEND_ONLY = """
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the ledger is append-only: % on % is refused; post a reversing transaction', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$;
"""
# One round trip for a posting whose lines are known in advance (a sale, a release): the
# transaction row (once per key), the accounts (made if new, locked in id order), the balances and
# the entries. NULL when the key was posted before.
POST = """
CREATE FUNCTION ledger_post(p_key text, p_kind text, p_merchant text, p_order text, p_memo text, p_at timestamptz,
                            p_currency text, p_owners text[], p_kinds text[], p_normals text[], p_amounts bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_txn bigint;
  v_balance bigint;
  v_version bigint;
  r record;
BEGIN
  INSERT INTO ledger_transactions (idem_key, kind, merchant_id, order_id, memo, at)
  VALUES (p_key, p_kind, p_merchant, p_order, p_memo, p_at)
  ON CONFLICT (idem_key) DO NOTHING RETURNING id INTO v_txn;
  IF v_txn IS NULL THEN
    RETURN NULL;
  END IF;
  INSERT INTO ledger_accounts (owner, kind, currency, normal, balance, version)
  SELECT DISTINCT t.o, t.k, p_currency, t.n, 0, 0 FROM unnest(p_owners, p_kinds, p_normals) AS t(o, k, n)
  ON CONFLICT (owner, kind, currency) DO NOTHING;
  PERFORM 1 FROM ledger_accounts a
  WHERE a.currency = p_currency AND (a.owner, a.kind) IN (SELECT t.o, t.k FROM unnest(p_owners, p_kinds) AS t(o, k))
  ORDER BY a.id FOR UPDATE;
  FOR r IN
    SELECT a.id, t.amount FROM unnest(p_owners, p_kinds, p_amounts) WITH ORDINALITY AS t(o, k, amount, ord)
    JOIN ledger_accounts a ON a.owner = t.o AND a.kind = t.k AND a.currency = p_currency ORDER BY t.ord
  LOOP
    UPDATE ledger_accounts
    SET balance = balance + CASE WHEN normal = 'debit' THEN r.amount ELSE -r.amount END, version = version + 1
    WHERE id = r.id RETURNING balance, version INTO v_balance, v_version;
    INSERT INTO ledger_entries (transaction_id, account_id, amount, currency, balance_after, account_version)
    VALUES (v_txn, r.id, r.amount, p_currency, v_balance, v_version);
  END LOOP;
  RETURN v_txn;
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
    op.execute(POST)
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
    op.execute('DROP FUNCTION ledger_post(text, text, text, text, text, timestamptz, text, text[], text[], text[], bigint[])')
    op.execute('DROP FUNCTION ledger_balanced()')
    op.execute('DROP FUNCTION ledger_append_only()')
    op.drop_column('orders', 'list_cents')
