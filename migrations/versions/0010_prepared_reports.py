"""prepared reports

A delay report's aggregates take seconds to make at 100,000 cases: they are
kept in ``prepared_reports`` (protect/reports/models.py) and made again in the
background when the data changes (bench/RESULTS.md, "reports").

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'prepared_reports',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('first', sa.Date(), nullable=False),
        sa.Column('last', sa.Date(), nullable=False),
        sa.Column('filters', sa.JSON(), nullable=False),
        sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
        sa.Column('data_state', sa.JSON(), nullable=False),
        sa.Column('figures', sa.JSON(), nullable=False),
        sa.Column('made_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('asked_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_prepared_reports')))


def downgrade():
    op.drop_table('prepared_reports')
