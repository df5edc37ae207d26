"""report facts

The delay report's own copy of the data (protect/reports/facts.py): one narrow row
per deadline clock, request, measure and platform report, indexed in the orders the
report ranks by, so that a report made afresh for any period and selection reads
ranges and walks indexes instead of sorting every deadline once per grouping. The
tables start empty: the first refresh (the sweeper's, or the first report's) fills
them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

WHO = ('state', 'beneficiary', 'gender')


def _who():
    return [sa.Column('state', sa.String(length=8), nullable=True),
            sa.Column('beneficiary', sa.String(length=16), nullable=True),
            sa.Column('gender', sa.String(length=16), nullable=False)]


def _case(table):
    return [sa.Column('case_id', sa.String(length=32), nullable=False),
            sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f(f'fk_{table}_case_id_cases'),
                                    ondelete='CASCADE')]


def upgrade():
    op.create_table(
        'report_facts_mark',
        sa.Column('name', sa.String(length=16), nullable=False),
        sa.Column('format', sa.Integer(), nullable=False),
        sa.Column('edition', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=True),
        sa.Column('clocks', sa.Integer(), nullable=False),
        sa.Column('made_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_report_facts_mark')))
    op.create_table(
        'report_clocks',
        sa.Column('clock_id', sa.String(length=32), nullable=False),
        *_case('report_clocks'),
        sa.Column('stage', sa.String(length=32), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('open_until', sa.DateTime(timezone=True), nullable=False),
        sa.Column('start_month', sa.Integer(), nullable=False),
        sa.Column('stop_month', sa.Integer(), nullable=True),
        sa.Column('spent', sa.Integer(), nullable=True),
        sa.Column('bin', sa.String(length=8), nullable=True),
        sa.Column('journey', sa.Integer(), nullable=True),
        sa.Column('prev_month', sa.Integer(), nullable=True),
        *_who(),
        sa.Column('assignee', sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint('clock_id', name=op.f('pk_report_clocks')))
    op.create_index('ix_report_clocks_case', 'report_clocks', ['case_id'])
    op.create_index('ix_report_clocks_done', 'report_clocks', ['stage', 'stop_month', 'bin', 'prev_month', *WHO])
    op.create_index('ix_report_clocks_who', 'report_clocks', ['stage', 'stop_month', *WHO, 'bin'])
    op.create_index('ix_report_clocks_spent', 'report_clocks', ['stage', 'spent', 'stop_month', *WHO])
    op.create_index('ix_report_clocks_month_spent', 'report_clocks', ['stage', 'stop_month', 'spent', *WHO])
    op.create_index('ix_report_clocks_journey', 'report_clocks', ['stage', 'journey', 'stop_month', *WHO])
    for dim in WHO:
        op.create_index(f'ix_report_clocks_{dim}_spent', 'report_clocks', ['stage', dim, 'spent', 'stop_month', *[d for d in WHO if d != dim]])
    op.create_index('ix_report_clocks_open', 'report_clocks',
                    ['open_until', 'started_at', 'stage', 'case_id', 'assignee', *WHO])
    op.create_index('ix_report_clocks_months', 'report_clocks', ['stage', 'start_month', 'stop_month', *WHO])
    op.create_table(
        'report_requests',
        sa.Column('case_id', sa.String(length=32), nullable=False),
        sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('month', sa.Integer(), nullable=False),
        sa.Column('triaged_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=True),
        sa.Column('reason', sa.String(length=32), nullable=True),
        sa.Column('assignee', sa.String(length=32), nullable=False),
        *_who(),
        sa.Column('aggressor', sa.String(length=24), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_report_requests_case_id_cases'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('case_id', name=op.f('pk_report_requests')))
    op.create_index('ix_report_requests_month', 'report_requests', ['month', 'outcome', 'reason', 'triaged_at', *WHO])
    op.create_index('ix_report_requests_assignee', 'report_requests', ['month', 'assignee', *WHO])
    for dim in (*WHO, 'aggressor'):
        op.create_index(f'ix_report_requests_{dim}', 'report_requests', ['month', *dict.fromkeys([dim, *WHO])])
    op.create_table(
        'report_measures',
        sa.Column('measure_id', sa.String(length=32), nullable=False),
        *_case('report_measures'),
        sa.Column('authority', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('month', sa.Integer(), nullable=False),
        sa.Column('implemented_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('spent', sa.Integer(), nullable=True),
        *_who(),
        sa.Column('prev_month', sa.Integer(), nullable=True),
        sa.Column('prev_authority_month', sa.Integer(), nullable=True),
        sa.Column('prev_kind_month', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('measure_id', name=op.f('pk_report_measures')))
    op.create_index('ix_report_measures_case', 'report_measures',
                    ['case_id', 'month', 'implemented_at', 'withdrawn_at', *WHO])
    op.create_index('ix_report_measures_month', 'report_measures',
                    ['month', 'authority', 'kind', 'implemented_at', 'withdrawn_at', 'prev_month', 'prev_authority_month',
                     'prev_kind_month', *WHO])
    for by in ('authority', 'kind', 'month', None):
        op.create_index(f'ix_report_measures_{by}_spent' if by else 'ix_report_measures_spent', 'report_measures',
                        list(dict.fromkeys([*([by] if by else []), 'spent', 'month', 'decided_at', 'implemented_at', *WHO])))
    op.create_table(
        'report_threats',
        sa.Column('threat_id', sa.String(length=32), nullable=False),
        *_case('report_threats'),
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('month', sa.Integer(), nullable=False),
        sa.Column('responded_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('answer_time', sa.Integer(), nullable=True),
        sa.Column('removal_time', sa.Integer(), nullable=True),
        *_who(),
        sa.Column('prev_month', sa.Integer(), nullable=True),
        sa.Column('prev_platform_month', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('threat_id', name=op.f('pk_report_threats')))
    op.create_index('ix_report_threats_case', 'report_threats',
                    ['case_id', 'month', 'platform', 'responded_at', *WHO])
    op.create_index('ix_report_threats_month', 'report_threats',
                    ['month', 'platform', 'responded_at', 'prev_month', 'prev_platform_month', *WHO])
    for time, at in (('answer_time', 'responded_at'), ('removal_time', 'removed_at')):
        for by in ('platform', 'month', None):
            op.create_index(f'ix_report_threats_{by}_{time}' if by else f'ix_report_threats_{time}', 'report_threats',
                            list(dict.fromkeys([*([by] if by else []), time, 'month', at, *WHO])))


def downgrade():
    for table in ('report_threats', 'report_measures', 'report_requests', 'report_clocks', 'report_facts_mark'):
        op.drop_table(table)
