"""list edition, and the caseworker's queue in index order

The queue keeps rendered case lists while ``list_editions`` says nothing they
show has changed (protect/cases/views.py). ``ix_cases_assignee_status`` gains
``id``, the queue's last sort key, so SQLite reads a caseworker's page of 50 in
order from the index instead of sorting all their open cases
(bench/RESULTS.md, "pages").

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    editions = op.create_table(
        'list_editions',
        sa.Column('name', sa.String(length=20), nullable=False),
        sa.Column('number', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_list_editions')))
    op.bulk_insert(editions, [{'name': 'cases', 'number': 0}])
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_assignee_status')
        batch_op.create_index('ix_cases_assignee_status',
                              ['assignee_id', 'status', 'immediate_danger', 'submitted_at', 'id'], unique=False)
    op.execute("ANALYZE cases")


def downgrade():
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_assignee_status')
        batch_op.create_index('ix_cases_assignee_status',
                              ['assignee_id', 'status', 'immediate_danger', 'submitted_at'], unique=False)
    op.drop_table('list_editions')
