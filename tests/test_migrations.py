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
