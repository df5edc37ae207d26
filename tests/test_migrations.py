"""The schema is made only by migrations: each one goes up and down, and at
head the database equals the models."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from protect.extensions import db
from protect.settings import ROOT
from tests.conftest import BACKENDS, fresh_database, make_app


@pytest.fixture(params=BACKENDS)
def empty_app(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        app = make_app(tmp_path, url)
        with app.app_context():
            yield app
            db.session.remove()
            db.engine.dispose()


def _revisions():
    script = ScriptDirectory(str(ROOT / "migrations"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_head_matches_models(empty_app):
    upgrade()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


def test_every_migration_upgrades_and_downgrades(empty_app):
    previous = "base"
    for revision in _revisions():
        upgrade(revision=revision)
        downgrade(revision=previous)
        upgrade(revision=revision)
        previous = revision
    downgrade(revision="base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}


def test_data_survives_every_later_migration(empty_app):
    """Rows written at the first revision are still there, readable, at head."""
    from protect.accounts import service
    from protect.accounts.models import User
    from sqlalchemy import text
    revisions = _revisions()
    upgrade(revision=revisions[0])
    # At revision 1 only the accounts tables exist: write through raw SQL shaped like the ORM.
    user = User(role="journalist", password_hash="x")
    user.email = "seeded@example.org"
    db.session.execute(text(
        "INSERT INTO users (id, email, email_index, role, password_hash, active, totp_enabled, "
        "created_at, password_changed_at) VALUES (:id, :email, :idx, 'journalist', 'x', :t, :f, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
        {"id": user.id, "email": user.email_ct, "idx": user.email_index, "t": True, "f": False})
    db.session.commit()
    upgrade()
    db.session.expunge_all()
    found = service.find_by_email(db.session, "SEEDED@example.org")
    assert found is not None and found.email == "seeded@example.org"
    count = db.session.execute(text("SELECT COUNT(*) FROM measure_types")).scalar_one()
    assert count == 15
    assert db.session.execute(text("SELECT name, number FROM list_editions ORDER BY name")).all() == [
        ("cases", 0), ("clocks", 0)]
