"""The case workflow: who may do what to a case, and in which state.

Every state change goes through ``_transition``: it checks the action is
allowed from the case's current state, checks the version the person was
looking at (optimistic locking), moves the state, writes the typed event and
the audit row, all in the caller's transaction. Views only parse and commit.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import cast

from flask_babel import lazy_gettext as _l
from sqlalchemy import Row, Table, and_, func, or_, select

from ..accounts.models import STAFF_ROLES, User
from ..audit import service as audit
from ..deadlines import service as deadlines
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import Session, rowcount, utcnow
from . import codes
from .models import (
    Appeal,
    BoardDecision,
    Case,
    CaseEvent,
    Evidence,
    Incident,
    Measure,
    MeasureType,
    Message,
    Note,
    OnlineThreat,
    Review,
    RiskAssessment,
)

REF_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # no 0/O, 1/I/L, U
MAX_TEXT = 20_000
MAX_SHORT = 300
EARLIEST_INCIDENT = date(1990, 1, 1)


class StaleCase(DomainError):
    """Someone else changed the case since the person loaded it."""

    def __init__(self):
        super().__init__(_l("This case was changed by someone else meanwhile. "
                            "Here is its current state; what you typed is still in the form."))


# action -> (states it may start from, state it leads to; None keeps the state)
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "submit": (frozenset({"draft"}), "received"),
    "take": (frozenset({"received"}), "triage"),
    "admit_extraordinary": (frozenset({"received", "triage"}), "urgent_measures"),
    "admit_ordinary": (frozenset({"received", "triage"}), "risk_assessment"),
    "not_admit": (frozenset({"received", "triage"}), "not_admitted"),
    "issue_urgent_measures": (frozenset({"urgent_measures"}), None),
    "implement_urgent_measures": (frozenset({"urgent_measures"}), "risk_assessment"),
    "assess": (frozenset({"risk_assessment"}), "board_decision"),
    "decide_grant": (frozenset({"board_decision"}), "implementation"),
    "decide_deny": (frozenset({"board_decision"}), "closed"),
    "communicate_decision": (frozenset({"implementation", "active"}), None),
    "measures_implemented": (frozenset({"implementation"}), "active"),
    "start_review": (frozenset({"active"}), "review"),
    "review_keep": (frozenset({"review"}), "active"),
    "review_withdraw": (frozenset({"review"}), "closed"),
    "appeal": (frozenset({"not_admitted", "closed"}), "appeal"),
    "receive_study": (frozenset({"appeal"}), None),
    "appeal_upheld": (frozenset({"appeal"}), "risk_assessment"),
    "appeal_rejected": (frozenset({"appeal"}), "closed"),
    "close": (frozenset({"triage", "urgent_measures", "risk_assessment", "board_decision",
                         "implementation", "active", "review"}), "closed"),
    "withdraw": (frozenset(codes.OPEN_STATUSES), "withdrawn"),
}


# -- access ---------------------------------------------------------------

def is_petitioner(user: User, case: Case) -> bool:
    return case.petitioner_id is not None and case.petitioner_id == user.id


def can_view(user: User, case: Case) -> bool:
    if user.role == "journalist":
        return is_petitioner(user, case) or (case.status == "draft" and case.filed_by_id == user.id)
    if user.role == "supervisor":
        return True
    if user.role == "caseworker":
        in_queue = case.status in ("received", "triage") and case.assignee_id is None
        return case.assignee_id == user.id or in_queue or (
            case.status == "draft" and case.filed_by_id == user.id)
    return False  # donors and admins never read case content


def can_work(user: User, case: Case) -> bool:
    """Record workflow steps: the assigned caseworker or any supervisor."""
    return user.role == "supervisor" or (user.role == "caseworker" and case.assignee_id == user.id)


def can_edit_draft(user: User, case: Case) -> bool:
    return case.status == "draft" and (case.filed_by_id == user.id)


def get_case(db: Session, user: User, case_id: str, *, audit_view: bool = False) -> Case:
    """The case, if ``user`` may see it; an unknown and a forbidden case look alike."""
    case = db.get(Case, case_id) if isinstance(case_id, str) and len(case_id) == 32 else None
    if case is None or not can_view(user, case):
        raise NotFound(_l("No such case."))
    if audit_view and not is_petitioner(user, case):
        audit.record(db, "case.viewed", actor=user, target=case.reference)
    return case


def _require(allowed: bool):
    if not allowed:
        raise PermissionDenied(_l("You cannot do this on this case."))


def _check_version(case: Case, version: int | None):
    if version is not None and version != case.version:
        raise StaleCase()


def _event(db: Session, case: Case, kind: str, actor: User | None, at: datetime | None = None,
           **data) -> CaseEvent:
    event = CaseEvent(case_id=case.id, kind=kind, at=at or utcnow(),
                      actor_id=getattr(actor, "id", None), data=data)
    db.add(event)
    deadlines.on_event(db, case, event)  # clocks move with the timeline, in the same transaction
    return event


def _transition(db: Session, actor: User | None, case: Case, action: str, *,
                version: int | None = None, event: str | None = None, **data) -> None:
    _check_version(case, version)
    sources, target = TRANSITIONS[action]
    if case.status not in sources:
        raise DomainError(_l("This step is not possible while the case is “%(status)s”.",
                             status=codes.STATUSES[case.status]))
    old = case.status
    if target is not None:
        case.status = target
    now = utcnow()
    case.updated_at = now
    if target in ("closed", "withdrawn", "not_admitted"):
        case.closed_at = now
    elif target is not None:
        case.closed_at = None
    _event(db, case, event or action, actor, at=now, **data)
    audit.record(db, f"case.{action}", actor=actor, target=case.reference,
                 **({"from": old, "to": case.status} if target else {}), **data)


# -- intake ---------------------------------------------------------------

def new_reference(db: Session) -> str:
    while True:
        raw = "".join(secrets.choice(REF_ALPHABET) for _ in range(8))
        ref = f"PRT-{raw[:4]}-{raw[4:]}"
        if db.execute(select(Case.id).where(Case.reference == ref)).first() is None:
            return ref


def start_request(db: Session, actor: User) -> Case:
    """A new draft, filed by a journalist for themself or by staff for someone else."""
    _require(actor.role in ("journalist", "caseworker", "supervisor"))
    case = Case(reference=new_reference(db), status="draft", filed_by_id=actor.id,
                petitioner_id=actor.id if actor.role == "journalist" else None)
    db.add(case)
    db.flush()
    audit.record(db, "case.draft_started", actor=actor, target=case.reference)
    return case


def _text(value: str | None, label, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    value = (value or "").replace("\x00", "").strip()
    if required and not value:
        raise DomainError(_l("Please fill in: %(field)s.", field=label))
    if len(value) > limit:
        raise DomainError(_l("%(field)s is too long (at most %(n)d characters).", field=label, n=limit))
    return value or None


def _code(value: str | None, allowed, label, *, required: bool = True) -> str | None:
    if not value and not required:
        return None
    if value not in allowed:
        raise DomainError(_l("Choose a valid option for: %(field)s.", field=label))
    return value


@dataclass
class WhoAtRisk:
    name: str | None
    pseudonymous: bool
    real_identity: str | None
    contact: str | None
    beneficiary_type: str | None
    gender: str | None
    others_at_risk: str | None


def save_who(db: Session, actor: User, case: Case, data: WhoAtRisk, version: int | None = None):
    _require(can_edit_draft(actor, case))
    _check_version(case, version)
    case.name = _text(data.name, _l("Name or pseudonym"), required=True, limit=MAX_SHORT)
    case.pseudonymous = bool(data.pseudonymous)
    real = _text(data.real_identity, _l("Real name"), limit=MAX_SHORT)
    if case.pseudonymous and not real:
        raise DomainError(_l("With a pseudonym, give your real name too: it is sealed and only a supervisor can reveal it."))
    case.real_identity = real if case.pseudonymous else None
    case.contact = _text(data.contact, _l("How to reach you"), required=True, limit=MAX_SHORT)
    case.beneficiary_type = _code(data.beneficiary_type, codes.BENEFICIARY_TYPES, _l("Who is at risk"))
    case.gender = _code(data.gender, codes.GENDERS, _l("Gender"), required=False)
    case.others_at_risk = _text(data.others_at_risk, _l("Relatives or colleagues at risk"))
    case.intake_step = max(case.intake_step, 2)
    case.updated_at = utcnow()


def save_work(db: Session, actor: User, case: Case, *, outlet: str | None, journalism_kind: str | None,
              state_code: str | None, municipality: str | None, version: int | None = None):
    _require(can_edit_draft(actor, case))
    _check_version(case, version)
    case.outlet = _text(outlet, _l("Outlet or organisation"), limit=MAX_SHORT)
    case.journalism_kind = _code(journalism_kind, codes.JOURNALISM_KINDS, _l("Kind of work"), required=False)
    case.state_code = _code(state_code, codes.STATES, _l("State"))
    case.municipality = _text(municipality, _l("Municipality"), limit=MAX_SHORT)
    case.intake_step = max(case.intake_step, 3)
    case.updated_at = utcnow()


def _check_date(value: date | None, label) -> date:
    if value is None:
        raise DomainError(_l("Please fill in: %(field)s.", field=label))
    today = utcnow().date()
    if value > today + timedelta(days=1):
        raise DomainError(_l("%(field)s cannot be in the future.", field=label))
    if value < EARLIEST_INCIDENT:
        raise DomainError(_l("%(field)s is too far in the past.", field=label))
    return value


def add_incident(db: Session, actor: User, case: Case, *, occurred_on: date | None, kind: str,
                 aggressor: str, channel: str, place: str | None, narrative: str | None) -> Incident:
    _require(can_edit_draft(actor, case) or can_work(actor, case))
    incident = Incident(
        case_id=case.id,
        occurred_on=_check_date(occurred_on, _l("Date")),
        kind=_code(kind, codes.INCIDENT_TYPES, _l("What happened")),
        aggressor=_code(aggressor, codes.AGGRESSOR_TYPES, _l("Who did it")),
        channel=_code(channel, codes.CHANNELS, _l("How")))
    incident.place = _text(place, _l("Place"), limit=MAX_SHORT)
    incident.narrative = _text(narrative, _l("What happened, in your words"), required=True)
    case.incidents.append(incident)
    case.updated_at = utcnow()
    if case.status != "draft":
        _event(db, case, "incident_added", actor, incident=incident.id, type=incident.kind)
    audit.record(db, "case.incident_added", actor=actor, target=case.reference)
    return incident


def add_online_threat(db: Session, actor: User, case: Case, *, platform: str, locator: str,
                      incident_id: str | None = None) -> OnlineThreat:
    _require(can_edit_draft(actor, case) or can_work(actor, case))
    threat = OnlineThreat(case_id=case.id, platform=_code(platform, codes.PLATFORMS, _l("Platform")),
                          incident_id=_own_incident(db, case, incident_id))
    threat.locator = _text(locator, _l("Link or account"), required=True, limit=2000)
    case.online_threats.append(threat)
    case.updated_at = utcnow()
    audit.record(db, "case.online_threat_added", actor=actor, target=case.reference)
    return threat


def _own_incident(db: Session, case: Case, incident_id: str | None) -> str | None:
    if not incident_id:
        return None
    incident = db.get(Incident, incident_id)
    if incident is None or incident.case_id != case.id:
        raise DomainError(_l("Choose one of this case's incidents."))
    return incident.id


def record_platform_report(db: Session, actor: User, case: Case, threat: OnlineThreat, *,
                           reported_at: datetime | None, report_id: str | None, outcome: str | None,
                           responded_at: datetime | None, removed_at: datetime | None):
    _require(can_work(actor, case))
    if threat.case_id != case.id:
        raise NotFound(_l("No such case."))
    now = utcnow()
    for value in (reported_at, responded_at, removed_at):
        if value and value > now + timedelta(minutes=5):
            raise DomainError(_l("Dates cannot be in the future."))
    if reported_at is None:
        raise DomainError(_l("Please fill in: %(field)s.", field=_l("Reported on")))
    if any(v and v < reported_at for v in (responded_at, removed_at)):
        raise DomainError(_l("The platform cannot answer before it was told."))
    threat.reported_at = reported_at
    threat.platform_report_id = _text(report_id, _l("Platform's report number"), limit=64)
    threat.outcome = _code(outcome, codes.PLATFORM_OUTCOMES, _l("Outcome"), required=False)
    threat.responded_at = responded_at
    threat.removed_at = removed_at
    _event(db, case, "platform_report", actor, threat=threat.id, platform=threat.platform,
           outcome=threat.outcome)
    audit.record(db, "case.platform_report", actor=actor, target=case.reference)


def add_evidence(db: Session, actor: User, case: Case, upload, *, incident_id: str | None = None,
                 online_threat_id: str | None = None) -> Evidence:
    """Keep an uploaded file (already encrypted into an uncommitted blob)."""
    _require(can_edit_draft(actor, case) or is_petitioner(actor, case) or can_work(actor, case))
    if online_threat_id:
        threat = db.get(OnlineThreat, online_threat_id)
        if threat is None or threat.case_id != case.id:
            raise DomainError(_l("Choose one of this case's online threats."))
    evidence = Evidence(case_id=case.id, incident_id=_own_incident(db, case, incident_id),
                        online_threat_id=online_threat_id or None, blob_id=upload.blob_id,
                        size=upload.size, content_type=(upload.content_type or "")[:100] or None,
                        uploaded_by_id=actor.id)
    evidence.filename = _text(upload.filename, _l("File name"), limit=255) or "file"
    case.evidence.append(evidence)
    upload.commit()  # the blob before the row: a crash leaves an orphan blob, never a dangling row
    if case.status != "draft":
        _event(db, case, "evidence_added", actor, evidence=evidence.id)
    audit.record(db, "case.evidence_added", actor=actor, target=case.reference)
    return evidence


def submit(db: Session, actor: User, case: Case, *, immediate_danger: bool, consent: bool,
           version: int | None = None) -> None:
    _require(can_edit_draft(actor, case))
    if not consent:
        raise DomainError(_l("We need your consent to use this information to protect you."))
    missing = [label for ok, label in (
        (case.name_ct is not None, _l("who is at risk")),
        (case.state_code is not None, _l("the state")),
        (bool(case.incidents), _l("at least one incident")),
    ) if not ok]
    if missing:
        raise DomainError(_l("Before sending, add: %(what)s.", what=", ".join(str(m) for m in missing)))
    case.immediate_danger = bool(immediate_danger)
    case.consent_at = case.submitted_at = utcnow()
    _transition(db, actor, case, "submit", version=version, event="submitted",
                immediate_danger=case.immediate_danger)


INTAKE_STEPS = 5


def advance_intake(db: Session, actor: User, case: Case, step: int) -> None:
    """Remember the furthest step of the request form the filer reached."""
    _require(can_edit_draft(actor, case))
    step = max(1, min(int(step), INTAKE_STEPS))
    if step > case.intake_step:
        case.intake_step = step
        case.updated_at = utcnow()


def remove_draft_item(db: Session, actor: User, case: Case, kind: str, item_id: str) -> list[str]:
    """Take an incident, online threat or evidence file out of a draft.

    Evidence attached to a removed incident or threat goes with it. Returns
    the blob ids the caller deletes from storage once the transaction is
    committed (the rows first: a crash leaves an orphan blob, never a dangling row).
    """
    _require(can_edit_draft(actor, case))
    model = {"incident": Incident, "threat": OnlineThreat, "evidence": Evidence}.get(kind)
    item = db.get(model, item_id) if model is not None and isinstance(item_id, str) else None
    if not isinstance(item, (Incident, OnlineThreat, Evidence)) or item.case_id != case.id:
        raise NotFound(_l("No such item."))
    if isinstance(item, Evidence):
        gone = [item]
    else:
        link = "incident_id" if kind == "incident" else "online_threat_id"
        gone = [e for e in case.evidence if getattr(e, link) == item.id]
    for evidence in gone:
        case.evidence.remove(evidence)
    if isinstance(item, Incident):
        case.incidents.remove(item)
    elif isinstance(item, OnlineThreat):
        case.online_threats.remove(item)
    case.updated_at = utcnow()
    audit.record(db, "case.draft_item_removed", actor=actor, target=case.reference, kind=kind,
                 evidence=len(gone))
    return [e.blob_id for e in gone]


def evidence_download(db: Session, actor: User, case: Case, evidence_id: str) -> Evidence:
    """An evidence file of ``case`` (which ``actor`` may see), audited as downloaded."""
    evidence = db.get(Evidence, evidence_id) if isinstance(evidence_id, str) else None
    if evidence is None or evidence.case_id != case.id or not can_view(actor, case):
        raise NotFound(_l("No such file."))
    audit.record(db, "case.evidence_downloaded", actor=actor, target=case.reference,
                 evidence=evidence.id)
    return evidence


# -- caseworker workflow --------------------------------------------------

def assign(db: Session, actor: User, case: Case, assignee: User, *, version: int | None = None):
    """Supervisors assign anyone; a caseworker may take an unassigned new request."""
    if assignee.role not in ("caseworker", "supervisor") or not assignee.active:
        raise DomainError(_l("Cases can be assigned only to active caseworkers or supervisors."))
    if actor.role == "caseworker":
        _require(assignee.id == actor.id and case.assignee_id is None
                 and case.status in ("received", "triage"))
    else:
        _require(actor.role == "supervisor")
    _check_version(case, version)
    previous = case.assignee_id
    case.assignee_id = assignee.id
    if case.status == "received":
        _transition(db, actor, case, "take", event="assigned", assignee=assignee.id, previous=previous)
    else:
        case.updated_at = utcnow()
        _event(db, case, "assigned", actor, assignee=assignee.id, previous=previous)
        audit.record(db, "case.assigned", actor=actor, target=case.reference, assignee=assignee.id)


def triage(db: Session, actor: User, case: Case, *, decision: str, reason: str | None = None,
           version: int | None = None):
    _require(can_work(actor, case))
    if decision == "extraordinary":
        case.procedure = "extraordinary"
        _transition(db, actor, case, "admit_extraordinary", version=version, event="triaged",
                    procedure="extraordinary")
    elif decision == "ordinary":
        case.procedure = "ordinary"
        _transition(db, actor, case, "admit_ordinary", version=version, event="triaged",
                    procedure="ordinary")
    elif decision == "not_admitted":
        case.outcome_reason = _code(reason, codes.NOT_ADMITTED_REASONS, _l("Reason"))
        _transition(db, actor, case, "not_admit", version=version, event="triaged",
                    procedure="not_admitted", reason=case.outcome_reason)
    else:
        raise DomainError(_l("Choose how the request is handled."))


def _new_measures(db: Session, case: Case, items, *, urgent: bool, decision_id: str | None = None):
    if not items:
        raise DomainError(_l("Choose at least one measure."))
    known = set(db.execute(select(MeasureType.code).where(MeasureType.active)).scalars())
    made = []
    now = utcnow()
    for kind, authority in items:
        if kind not in known:
            raise DomainError(_l("Choose measures from the catalogue."))
        measure = Measure(case_id=case.id, kind=kind, urgent=urgent, decision_id=decision_id,
                          authority=_code(authority, codes.AUTHORITIES, _l("Implementing authority")),
                          status="decided", decided_at=now)
        case.measures.append(measure)
        made.append(measure)
    return made


def issue_urgent_measures(db: Session, actor: User, case: Case, items, *, version: int | None = None):
    _require(can_work(actor, case))
    _check_version(case, version)
    measures = _new_measures(db, case, items, urgent=True)
    now = utcnow()
    for m in measures:
        m.status, m.requested_at = "requested", now
    db.flush()
    _transition(db, actor, case, "issue_urgent_measures", event="urgent_measures_issued",
                measures=[m.kind for m in measures])


def implement_urgent_measures(db: Session, actor: User, case: Case, *, version: int | None = None):
    _require(can_work(actor, case))
    pending = [m for m in case.measures if m.urgent and m.status in ("decided", "requested")]
    if not any(m.urgent for m in case.measures):
        raise DomainError(_l("Record the urgent measures issued first."))
    now = utcnow()
    for m in pending:
        m.status, m.implemented_at = "implemented", now
    _transition(db, actor, case, "implement_urgent_measures", version=version,
                event="urgent_measures_implemented")


def record_assessment(db: Session, actor: User, case: Case, *, level: str, factors: str | None,
                      recommendation: str | None, version: int | None = None) -> RiskAssessment:
    _require(can_work(actor, case))
    assessment = RiskAssessment(case_id=case.id, level=_code(level, codes.RISK_LEVELS, _l("Risk level")),
                                author_id=actor.id)
    assessment.factors = _text(factors, _l("Risk factors"), required=True)
    assessment.recommendation = _text(recommendation, _l("Recommendation"), required=True)
    db.add(assessment)
    case.risk_level = assessment.level
    _transition(db, actor, case, "assess", version=version, event="assessment_done", level=assessment.level)
    return assessment


def record_decision(db: Session, actor: User, case: Case, *, outcome: str, reason: str,
                    decided_on: date | None, measures, version: int | None = None) -> BoardDecision:
    _require(can_work(actor, case))
    decision = BoardDecision(case_id=case.id, author_id=actor.id,
                             outcome=_code(outcome, codes.DECISION_OUTCOMES, _l("Decision")),
                             reason=_code(reason, codes.DECISION_REASONS, _l("Reason")),
                             decided_on=_check_date(decided_on, _l("Date of the decision")))
    db.add(decision)
    db.flush()
    if outcome == "denied":
        if measures:
            raise DomainError(_l("A denied request has no measures."))
        case.outcome_reason = "denied"
        _transition(db, actor, case, "decide_deny", version=version, event="decision_made",
                    outcome=outcome, reason=reason)
    else:
        made = _new_measures(db, case, measures, urgent=False, decision_id=decision.id)
        _transition(db, actor, case, "decide_grant", version=version, event="decision_made",
                    outcome=outcome, reason=reason, measures=[m.kind for m in made])
    return decision


def communicate_decision(db: Session, actor: User, case: Case, *, version: int | None = None):
    _require(can_work(actor, case))
    decision = latest_decision(db, case)
    if decision is None or decision.communicated_at is not None:
        raise DomainError(_l("The decision was already sent to the implementing authorities."))
    decision.communicated_at = utcnow()
    now = decision.communicated_at
    for m in case.measures:
        if m.decision_id == decision.id and m.status == "decided":
            m.status, m.requested_at = "requested", now
    _transition(db, actor, case, "communicate_decision", version=version,
                event="decision_communicated", decision=decision.id)


def advance_measure(db: Session, actor: User, case: Case, measure: Measure, to: str, *,
                    version: int | None = None):
    _require(can_work(actor, case))
    _check_version(case, version)
    if measure.case_id != case.id:
        raise NotFound(_l("No such case."))
    flow = codes.MEASURE_FLOW
    if to not in flow or flow.index(to) <= flow.index(measure.status):
        raise DomainError(_l("A measure moves forward only: decided, requested, implemented, active, withdrawn."))
    now = utcnow()
    for step in flow[flow.index(measure.status) + 1: flow.index(to) + 1]:
        setattr(measure, f"{step}_at", getattr(measure, f"{step}_at") or now)
    measure.status = to
    case.updated_at = now
    _event(db, case, f"measure_{to}", actor, measure=measure.id, measure_type=measure.kind,
           authority=measure.authority, urgent=measure.urgent)
    audit.record(db, f"case.measure_{to}", actor=actor, target=case.reference, measure=measure.id)
    decided = [m for m in case.measures if not m.urgent and m.status != "withdrawn"]
    if case.status == "implementation" and decided and all(
            m.status in ("implemented", "active") for m in decided):
        _transition(db, actor, case, "measures_implemented")


def start_review(db: Session, actor: User, case: Case, *, version: int | None = None):
    _require(can_work(actor, case))
    _transition(db, actor, case, "start_review", version=version, event="review_started")


def record_review(db: Session, actor: User, case: Case, *, outcome: str, notes: str | None,
                  version: int | None = None) -> Review:
    _require(can_work(actor, case))
    review = Review(case_id=case.id, author_id=actor.id,
                    outcome=_code(outcome, codes.REVIEW_OUTCOMES, _l("Outcome")))
    review.notes = _text(notes, _l("Notes"))
    db.add(review)
    if outcome == "withdraw":
        now = utcnow()
        for m in case.measures:
            if m.status != "withdrawn":
                m.status, m.withdrawn_at = "withdrawn", now
        case.outcome_reason = "measures_withdrawn"
        _transition(db, actor, case, "review_withdraw", version=version, event="review_done", outcome=outcome)
    else:
        _transition(db, actor, case, "review_keep", version=version, event="review_done", outcome=outcome)
    return review


def file_appeal(db: Session, actor: User, case: Case, *, grounds: str | None,
                version: int | None = None) -> Appeal:
    _require(is_petitioner(actor, case) or can_work(actor, case))
    if case.status == "closed" and case.outcome_reason != "denied":
        raise DomainError(_l("Only a refusal can be appealed."))
    appeal = Appeal(case_id=case.id)
    appeal.grounds = _text(grounds, _l("Why you disagree"), required=True)
    db.add(appeal)
    _transition(db, actor, case, "appeal", version=version, event="appeal_filed")
    return appeal


def open_appeal(db: Session, case: Case) -> Appeal | None:
    return db.execute(select(Appeal).where(Appeal.case_id == case.id, Appeal.resolved_at.is_(None))
                      .order_by(Appeal.filed_at.desc()).limit(1)).scalar_one_or_none()


def receive_study(db: Session, actor: User, case: Case, *, version: int | None = None):
    _require(can_work(actor, case))
    appeal = open_appeal(db, case)
    if appeal is None or appeal.study_received_at is not None:
        raise DomainError(_l("The independent study was already received."))
    appeal.study_received_at = utcnow()
    _transition(db, actor, case, "receive_study", version=version, event="study_received")


def resolve_appeal(db: Session, actor: User, case: Case, *, outcome: str, version: int | None = None):
    _require(can_work(actor, case))
    appeal = open_appeal(db, case)
    if appeal is None or appeal.study_received_at is None:
        raise DomainError(_l("Record the independent study before resolving the appeal."))
    appeal.outcome = _code(outcome, codes.APPEAL_OUTCOMES, _l("Outcome"))
    appeal.resolved_at = utcnow()
    action = "appeal_upheld" if outcome == "upheld" else "appeal_rejected"
    if outcome == "upheld":
        case.outcome_reason = None
        case.procedure = case.procedure or "ordinary"
    _transition(db, actor, case, action, version=version, event="appeal_resolved", outcome=outcome)


def close(db: Session, actor: User, case: Case, *, reason: str, version: int | None = None):
    _require(can_work(actor, case))
    case.outcome_reason = _code(reason, codes.CLOSURE_REASONS, _l("Reason"))
    _transition(db, actor, case, "close", version=version, event="closed", reason=reason)


def withdraw(db: Session, actor: User, case: Case, *, version: int | None = None):
    _require(is_petitioner(actor, case) or can_work(actor, case))
    case.outcome_reason = "petitioner_request"
    _transition(db, actor, case, "withdraw", version=version, event="withdrawn")


def add_note(db: Session, actor: User, case: Case, body: str | None) -> Note:
    _require(can_work(actor, case) or (actor.role == "caseworker" and can_view(actor, case)))
    note = Note(case_id=case.id, author_id=actor.id)
    note.body = _text(body, _l("Note"), required=True)
    db.add(note)
    _event(db, case, "note_added", actor, note=note.id)
    audit.record(db, "case.note_added", actor=actor, target=case.reference)
    return note


def send_message(db: Session, actor: User, case: Case, body: str | None) -> Message:
    from_petitioner = is_petitioner(actor, case)
    _require(from_petitioner or can_work(actor, case))
    if case.status == "draft":
        raise DomainError(_l("Send the request first."))
    message = Message(case_id=case.id, author_id=actor.id, to_petitioner=not from_petitioner)
    message.body = _text(body, _l("Message"), required=True, limit=5000)
    db.add(message)
    _event(db, case, "message_sent", actor, message=message.id, to_petitioner=not from_petitioner)
    audit.record(db, "case.message_sent", actor=actor, target=case.reference)
    return message


def reveal_identity(db: Session, actor: User, case: Case, reason: str | None) -> str:
    """The sealed real identity of a pseudonymous petitioner: supervisors only, with a reason."""
    if actor.role != "supervisor":
        raise PermissionDenied(_l("Only a supervisor can reveal a sealed identity."))
    if not case.pseudonymous or not case.real_identity_ct:
        raise DomainError(_l("This case has no sealed identity."))
    _text(reason, _l("Reason"), required=True, limit=1000)
    if reason is None or len(reason.strip()) < 10:
        raise DomainError(_l("Explain in a sentence why the identity must be revealed."))
    _event(db, case, "identity_revealed", actor)
    audit.record(db, "case.identity_revealed", actor=actor, target=case.reference,
                 reason_length=len(reason.strip()))
    return case.real_identity


# -- reading --------------------------------------------------------------

def latest_decision(db: Session, case: Case) -> BoardDecision | None:
    return db.execute(select(BoardDecision).where(BoardDecision.case_id == case.id)
                      .order_by(BoardDecision.created_at.desc()).limit(1)).scalar_one_or_none()


def timeline(db: Session, case: Case) -> list[CaseEvent]:
    return list(db.execute(select(CaseEvent).where(CaseEvent.case_id == case.id)
                           .order_by(CaseEvent.at, CaseEvent.id)).scalars())


def messages(db: Session, case: Case) -> list[Message]:
    return list(db.execute(select(Message).where(Message.case_id == case.id)
                           .order_by(Message.created_at)).scalars())


def mark_messages_read(db: Session, actor: User, case: Case) -> int:
    """The petitioner has seen the messages sent to them; returns how many were new."""
    if not is_petitioner(actor, case):
        return 0
    result = db.execute(cast(Table, Message.__table__).update()
                        .where(Message.case_id == case.id, Message.to_petitioner.is_(True),
                               Message.read_at.is_(None))
                        .values(read_at=utcnow()))
    return rowcount(result) or 0


def unread_counts(db: Session, user: User) -> dict[str, int]:
    """Per case of ``user`` (as petitioner), how many messages to them are unread."""
    rows = db.execute(select(Message.case_id, func.count())
                      .join(Case, Case.id == Message.case_id)
                      .where(Case.petitioner_id == user.id, Message.to_petitioner.is_(True),
                             Message.read_at.is_(None))
                      .group_by(Message.case_id))
    return {case_id: n for case_id, n in rows}


def notes(db: Session, case: Case) -> list[Note]:
    return list(db.execute(select(Note).where(Note.case_id == case.id)
                           .order_by(Note.created_at.desc())).scalars())


@dataclass(frozen=True, slots=True)
class MeasureKind:
    """A measure type of the catalogue as pages show it: plain values, kept between requests."""
    code: str
    category: str
    name_es: str
    name_en: str


def measure_types(db: Session) -> list[MeasureKind]:
    """The active catalogue, urgent measures first (the categories' order), then by code."""
    order = list(codes.MEASURE_CATEGORIES)
    rows = db.execute(select(MeasureType.code, MeasureType.category, MeasureType.name_es, MeasureType.name_en)
                      .where(MeasureType.active)).all()
    kinds = [MeasureKind(*row) for row in rows]
    kinds.sort(key=lambda t: (order.index(t.category) if t.category in order else len(order), t.code))
    return kinds


def my_cases(db: Session, user: User) -> list[Case]:
    return list(db.execute(select(Case).where(or_(Case.petitioner_id == user.id,
                                                  and_(Case.status == "draft", Case.filed_by_id == user.id)))
                           .order_by(Case.created_at.desc())).scalars())


@dataclass
class CaseFilter:
    status: str | None = None
    stage_group: str | None = None  # "queue" (new requests) | "open" | "closed"
    assignee_id: str | None = None
    risk_level: str | None = None
    immediate_danger: bool | None = None
    reference: str | None = None
    sort: str = "priority"
    page: int = 1
    per_page: int = 50


SORTS = {
    "priority": (Case.immediate_danger.desc(), Case.submitted_at.asc()),
    "oldest": (Case.submitted_at.asc(),),
    "newest": (Case.submitted_at.desc(),),
    "updated": (Case.updated_at.desc(),),
}


# What a list shows of each case: plain rows, not Case objects (nothing sealed is
# read, and a page that is only displayed needs no identity map or version tracking).
LIST_COLUMNS = (Case.id, Case.reference, Case.status, Case.procedure, Case.immediate_danger,
                Case.state_code, Case.submitted_at, Case.closed_at, Case.assignee_id)


def list_cases(db: Session, user: User, f: CaseFilter) -> tuple[list[Row], int]:
    """Cases ``user`` may see, filtered (``LIST_COLUMNS`` of each); two queries whatever the page size."""
    query = select(*LIST_COLUMNS).where(Case.status != "draft")
    if user.role == "caseworker":
        query = query.where(or_(Case.assignee_id == user.id,
                                and_(Case.assignee_id.is_(None), Case.status.in_(("received", "triage")))))
    elif user.role != "supervisor":
        return [], 0
    if f.stage_group == "queue":
        query = query.where(Case.status.in_(("received", "triage")), Case.assignee_id.is_(None))
    elif f.stage_group == "open":
        query = query.where(Case.status.in_(codes.OPEN_STATUSES))
    elif f.stage_group == "closed":
        query = query.where(Case.status.in_(("closed", "withdrawn", "not_admitted")))
    if f.status in codes.STATUSES:
        query = query.where(Case.status == f.status)
    if f.assignee_id:
        query = query.where(Case.assignee_id == f.assignee_id)
    if f.risk_level in codes.RISK_LEVELS:
        query = query.where(Case.risk_level == f.risk_level)
    if f.immediate_danger is not None:
        query = query.where(Case.immediate_danger == f.immediate_danger)
    if f.reference:
        query = query.where(Case.reference == f.reference.strip().upper())
    total = db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.execute(query.order_by(*SORTS.get(f.sort, SORTS["priority"]), Case.id)
                      .offset((f.page - 1) * f.per_page).limit(f.per_page)).all()
    return list(rows), total


@dataclass(frozen=True, slots=True)
class StaffMember:
    """A staff account as pages name it: plain values, kept between requests."""
    id: str
    name: str | None
    email: str
    role: str
    active: bool


def staff_directory(db: Session) -> dict[str, StaffMember]:
    """Every staff account, active or not (pages name whoever acted on a case), in one query.
    Never a journalist's account: a pseudonymous petitioner's account may carry their real name."""
    rows = db.execute(select(User).where(User.role.in_(STAFF_ROLES))).scalars()
    return {u.id: StaffMember(u.id, u.name, u.email, u.role, u.active) for u in rows}


def assignable(directory: dict[str, StaffMember]) -> list[StaffMember]:
    """Who can be given a case: active caseworkers and supervisors."""
    return [m for m in directory.values() if m.active and m.role in ("caseworker", "supervisor")]


@dataclass
class CaseRecord:
    """What was decided on a case, oldest first (the case page reads it)."""
    assessments: list[RiskAssessment]
    decisions: list[BoardDecision]
    reviews: list[Review]
    appeals: list[Appeal]


def case_record(db: Session, case: Case) -> CaseRecord:
    def rows(model, order):
        return list(db.execute(select(model).where(model.case_id == case.id)
                               .order_by(order, model.id)).scalars())
    return CaseRecord(assessments=rows(RiskAssessment, RiskAssessment.created_at),
                      decisions=rows(BoardDecision, BoardDecision.created_at),
                      reviews=rows(Review, Review.created_at),
                      appeals=rows(Appeal, Appeal.filed_at))
