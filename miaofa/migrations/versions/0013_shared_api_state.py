"""state shared by the API processes: order start slots and rate windows (UNLOGGED)

Revision ID: 0013
Revises: 0012

UNLOGGED: short-lived counters, not worth a WAL write per order; a PostgreSQL crash empties them
(a moment of leniency), and the API puts the slots back (miaofa/capacity.py).
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


# One call per order attempt: every rate of the attempt checked, and counted only when all pass.
RATE_HIT = """
CREATE FUNCTION miaofa_rate_hit(p_keys text[], p_limits int[], p_window float8) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    t float8 := extract(epoch FROM clock_timestamp());
    live float8[];
    n int;
    wait float8 := 0;
BEGIN
    INSERT INTO rate_hits (key) SELECT k FROM unnest(p_keys) AS k ORDER BY k ON CONFLICT (key) DO NOTHING;
    PERFORM 1 FROM rate_hits WHERE key = ANY (p_keys) ORDER BY key FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        SELECT ARRAY(SELECT h FROM unnest(r.hits) AS h WHERE h > t - p_window ORDER BY h) INTO live
        FROM rate_hits AS r WHERE r.key = p_keys[i];
        n := coalesce(array_length(live, 1), 0);
        IF p_limits[i] > 0 AND n >= p_limits[i] THEN
            wait := greatest(wait, live[n - p_limits[i] + 1] + p_window - t);
        END IF;
    END LOOP;
    IF wait > 0 THEN
        RETURN wait;
    END IF;
    UPDATE rate_hits AS r SET hits = ARRAY(SELECT h FROM unnest(r.hits) AS h WHERE h > t - p_window ORDER BY h) || t
    WHERE r.key = ANY (p_keys);
    RETURN 0;
END
$$
"""


# Keys imported (by any API process or the CLI): every API process refreshes its stock hint at once, so
# none of them still answers "sold out" for a second. One notification per transaction (PostgreSQL folds
# identical ones), a statement-level trigger: an import of 10,000 keys costs one call.
STOCK_NOTIFY = """
CREATE FUNCTION miaofa_stock_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('miaofa_stock', '');
    RETURN NULL;
END
$$
"""
STOCK_TRIGGER = (
    "CREATE TRIGGER card_keys_imported AFTER INSERT ON card_keys "
    "FOR EACH STATEMENT EXECUTE FUNCTION miaofa_stock_changed()"
)


def upgrade() -> None:
    op.create_table(
        'order_start_slots',
        sa.Column('slot', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('order_id', sa.String(length=40), nullable=True),
        sa.Column('holder', sa.String(length=80), server_default='', nullable=False),
        sa.Column('holders', sa.Integer(), server_default='0', nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), server_default=sa.text("'-infinity'"), nullable=False),
        sa.PrimaryKeyConstraint('slot', name=op.f('pk_order_start_slots')),
        prefixes=['UNLOGGED'],
    )
    op.create_table(
        'rate_hits',
        sa.Column('key', sa.String(length=80), nullable=False),
        sa.Column('hits', sa.ARRAY(sa.Float()), server_default='{}', nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_hits')),
        prefixes=['UNLOGGED'],
    )
    op.execute(RATE_HIT)
    op.execute(STOCK_NOTIFY)
    op.execute(STOCK_TRIGGER)


def downgrade() -> None:
    op.execute('DROP TRIGGER card_keys_imported ON card_keys')
    op.execute('DROP FUNCTION miaofa_stock_changed()')
    op.execute('DROP FUNCTION miaofa_rate_hit(text[], int[], float8)')
    op.drop_table('rate_hits')
    op.drop_table('order_start_slots')

