from click.testing import CliRunner
from sqlalchemy import text

from protect.audit import service as audit
from protect.extensions import db


def _cli(app, *args, input=None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def test_every_entry_chains_to_the_previous(app, ctx):
    for n in range(5):
        audit.record(db.session, "test.event", target=str(n), n=n)
    db.session.commit()
    assert audit.verify(db.session).ok
    assert audit.verify(db.session).count == 5


def test_verify_names_an_altered_row(app, ctx):
    for n in range(6):
        audit.record(db.session, "test.event", target=str(n))
    db.session.commit()
    ids = [row[0] for row in db.session.execute(text("SELECT id FROM audit_log ORDER BY id"))]
    db.session.execute(text("UPDATE audit_log SET target = 'forged' WHERE id = :id"), {"id": ids[3]})
    db.session.commit()
    result = _cli(app, "protect", "audit-verify")
    assert result.exit_code == 1
    assert f"BROKEN at entry {ids[3]}" in result.output


def test_verify_notices_a_deleted_row(app, ctx):
    for n in range(4):
        audit.record(db.session, "test.event", target=str(n))
    db.session.commit()
    ids = [row[0] for row in db.session.execute(text("SELECT id FROM audit_log ORDER BY id"))]
    db.session.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[1]})
    db.session.commit()
    assert audit.verify(db.session).broken_id == ids[2]


def test_cli_verify_ok(app, ctx):
    audit.record(db.session, "test.event")
    db.session.commit()
    result = _cli(app, "protect", "audit-verify")
    assert result.exit_code == 0 and result.output.strip() == "OK 1 entries"


def test_audit_row_rolls_back_with_its_action(app, ctx):
    audit.record(db.session, "test.event")
    db.session.rollback()
    assert audit.verify(db.session).count == 0
