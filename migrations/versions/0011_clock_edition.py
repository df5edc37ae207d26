"""clock edition

The navigation bar's count of overdue deadlines is kept while neither the
cases nor the clocks changed (protect/cases/editions.py): ``list_editions``
gains the "clocks" edition, raised by every change to a clock.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("INSERT INTO list_editions (name, number) VALUES ('clocks', 0)")


def downgrade():
    op.execute("DELETE FROM list_editions WHERE name = 'clocks'")
