"""The case state machine through its service functions."""
from datetime import date, timedelta

import pytest

from protect.accounts.models import User
from protect.audit import service as audit
from protect.cases import service
from protect.cases.models import Case, CaseEvent
from protect.errors import DomainError, NotFound, PermissionDenied
from protect.extensions import db


@pytest.fixture
def people(ctx, make_account):
    get = lambda role: db.session.get(User, make_account(role).id)
    return {"journalist": get("journalist"), "other_journalist": get("journalist"),
            "caseworker": get("caseworker"), "other_caseworker": get("caseworker"),
            "supervisor": get("supervisor"), "donor": get("donor"), "admin": get("admin")}


def submitted_case(people, *, danger=False) -> Case:
    j = people["journalist"]
    case = service.start_request(db.session, j)
    service.save_who(db.session, j, case, service.WhoAtRisk(
        name="Lucía", pseudonymous=True, real_identity="Lucía Hernández Ruiz", contact="+52 55 0000 0000",
        beneficiary_type="journalist", gender="woman", others_at_risk="Her brother"))
    service.save_work(db.session, j, case, outlet="Diario del Sur", journalism_kind="print",
                      state_code="GRO", municipality="Chilpancingo")
    service.add_incident(db.session, j, case, occurred_on=date.today() - timedelta(days=3), kind="threat",
                         aggressor="criminal_group", channel="messaging", place="Home",
                         narrative="They sent a photo of my house.")
    service.submit(db.session, j, case, immediate_danger=danger, consent=True)
    db.session.commit()
    return case


def kinds(case):
    return [e.kind for e in service.timeline(db.session, case)]


def test_full_ordinary_and_extraordinary_paths(people):
    cw, sup = people["caseworker"], people["supervisor"]
    case = submitted_case(people, danger=True)
    assert case.status == "received" and case.reference.startswith("PRT-")
    service.assign(db.session, cw, case, cw)
    service.triage(db.session, cw, case, decision="extraordinary")
    service.issue_urgent_measures(db.session, cw, case, [("escort", "federal"), ("panic_button", "state")])
    service.implement_urgent_measures(db.session, cw, case)
    service.record_assessment(db.session, cw, case, level="high", factors="Threats by a cartel",
                              recommendation="Panic button and cameras")
    service.record_decision(db.session, sup, case, outcome="granted", reason="risk_confirmed",
                            decided_on=date.today(), measures=[("cameras", "state"), ("phone", "federal")])
    service.communicate_decision(db.session, cw, case)
    for m in [m for m in case.measures if not m.urgent]:
        service.advance_measure(db.session, cw, case, m, "implemented")
    assert case.status == "active"
    service.start_review(db.session, cw, case)
    service.record_review(db.session, cw, case, outcome="maintain", notes="Still at risk")
    service.close(db.session, sup, case, reason="risk_ended")
    db.session.commit()
    assert case.status == "closed"
    assert kinds(case) == ["submitted", "assigned", "triaged", "urgent_measures_issued",
                           "urgent_measures_implemented", "assessment_done", "decision_made",
                           "decision_communicated", "measure_implemented", "measure_implemented",
                           "measures_implemented",
                           "review_started", "review_done", "closed"]
    assert audit.verify(db.session).ok


def test_invalid_transition_is_refused_with_a_message(people):
    cw = people["caseworker"]
    case = submitted_case(people)
    service.assign(db.session, cw, case, cw)
    with pytest.raises(DomainError, match="no es posible"):  # Spanish: the default language
        service.record_assessment(db.session, cw, case, level="high", factors="x", recommendation="y")


def test_stale_version_is_refused(people):
    cw = people["caseworker"]
    case = submitted_case(people)
    seen = case.version
    service.assign(db.session, cw, case, cw)
    db.session.commit()
    with pytest.raises(service.StaleCase):
        service.triage(db.session, cw, case, decision="ordinary", version=seen)


def test_who_sees_what(people):
    case = submitted_case(people)
    for role in ("journalist", "caseworker", "other_caseworker", "supervisor"):
        assert service.get_case(db.session, people[role], case.id)  # queue: any caseworker
    for role in ("other_journalist", "donor", "admin"):
        with pytest.raises(NotFound):
            service.get_case(db.session, people[role], case.id)
    service.assign(db.session, people["caseworker"], case, people["caseworker"])
    db.session.commit()
    with pytest.raises(NotFound):
        service.get_case(db.session, people["other_caseworker"], case.id)
    with pytest.raises(PermissionDenied):
        service.triage(db.session, people["journalist"], case, decision="ordinary")


def test_not_admitted_then_appeal_upheld(people):
    cw, j = people["caseworker"], people["journalist"]
    case = submitted_case(people)
    service.assign(db.session, cw, case, cw)
    service.triage(db.session, cw, case, decision="not_admitted", reason="unrelated_to_work")
    service.file_appeal(db.session, j, case, grounds="It is about my reporting.")
    with pytest.raises(DomainError):
        service.resolve_appeal(db.session, cw, case, outcome="upheld")
    service.receive_study(db.session, cw, case)
    service.resolve_appeal(db.session, cw, case, outcome="upheld")
    assert case.status == "risk_assessment"


def test_reveal_identity_needs_supervisor_and_reason(people):
    case = submitted_case(people)
    with pytest.raises(PermissionDenied):
        service.reveal_identity(db.session, people["caseworker"], case, "because I want to")
    with pytest.raises(DomainError):
        service.reveal_identity(db.session, people["supervisor"], case, "")
    name = service.reveal_identity(db.session, people["supervisor"], case, "Needed to request escorts from the state police")
    db.session.commit()
    assert name == "Lucía Hernández Ruiz"
    assert "identity_revealed" in kinds(case)


def test_intake_rejects_bad_values(people):
    j = people["journalist"]
    case = service.start_request(db.session, j)
    for kwargs in (dict(occurred_on=date.today() + timedelta(days=30)), dict(occurred_on=date(1900, 1, 1)),
                   dict(kind="<script>"), dict(narrative="x" * 30000), dict(narrative="")):
        base = dict(occurred_on=date.today(), kind="threat", aggressor="unknown", channel="phone",
                    place=None, narrative="A call")
        base.update(kwargs)
        with pytest.raises(DomainError):
            service.add_incident(db.session, j, case, **base)
    with pytest.raises(DomainError):
        service.submit(db.session, j, case, immediate_danger=False, consent=True)
    with pytest.raises(DomainError):
        service.submit(db.session, j, case, immediate_danger=False, consent=False)


def test_measures_only_move_forward(people):
    cw = people["caseworker"]
    case = submitted_case(people)
    service.assign(db.session, cw, case, cw)
    service.triage(db.session, cw, case, decision="ordinary")
    service.record_assessment(db.session, cw, case, level="ordinary", factors="f", recommendation="r")
    service.record_decision(db.session, cw, case, outcome="partly_granted", reason="risk_partly_confirmed",
                            decided_on=date.today(), measures=[("training", "private")])
    m = case.measures[0]
    service.advance_measure(db.session, cw, case, m, "active")
    assert m.requested_at and m.implemented_at and m.active_at
    with pytest.raises(DomainError):
        service.advance_measure(db.session, cw, case, m, "requested")
    assert case.status == "active"
