"""clock states from time

"Due soon" and "overdue" are no longer written on the clocks: they follow from
the time (``Clock.status_at``), and the sweep writes only its notifications,
looking at the moments since the last sweep (``sweeps``). Clocks stored as due
soon or overdue go back to running; ``escalated_at`` goes, as escalations are
known by their notifications. ``swept_to`` starts empty, so the first sweep
looks at every running clock once (the notifications' unique keys skip those
already sent). The partial index of running clocks by warning time gains
``due_at``, so that the due-soon query tells the clocks already overdue from
the index alone (a mass change read every such row).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

RUNNING = {'postgresql_where': sa.text("state = 'running'"), 'sqlite_where': sa.text("state = 'running'")}


def upgrade():
    sweeps = op.create_table(
        'sweeps',
        sa.Column('name', sa.String(length=20), nullable=False),
        sa.Column('swept_from', sa.DateTime(timezone=True), nullable=True),
        sa.Column('swept_to', sa.DateTime(timezone=True), nullable=True),
        sa.Column('escalated_from', sa.DateTime(timezone=True), nullable=True),
        sa.Column('escalated_to', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_sweeps')))
    op.bulk_insert(sweeps, [{'name': 'deadlines'}])
    op.execute("UPDATE clocks SET state = 'running' WHERE state IN ('due_soon', 'overdue')")
    with op.batch_alter_table('clocks', schema=None) as batch_op:
        batch_op.drop_column('escalated_at')
        batch_op.drop_index('ix_clocks_running_warn')
        batch_op.create_index('ix_clocks_running_warn', ['warn_at', 'due_at'], unique=False, **RUNNING)


def downgrade():
    with op.batch_alter_table('clocks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index('ix_clocks_running_warn')
        batch_op.create_index('ix_clocks_running_warn', ['warn_at'], unique=False, **RUNNING)
    # Back to written states, as the sweep of that revision would have left them.
    op.execute("UPDATE clocks SET state = CASE WHEN due_at <= CURRENT_TIMESTAMP THEN 'overdue' "
               "ELSE 'due_soon' END WHERE state = 'running' AND warn_at <= CURRENT_TIMESTAMP")
    op.execute("UPDATE clocks SET escalated_at = due_at WHERE state = 'overdue' AND EXISTS "
               "(SELECT 1 FROM notifications n WHERE n.key LIKE 'escalate:' || clocks.id || ':%')")
    op.drop_table('sweeps')
