"""notifications without foreign keys

The deadline sweep writes one notification per clock transition; at 100,000
transitions PostgreSQL spent more time checking the two foreign keys (a
locking look-up in cases and in users per row) than writing the rows
(bench/RESULTS.md, "sweep (issue 5)"). Notifications are written only by the
service for rows that exist, and cases and users are never deleted (closed,
deactivated), so the keys only ever checked: notifications now name their
case and person by id, as the audit trail does. The index on case_id served
only the cascade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_case_id'))
        batch_op.drop_constraint(batch_op.f('fk_notifications_case_id_cases'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_notifications_user_id_users'), type_='foreignkey')


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_notifications_user_id_users'), 'users', ['user_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_notifications_case_id_cases'), 'cases', ['case_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_index(batch_op.f('ix_notifications_case_id'), ['case_id'], unique=False)
