"""Clocks follow case events; the sweep notifies once per transition and escalates once."""
import threading
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

import pytest
from flask_babel import force_locale
from sqlalchemy import event, func, select

from protect.accounts.models import User
from protect.cases import editions
from protect.cases import service as cases
from protect.deadlines import service as deadlines
from protect.deadlines.calendar import TZ
from protect.deadlines.models import Clock, DeadlinePolicy, Sweep
from protect.errors import DomainError
from protect.extensions import db, utcnow
from protect.notify.models import Notification


@pytest.fixture
def people(ctx, make_account):
    get = lambda role: db.session.get(User, make_account(role).id)
    return {"journalist": get("journalist"), "caseworker": get("caseworker"),
            "supervisor": get("supervisor"), "supervisor2": get("supervisor"), "admin": get("admin")}


def submitted(people, danger=False):
    j = people["journalist"]
    case = cases.start_request(db.session, j)
    cases.save_who(db.session, j, case, cases.WhoAtRisk("Ana", False, None, "ana@example.org",
                                                         "journalist", None, None))
    cases.save_work(db.session, j, case, outlet=None, journalism_kind=None, state_code="VER", municipality=None)
    cases.add_incident(db.session, j, case, occurred_on=date.today(), kind="threat", aggressor="unknown",
                       channel="phone", place=None, narrative="A call at night")
    cases.submit(db.session, j, case, immediate_danger=danger, consent=True)
    db.session.commit()
    return case


def clocks(case):
    return {c.stage: c for c in deadlines.case_clocks(db.session, case)}


def test_events_start_and_stop_clocks_with_their_policy(people):
    case = submitted(people)
    triage = clocks(case)["triage"]
    assert triage.state == "running" and triage.policy.version == 1
    assert triage.due_at - triage.started_at == timedelta(hours=3)
    cw = people["caseworker"]
    cases.assign(db.session, cw, case, cw)
    cases.triage(db.session, cw, case, decision="extraordinary")
    db.session.commit()
    now = clocks(case)
    assert now["triage"].state == "met"
    assert {"urgent_issued", "urgent_implemented"} <= set(now)
    assert now["urgent_implemented"].due_at - now["urgent_implemented"].started_at == timedelta(hours=9)
    assert "risk_assessment" not in now
    cases.issue_urgent_measures(db.session, cw, case, [("escort", "federal")])
    cases.implement_urgent_measures(db.session, cw, case)
    db.session.commit()
    now = clocks(case)
    assert now["urgent_issued"].state == now["urgent_implemented"].state == "met"
    assert now["risk_assessment"].state == "running"


def test_late_stop_is_met_late_and_closing_cancels(people):
    case = submitted(people)
    triage = clocks(case)["triage"]
    triage.due_at = triage.warn_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    cw = people["caseworker"]
    cases.assign(db.session, cw, case, cw)
    cases.triage(db.session, cw, case, decision="ordinary")
    cases.close(db.session, cw, case, reason="risk_ended")
    db.session.commit()
    now = clocks(case)
    assert now["triage"].state == "met_late"
    assert now["risk_assessment"].state == "cancelled"


def test_pause_does_not_count(people):
    case = submitted(people)
    cw = people["caseworker"]
    cases.assign(db.session, cw, case, cw)
    db.session.commit()
    triage = clocks(case)["triage"]
    due = triage.due_at
    with pytest.raises(DomainError):
        deadlines.pause(db.session, cw, case, triage, "")
    deadlines.pause(db.session, cw, case, triage, "Waiting for the petitioner's documents")
    triage.paused_at -= timedelta(hours=2)  # two hours pass while paused
    db.session.commit()
    deadlines.resume(db.session, cw, case, triage)
    db.session.commit()
    assert triage.state == "running" and triage.due_at - due >= timedelta(hours=2)
    assert triage.paused_seconds >= 7200


def test_new_policy_version_applies_to_new_clocks_only(people):
    old_case = submitted(people)
    deadlines.add_policy_version(
        db.session, people["admin"], stage="triage", effective_from=utcnow().astimezone(TZ).date(),
        start_events="submitted", stop_event="triaged", duration=1, unit="hours", warn_percent=50,
        procedure="any", legal_basis="Internal target tightened")
    db.session.commit()
    new_case = submitted(people)
    assert clocks(old_case)["triage"].policy.version == 1
    fresh = clocks(new_case)["triage"]
    assert fresh.policy.version == 2 and fresh.due_at - fresh.started_at == timedelta(hours=1)
    with pytest.raises(DomainError):
        deadlines.add_policy_version(
            db.session, people["admin"], stage="triage", effective_from=date(2020, 1, 1),
            start_events="submitted", stop_event="triaged", duration=1, unit="hours", warn_percent=50,
            procedure="any", legal_basis="Backdated")


def _notifications():
    return db.session.execute(select(func.count()).select_from(Notification)).scalar_one()


def test_sweep_notifies_once_per_transition_and_escalates_once(app, people):
    unassigned = submitted(people)
    assigned = submitted(people)
    cw = people["caseworker"]
    cases.assign(db.session, cw, assigned, cw)
    db.session.commit()
    start, now = utcnow(), app.extensions["protect.now"]
    # 2 h 30 min in: both triage clocks are due soon (warning at 75 % of 3 h).
    now.advance(hours=2, minutes=30)
    assert {c.status for c in (clocks(unassigned)["triage"], clocks(assigned)["triage"])} == {"due_soon"}
    first = deadlines.sweep(db.session)
    assert first.due_soon == 2 and first.overdue == 0
    # The unassigned one goes to both supervisors, the assigned one to its caseworker.
    assert first.notifications == 3
    now.advance(minutes=1)
    again = deadlines.sweep(db.session)
    assert again.due_soon == 0 and again.notifications == 0
    now.advance(minutes=34)
    late = deadlines.sweep(db.session)
    assert late.overdue == 2 and late.escalated == 0
    assert clocks(assigned)["triage"].status == "overdue"
    now.advance(hours=1, minutes=25)
    escalated = deadlines.sweep(db.session)
    assert escalated.escalated == 2 and escalated.notifications == 4  # 2 clocks x 2 supervisors
    assert deadlines.sweep(db.session, start + timedelta(hours=9)).notifications == 0
    # Swept again from the start (a sweep that failed, or one whose clock was behind): nothing new.
    assert deadlines.sweep(db.session, start).notifications == 0
    assert deadlines.sweep(db.session, start + timedelta(hours=9)).notifications == 0
    assert _notifications() == 3 + 3 + 4

    def overdue(user):
        return deadlines.overdue_count(db.session, user, editions.current(db.session, editions.CASES),
                                       editions.current(db.session, editions.CLOCKS))
    assert overdue(cw) == 1 and overdue(people["supervisor"]) == 2


def test_due_soon_and_overdue_follow_the_time_and_a_sweep_writes_only_notices(app, people, monkeypatch):
    """A running clock is due soon, then overdue, by the time alone: no sweep writes a clock. A
    sweep looks only past the last one's mark; one that fails leaves the mark, so the next one
    notifies what it did not."""
    case = submitted(people)
    now = app.extensions["protect.now"]
    assert clocks(case)["triage"].status == "running"
    now.advance(hours=2, minutes=30)
    assert clocks(case)["triage"].status == "due_soon"
    now.advance(hours=1)
    assert clocks(case)["triage"].status == "overdue"
    mine = deadlines.overview(db.session)
    assert [row[1] for row in mine["by_stage"]] == [1] and mine["oldest"][0][1].id == case.id

    def failing(*args, **kwargs):
        raise RuntimeError("the database went away")
    monkeypatch.setattr(deadlines, "queue_mail", failing)
    with pytest.raises(RuntimeError):
        deadlines.sweep(db.session)
    db.session.rollback()
    assert db.session.get(Sweep, deadlines.DEADLINES).swept_to is None
    monkeypatch.undo()
    statements, before = [], utcnow()
    with _counting(statements):
        result = deadlines.sweep(db.session)
    assert (result.overdue, result.notifications) == (1, 2)  # unassigned: both supervisors
    assert not [s for s in statements if s.startswith("UPDATE clocks")]
    assert before <= db.session.get(Sweep, deadlines.DEADLINES).swept_to <= utcnow()
    # Paused, it stays paused whatever the time; resumed, the paused time is not counted.
    cases_clock = clocks(case)["triage"]
    deadlines.pause(db.session, people["supervisor"], case, cases_clock, "Waiting on the petitioner")
    db.session.commit()
    due = cases_clock.due_at
    now.advance(days=3)
    assert clocks(case)["triage"].status == "paused"
    deadlines.resume(db.session, people["supervisor"], case, clocks(case)["triage"])
    db.session.commit()
    resumed = clocks(case)["triage"]
    assert resumed.due_at - due >= timedelta(days=3) and resumed.status == "overdue"
    assert deadlines.sweep(db.session).notifications == 0  # told once already


def test_an_escalation_delay_shortened_between_sweeps_skips_no_clock(app, people):
    """The escalation window starts where the last sweep's ended, whatever delay it used."""
    case = submitted(people)
    due = clocks(case)["triage"].due_at
    first = deadlines.sweep(db.session, due + timedelta(minutes=30), escalate_after=timedelta(hours=1))
    assert (first.overdue, first.escalated) == (1, 0)
    shortened = deadlines.sweep(db.session, due + timedelta(minutes=31), escalate_after=timedelta(minutes=10))
    assert shortened.escalated == 1
    lengthened = deadlines.sweep(db.session, due + timedelta(hours=3), escalate_after=timedelta(hours=2))
    assert lengthened == deadlines.SweepResult()
    escalations = select(func.count()).select_from(Notification).where(Notification.kind == "deadline_escalated")
    assert db.session.execute(escalations).scalar_one() == 2  # once, to each supervisor


def test_the_overdue_count_is_kept_until_a_case_or_a_clock_changes(app, people, make_account):
    """The navigation bar's count: counted once while nothing changes; a sweep that makes a clock
    overdue, an assignment and a clock stopped each count it again."""
    first, second = submitted(people), submitted(people)
    cw = people["caseworker"]
    cases.assign(db.session, cw, first, cw)
    cases.assign(db.session, cw, second, cw)
    db.session.commit()
    counted = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: counted.append(sql) if sql.startswith("SELECT count(*)")
                 and "FROM clocks JOIN cases" in sql else None)

    def overdue():
        return deadlines.overdue_count(db.session, cw, editions.current(db.session, editions.CASES),
                                       editions.current(db.session, editions.CLOCKS))
    assert (overdue(), overdue(), len(counted)) == (0, 0, 1)
    clocks_before = editions.current(db.session, editions.CLOCKS)
    app.extensions["protect.now"].advance(hours=2, minutes=30)
    deadlines.sweep(db.session)  # due soon only: the count holds
    assert editions.current(db.session, editions.CLOCKS) == clocks_before and overdue() == 0
    app.extensions["protect.now"].advance(hours=1, minutes=30)
    deadlines.sweep(db.session)
    assert overdue() == 2 and len(counted) == 2
    cases.assign(db.session, people["supervisor"], second, db.session.get(User, make_account("caseworker").id))
    db.session.commit()
    assert overdue() == 1
    cases.triage(db.session, cw, first, decision="ordinary")
    db.session.commit()
    assert overdue() == 0


def test_concurrent_sweeps_do_not_double(app, people):
    for _ in range(6):
        submitted(people)
    app.extensions["protect.now"].advance(hours=5)
    results = []

    def run():
        with app.app_context():
            results.append(deadlines.sweep(db.session, escalate_after=timedelta(0)))
            db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r.overdue for r in results) == 6
    # 6 clocks, each: overdue to 2 supervisors + escalated to 2 supervisors.
    assert _notifications() == 6 * 4
    assert db.session.execute(select(func.count()).select_from(Clock).where(deadlines.overdue(utcnow()))).scalar_one() == 6


def test_a_large_sweep_goes_batch_by_batch_on_several_connections(app, people, monkeypatch):
    """PostgreSQL notifies a sweep of more than a batch (here 2 clocks) batch by batch, shared
    among ``workers`` connections; each clock is still notified exactly once."""
    monkeypatch.setattr(deadlines, "SWEEP_BATCH", 2)
    cw = people["caseworker"]
    for i in range(9):
        case = submitted(people)
        if i % 3:
            cases.assign(db.session, cw, case, cw)
    db.session.commit()
    later = utcnow() + timedelta(hours=5)
    statements = []
    with _counting(statements):
        result = deadlines.sweep(db.session, later, escalate_after=timedelta(0), workers=3)
    # 9 clocks overdue (3 unassigned: 2 supervisors each; 6 to the caseworker), then escalated.
    assert (result.overdue, result.due_soon, result.escalated) == (9, 0, 9)
    assert result.notifications == _notifications() == 3 * 2 + 6 + 9 * 2
    escalations = select(func.count()).select_from(Notification).where(Notification.kind == "deadline_escalated")
    assert db.session.execute(escalations).scalar_one() == 9 * 2
    inserts = sum(s.startswith("INSERT INTO notifications") for s in statements)
    # PostgreSQL: 5 batches for each kind of 9 clocks, 1 for none due soon; SQLite: one each.
    assert inserts == (5 + 1 + 5 if db.engine.dialect.name == "postgresql" else 3)
    assert deadlines.sweep(db.session, later, escalate_after=timedelta(0), workers=3) == deadlines.SweepResult()


@contextmanager
def _counting(statements: list[str]):
    def count(conn, cursor, statement, *args):
        statements.append(statement)
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def test_time_left_in_both_languages(app, people):
    case = submitted(people)
    clock = clocks(case)["triage"]
    now = clock.due_at - timedelta(hours=2, minutes=15)
    with app.test_request_context(), force_locale("es"):
        assert deadlines.time_left(clock, now) == "vence en 2 h 15 min"
        assert deadlines.time_left(clock, clock.due_at + timedelta(days=3, hours=1)) == "vencido hace 3 días"
    with app.test_request_context(), force_locale("en"):
        assert deadlines.time_left(clock, now) == "due in 2 h 15 min"
        assert deadlines.time_left(clock, clock.due_at + timedelta(days=3, hours=1)) == "overdue by 3 days"


def test_cli_sweep(app, people):
    submitted(people)
    result = app.test_cli_runner().invoke(args=["protect", "sweep"])
    assert result.exit_code == 0 and "overdue: 0" in result.output


def test_embedded_sweeper_runs_every_job(app, people):
    """One pass of the web process's thread: deadlines, vaults, garbage; each alone."""
    from protect.deadlines import sweeper
    submitted(people)
    app.extensions["protect.now"].advance(hours=4)
    sweeper.run_once(app.extensions["protect.settings"], collect_garbage=True)
    assert db.session.execute(select(func.count()).select_from(Notification)
                              .where(Notification.kind == "deadline_overdue")).scalar_one() >= 1


def test_cli_sweep_and_garbage(app, people):
    runner = app.test_cli_runner()
    assert "vaults:" in runner.invoke(args=["protect", "sweep"]).output
    assert runner.invoke(args=["protect", "collect-garbage"]).exit_code == 0


def test_cli_sweep_every_keeps_sweeping_until_stopped(app, people):
    """`flask protect sweep --every N`: one process sweeping on a period (a service
    rather than a timer), stopped cleanly by SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    submitted(people)
    settings = app.extensions["protect.settings"]
    env = {**os.environ, "FLASK_APP": "app", "PROTECT_ENV": "test", "PROTECT_DATABASE_URL": settings.database_url,
           "PROTECT_INSTANCE_PATH": app.instance_path, "PROTECT_SECRET_KEY": settings.secret_key}
    process = subprocess.Popen([sys.executable, "-m", "flask", "protect", "sweep", "--every", "1"],
                               cwd=Path(__file__).parents[2], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 60
    try:
        while sum(line.startswith("vaults:") for line in lines) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        process.send_signal(signal.SIGTERM)
        lines += process.communicate(timeout=30)[0].splitlines()
    assert sum(line.startswith("vaults:") for line in lines) >= 2, lines
    assert process.returncode == 0, lines
