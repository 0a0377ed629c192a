"""payout operations: the staff role `finance`, and a withdrawal's reason for a person's review

Revision ID: 0012
Revises: 0011

A withdrawal made while its shop is suspended keeps why it must be reviewed (`review_reason`), so
the workflow started later (by a GET, a replayed request or reconciliation's sweep) still asks for
a person, whatever the amount.
"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f('ck_staff_tokens_role_known'), 'staff_tokens', type_='check')
    op.create_check_constraint(
        op.f('ck_staff_tokens_role_known'), 'staff_tokens', "role in ('support','admin','finance')"
    )
    op.add_column(
        'withdrawals', sa.Column('review_reason', sa.String(length=300), server_default='', nullable=False)
    )


def downgrade() -> None:
    op.drop_column('withdrawals', 'review_reason')
    # Finance tokens stop working; their rows stay, so the audit log's names keep their meaning.
    op.execute("UPDATE staff_tokens SET revoked_at = now() WHERE role = 'finance' AND revoked_at IS NULL")
    op.drop_constraint(op.f('ck_staff_tokens_role_known'), 'staff_tokens', type_='check')
    op.create_check_constraint(
        op.f('ck_staff_tokens_role_known'),
        'staff_tokens',
        "role in ('support','admin') or (role = 'finance' and revoked_at is not null)",
    )
