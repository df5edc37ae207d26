"""report clocks open

The clocks still open at a period's end, counted without grouping them by case:
``prev_open`` (the latest open_until of the case's clocks started before) marks the
few clocks whose case has an earlier one open too, and ``ix_report_clocks_started``
ranks the open clocks' ages month by month. The facts' format changes with it: the
next refresh makes every row again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

WHO = ['state', 'beneficiary', 'gender']


def upgrade():
    op.drop_index('ix_report_clocks_open', table_name='report_clocks')
    with op.batch_alter_table('report_clocks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_open', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_report_clocks_open', 'report_clocks',
                    ['open_until', 'started_at', 'stage', 'start_month', 'assignee', 'prev_open', 'case_id', *WHO])
    op.create_index('ix_report_clocks_started', 'report_clocks', ['stage', 'start_month', 'started_at', 'open_until', *WHO])


def downgrade():
    op.drop_index('ix_report_clocks_started', table_name='report_clocks')
    op.drop_index('ix_report_clocks_open', table_name='report_clocks')
    with op.batch_alter_table('report_clocks', schema=None) as batch_op:
        batch_op.drop_column('prev_open')
    op.create_index('ix_report_clocks_open', 'report_clocks',
                    ['open_until', 'started_at', 'stage', 'case_id', 'assignee', *WHO])
