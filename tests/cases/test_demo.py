"""Synthetic cases (`flask protect demo --cases N`): a timeline the state machine
accepts, sealed values that open, every main stage present."""
import re
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from protect.accounts.models import User
from protect.audit import service as audit
from protect.cases import codes, demo, service
from protect.cases.models import (Appeal, BoardDecision, Case, CaseEvent, Incident, Measure, Message, Note,
                                  OnlineThreat, Review, RiskAssessment)
from protect.deadlines.models import Clock
from protect.extensions import db, utcnow

N = 300
REFERENCE = re.compile(rf"^PRT-[{service.REF_ALPHABET}]{{4}}-[{service.REF_ALPHABET}]{{4}}$")

# The data keys service.py writes for each event kind.
MEASURE_KEYS = {"measure", "measure_type", "authority", "urgent"}
KEYS = {
    "submitted": [{"immediate_danger"}],
    "assigned": [{"assignee", "previous"}],
    "triaged": [{"procedure"}, {"procedure", "reason"}],
    "urgent_measures_issued": [{"measures"}],
    "urgent_measures_implemented": [set()],
    "assessment_done": [{"level"}],
    "decision_made": [{"outcome", "reason"}, {"outcome", "reason", "measures"}],
    "decision_communicated": [{"decision"}],
    "measure_requested": [MEASURE_KEYS], "measure_implemented": [MEASURE_KEYS],
    "measure_active": [MEASURE_KEYS], "measure_withdrawn": [MEASURE_KEYS],
    "measures_implemented": [set()],
    "review_started": [set()],
    "review_done": [{"outcome"}],
    "appeal_filed": [set()],
    "study_received": [set()],
    "appeal_resolved": [{"outcome"}],
    "closed": [{"reason"}],
    "withdrawn": [set()],
    "message_sent": [{"message", "to_petitioner"}],
    "note_added": [{"note"}],
    "platform_report": [{"threat", "platform", "outcome"}],
    "incident_added": [{"incident", "type"}],
}
NO_STATE_CHANGE = {"measure_requested", "measure_implemented", "measure_active", "measure_withdrawn",
                   "message_sent", "note_added", "platform_report", "incident_added"}
SIMPLE = {"submitted": "submit", "urgent_measures_issued": "issue_urgent_measures",
          "urgent_measures_implemented": "implement_urgent_measures", "assessment_done": "assess",
          "decision_communicated": "communicate_decision", "measures_implemented": "measures_implemented",
          "review_started": "start_review", "appeal_filed": "appeal", "study_received": "receive_study",
          "closed": "close", "withdrawn": "withdraw"}


def action_for(kind: str, data: dict, status: str) -> str | None:
    """The service action an event stands for (None: the event moves no state)."""
    if kind in SIMPLE:
        return SIMPLE[kind]
    if kind == "assigned":
        return "take" if status == "received" else None
    if kind == "triaged":
        return {"extraordinary": "admit_extraordinary", "ordinary": "admit_ordinary",
                "not_admitted": "not_admit"}[data["procedure"]]
    if kind == "decision_made":
        return "decide_deny" if data["outcome"] == "denied" else "decide_grant"
    if kind == "review_done":
        return "review_withdraw" if data["outcome"] == "withdraw" else "review_keep"
    if kind == "appeal_resolved":
        return "appeal_upheld" if data["outcome"] == "upheld" else "appeal_rejected"
    assert kind in NO_STATE_CHANGE, f"unknown event kind {kind}"
    return None


def replay(events) -> str:
    """Walk the events through service.TRANSITIONS from a draft; the state reached."""
    status = "draft"
    measures = {}
    for event in events:
        assert event.data.keys() in [k for k in KEYS[event.kind]], (event.kind, event.data)
        action = action_for(event.kind, event.data, status)
        if action is None:
            assert status != "draft", f"{event.kind} before the request was sent"
            if event.kind.startswith("measure_"):
                step = event.kind.removeprefix("measure_")
                before = measures.get(event.data["measure"], "decided")
                assert codes.MEASURE_FLOW.index(step) > codes.MEASURE_FLOW.index(before), (before, step)
                measures[event.data["measure"]] = step
            continue
        sources, target = service.TRANSITIONS[action]
        assert status in sources, f"{event.kind} ({action}) from {status}"
        status = target or status
    return status


@pytest.fixture
def generated(ctx):
    made = demo.generate_cases(db.session, N, seed=20261129)
    assert made == N
    db.session.expire_all()
    return db.session.execute(select(Case)).scalars().all()


def events_by_case():
    grouped = defaultdict(list)
    for event in db.session.execute(select(CaseEvent).order_by(CaseEvent.case_id, CaseEvent.id)).scalars():
        grouped[event.case_id].append(event)
    return grouped


def test_every_case_is_reachable_through_the_state_machine(generated):
    timelines = events_by_case()
    now = utcnow()
    for case in generated:
        events = timelines.get(case.id, [])
        if case.status == "draft":
            assert not events and case.submitted_at is None
            continue
        assert events[0].kind == "submitted" and events[0].at == case.submitted_at
        # Written in time order (ids follow time, as when the service writes them), never in the future.
        times = [e.at for e in events]
        assert times == sorted(times), case.reference
        assert times[-1] <= now and case.created_at <= times[0]
        assert replay(events) == case.status, case.reference
        # The case row agrees with its timeline.
        assert (case.closed_at is not None) == (case.status in ("closed", "withdrawn", "not_admitted"))
        assigned = [e.data["assignee"] for e in events if e.kind == "assigned"]
        assert case.assignee_id == (assigned[-1] if assigned else None)
        levels = [e.data["level"] for e in events if e.kind == "assessment_done"]
        assert case.risk_level == (levels[-1] if levels else None)
        assert case.updated_at == times[-1]


def test_rows_agree_with_events(generated):
    timelines = events_by_case()
    measures = {m.id: m for m in db.session.execute(select(Measure)).scalars()}
    decisions = {d.id: d for d in db.session.execute(select(BoardDecision)).scalars()}
    notes = set(db.session.execute(select(Note.id)).scalars())
    messages = set(db.session.execute(select(Message.id)).scalars())
    threats = {t.id: t for t in db.session.execute(select(OnlineThreat)).scalars()}
    for case in generated:
        for event in timelines.get(case.id, []):
            data = event.data
            if event.kind.startswith("measure_"):
                m = measures[data["measure"]]
                assert m.case_id == case.id and m.kind == data["measure_type"]
                assert getattr(m, f"{event.kind.removeprefix('measure_')}_at") <= event.at
            elif event.kind == "decision_communicated":
                assert decisions[data["decision"]].communicated_at == event.at
            elif event.kind == "note_added":
                assert data["note"] in notes
            elif event.kind == "message_sent":
                assert data["message"] in messages
            elif event.kind == "platform_report":
                threat = threats[data["threat"]]
                assert threat.case_id == case.id and threat.reported_at <= event.at
                assert threat.outcome == data["outcome"]
    for m in measures.values():
        steps = [m.decided_at, m.requested_at, m.implemented_at, m.active_at, m.withdrawn_at]
        assert m.status in codes.MEASURE_STATUSES and m.authority in codes.AUTHORITIES
        reached = [s for s in steps[:codes.MEASURE_FLOW.index(m.status) + 1] if s is not None]
        assert reached == sorted(reached)
    for threat in threats.values():
        if threat.responded_at:
            assert threat.reported_at <= threat.responded_at
            assert threat.removed_at is None or threat.responded_at <= threat.removed_at


def test_every_main_stage_is_present_and_delays_vary(generated):
    counts = Counter(case.status for case in generated)
    for status in ("closed", "active", "not_admitted", "implementation", "risk_assessment",
                   "board_decision", "withdrawn"):
        assert counts[status] > 0, counts
    assert counts["closed"] + counts["active"] > N / 2
    assert 0.04 < sum(c.immediate_danger for c in generated) / N < 0.2
    assert len({c.state_code for c in generated}) > 15
    assert {c.gender for c in generated} >= {"woman", "man"}
    assert {c.beneficiary_type for c in generated} == set(codes.BENEFICIARY_TYPES)
    assert {i.aggressor for i in db.session.execute(select(Incident)).scalars()} == set(codes.AGGRESSOR_TYPES)
    # Triage: some within the 3 hours, many not.
    timelines = events_by_case()
    triage = []
    for events in timelines.values():
        kinds = {e.kind: e.at for e in reversed(events)}
        if "triaged" in kinds:
            triage.append(kinds["triaged"] - kinds["submitted"])
    assert min(triage) < timedelta(hours=3) < max(triage)
    late = sum(t > timedelta(hours=3) for t in triage) / len(triage)
    assert 0.2 < late < 0.95
    assert max(c.submitted_at for c in generated if c.submitted_at) - \
        min(c.submitted_at for c in generated if c.submitted_at) > timedelta(days=700)


def test_every_code_is_a_known_code(generated):
    def values(column):
        return set(db.session.execute(select(column).distinct()).scalars()) - {None}

    assert values(Case.state_code) <= set(codes.STATES)
    assert values(Case.gender) <= set(codes.GENDERS)
    assert values(Case.beneficiary_type) <= set(codes.BENEFICIARY_TYPES)
    assert values(Case.journalism_kind) <= set(codes.JOURNALISM_KINDS)
    assert values(Case.risk_level) <= set(codes.RISK_LEVELS)
    assert values(Case.status) <= set(codes.STATUSES)
    assert values(Case.outcome_reason) <= set(codes.NOT_ADMITTED_REASONS) | set(codes.CLOSURE_REASONS)
    assert values(Incident.kind) <= set(codes.INCIDENT_TYPES)
    assert values(Incident.aggressor) <= set(codes.AGGRESSOR_TYPES)
    assert values(Incident.channel) <= set(codes.CHANNELS)
    assert values(OnlineThreat.platform) <= set(codes.PLATFORMS)
    assert values(OnlineThreat.outcome) <= set(codes.PLATFORM_OUTCOMES)
    assert values(RiskAssessment.level) <= set(codes.RISK_LEVELS)
    assert values(BoardDecision.outcome) <= set(codes.DECISION_OUTCOMES)
    assert values(BoardDecision.reason) <= set(codes.DECISION_REASONS)
    assert values(Review.outcome) <= set(codes.REVIEW_OUTCOMES)
    assert values(Appeal.outcome) <= set(codes.APPEAL_OUTCOMES)
    assert values(Measure.authority) <= set(codes.AUTHORITIES)


def test_sealed_values_open(generated):
    for case in generated:
        assert case.name and case.contact and case.outlet and case.municipality
        assert case.pseudonymous == (case.real_identity is not None)
    for model, attrs in ((Incident, ("narrative",)), (OnlineThreat, ("locator",)),
                         (RiskAssessment, ("factors", "recommendation")), (Note, ("body",)),
                         (Message, ("body",)), (Appeal, ("grounds",)), (Review, ())):
        rows = db.session.execute(select(model)).scalars().all()
        assert rows or model in (Appeal, Message), model
        for row in rows:
            for attr in attrs:
                assert getattr(row, attr)
    pool = db.session.execute(select(User).where(User.email.lookup(User, demo.JOURNALISTS[0]))).scalar_one()
    assert pool.email == demo.JOURNALISTS[0] and pool.role == "journalist"


def test_foreign_keys_hold(generated):
    """On PostgreSQL the generator may skip the per-row foreign-key triggers: every key must hold anyway."""
    for model in demo.TABLES:
        table = model.__table__
        for fk in table.foreign_keys:
            dangling = select(func.count()).select_from(table.outerjoin(fk.column.table, fk.parent == fk.column)) \
                .where(fk.parent.is_not(None), fk.column.is_(None))
            assert db.session.execute(dangling).scalar_one() == 0, (table.name, fk.parent.name)


def test_references_are_unique_and_well_formed(generated):
    references = [c.reference for c in generated]
    assert len(set(references)) == N
    assert all(REFERENCE.match(r) for r in references)


def test_big_runs_are_written_by_a_writer_process(ctx):
    """More than one batch: a separate process writes them, with the same result."""
    assert demo.generate_cases(db.session, 450, seed=7, batch=200) == 450
    db.session.expire_all()
    cases = db.session.execute(select(Case)).scalars().all()
    assert len(cases) == 450 and len({c.reference for c in cases}) == 450
    timelines = events_by_case()
    assert all(replay(timelines[c.id]) == c.status for c in cases if c.status != "draft")
    assert all(c.name for c in cases)


def test_generating_again_adds_cases_and_reuses_the_pools(generated):
    users = db.session.execute(select(func.count()).select_from(User)).scalar_one()
    demo.generate_cases(db.session, 20)
    assert demo.count_cases(db.session) == N + 20
    assert db.session.execute(select(func.count()).select_from(User)).scalar_one() == users
    caseworkers = set(db.session.execute(select(Case.assignee_id).distinct()).scalars()) - {None}
    assert len(caseworkers) <= len(demo.CASEWORKERS)
    assert audit.verify(db.session).ok


def test_cli_demo_cases_tops_up_and_prints_the_logins(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["protect", "demo", "--cases", "50"])
    assert first.exit_code == 0, first.output
    assert "caseworker@demo.protect.local" in first.output  # the per-role demo logins
    assert "caseworker01@demo.protect.local" in first.output and "totp_secret: " in first.output
    assert demo.POOL_PASSWORD in first.output and "50 cases in the database" in first.output
    again = runner.invoke(args=["protect", "demo", "--cases", "50"])
    assert again.exit_code == 0 and "Generating" not in again.output
    with app.app_context():
        assert demo.count_cases(db.session) == 50
    plain = runner.invoke(args=["protect", "demo"])
    assert "Case pool" not in plain.output


def test_demo_clocks_replay_the_timelines(app):
    result = app.test_cli_runner().invoke(args=["protect", "demo", "--cases", "40", "--seed", "3", "--clocks"])
    assert result.exit_code == 0, result.output
    assert "deadline clocks for" in result.output
    with app.app_context():
        states = dict(db.session.execute(select(Clock.state, func.count()).group_by(Clock.state)).all())
    assert states.get("met", 0) + states.get("met_late", 0) > 0
    # Running it again adds nothing: every case already has its clocks.
    again = app.test_cli_runner().invoke(args=["protect", "demo", "--clocks"])
    assert "deadline clocks for 0 cases" in again.output
