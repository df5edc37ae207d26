"""Clocks: started and stopped by case events, watched by the sweep.

A policy names the events that start its clock and the one that stops it.
``on_event`` is called for every case event (in the same transaction), so
clocks cannot drift from the timeline. A running clock is due soon and then
overdue by the time alone (``Clock.status_at``); ``sweep`` finds, with
set-based queries, the clocks that passed those moments since the last sweep
and writes one notification per transition; escalation to supervisors happens
once per overdue clock.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass
from datetime import date, datetime, timedelta
from itertools import chain, groupby
from typing import Any

from flask import current_app
from flask_babel import gettext, ngettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    Row,
    Select,
    String,
    and_,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import scoped_session
from sqlalchemy.sql.elements import ColumnElement

from ..accounts.models import User
from ..audit import service as audit
from ..cases import editions
from ..cases.models import Case, CaseEvent
from ..errors import DomainError, PermissionDenied
from ..extensions import Session, rowcount, utcnow
from ..kept import Kept
from ..notify import mail
from ..notify.service import insert_selected, queue_mail
from .calendar import TZ, UNITS, Calendar
from .models import Clock, Closure, DeadlinePolicy, Sweep

OPEN = ("running", "paused")
TERMINAL_EVENTS = {"closed", "withdrawn"}

STAGES = {
    "triage": _l("Triage"),
    "urgent_issued": _l("Urgent measures issued"),
    "urgent_implemented": _l("Urgent measures implemented"),
    "risk_assessment": _l("Risk assessment"),
    "decision_communicated": _l("Decision sent to the authorities"),
    "implementation": _l("Measures implemented"),
    "appeal": _l("Appeal resolved"),
    "review": _l("Periodic review"),
}

STATES = {
    "running": _l("Running"),
    "due_soon": _l("Due soon"),
    "overdue": _l("Overdue"),
    "met": _l("Met"),
    "met_late": _l("Met late"),
    "paused": _l("Paused"),
    "cancelled": _l("Cancelled"),
}

# DESIGN.md's defaults, seeded as version 1 by the migration (to be reviewed by the operator's lawyers).
DEFAULT_POLICIES = [
    ("triage", "submitted", "triaged", 3, "hours", "any",
     "Internal target: the Law sets no term for deciding the procedure."),
    ("urgent_issued", "triaged[procedure=extraordinary]", "urgent_measures_issued", 3, "hours", "extraordinary",
     "Ley para la Protección de Personas Defensoras de Derechos Humanos y Periodistas: urgent protection measures issued within 3 hours."),
    ("urgent_implemented", "triaged[procedure=extraordinary]", "urgent_measures_implemented", 9, "hours", "extraordinary",
     "Ley para la Protección de Personas Defensoras de Derechos Humanos y Periodistas: urgent protection measures implemented within 9 hours."),
    ("risk_assessment", "triaged[procedure=ordinary] urgent_measures_implemented appeal_resolved[outcome=upheld]",
     "assessment_done", 10, "natural_days", "any",
     "Ley para la Protección de Personas Defensoras de Derechos Humanos y Periodistas: risk assessment within 10 natural days."),
    ("decision_communicated", "decision_made[outcome=granted] decision_made[outcome=partly_granted]",
     "decision_communicated", 72, "hours", "any",
     "Ley para la Protección de Personas Defensoras de Derechos Humanos y Periodistas: the board's decision sent to the implementing authorities within 72 hours."),
    ("implementation", "decision_made[outcome=granted] decision_made[outcome=partly_granted]",
     "measures_implemented", 30, "natural_days", "any",
     "Ley para la Protección de Personas Defensoras de Derechos Humanos y Periodistas: measures implemented within 30 natural days."),
    ("appeal", "study_received", "appeal_resolved", 15, "natural_days", "any",
     "Ley para la Protección de Personas Defensoras de Derechos Humanos y Periodistas, art. 58: appeal resolved within 15 natural days of the independent study."),
    ("review", "measures_implemented review_done[outcome=maintain] review_done[outcome=modify]",
     "review_done", 183, "natural_days", "any",
     "Internal target: measures reviewed every six months."),
]

_START_RE = re.compile(r"^([a-z_]+)(?:\[([a-z_]+)=([a-z_]+)\])?$")


def parse_start_events(text: str) -> list[tuple[str, str | None, str | None]]:
    parsed: list[tuple[str, str | None, str | None]] = []
    for token in text.split():
        match = _START_RE.match(token)
        if not match:
            raise DomainError(_l("Start events are event names, each optionally narrowed like triaged[procedure=ordinary]."))
        kind, key, value = match.groups()
        parsed.append((kind, key, value))
    if not parsed:
        raise DomainError(_l("Name at least one start event."))
    return parsed


def _starts(policy: DeadlinePolicy, event: CaseEvent) -> bool:
    for kind, key, value in parse_start_events(policy.start_events):
        if kind == event.kind and (key is None or str((event.data or {}).get(key)) == value):
            return True
    return False


def calendar(db: Session) -> Calendar:
    return Calendar(db.execute(select(Closure.day)).scalars())


def current_policies(db: Session, on: date) -> list[DeadlinePolicy]:
    """The newest version of each stage in force on ``on``."""
    newest = (select(DeadlinePolicy.stage, func.max(DeadlinePolicy.version).label("version"))
              .where(DeadlinePolicy.effective_from <= on).group_by(DeadlinePolicy.stage).subquery())
    return list(db.execute(select(DeadlinePolicy).join(newest, and_(
        DeadlinePolicy.stage == newest.c.stage, DeadlinePolicy.version == newest.c.version))
        .order_by(DeadlinePolicy.stage)).scalars())


def _warn_at(started: datetime, due: datetime, percent: int) -> datetime:
    return due - (due - started) * (percent / 100)


class _Rules:
    """The policies in force on each day and the office calendar, each read once: for one live
    event, or for a whole replay (``rebuild_clocks``), which would otherwise read them per event."""

    def __init__(self, db: Session) -> None:
        self.db = db
        self.by_day: dict[date, list[DeadlinePolicy]] = {}
        self._calendar: Calendar | None = None

    def policies(self, on: date) -> list[DeadlinePolicy]:
        if on not in self.by_day:
            self.by_day[on] = current_policies(self.db, on)
        return self.by_day[on]

    @property
    def calendar(self) -> Calendar:
        self._calendar = self._calendar or calendar(self.db)
        return self._calendar


def on_event(db: Session, case: Case, event: CaseEvent) -> None:
    """Stop, cancel and start this case's clocks for one new event."""
    open_clocks = list(db.execute(select(Clock).where(Clock.case_id == case.id, Clock.state.in_(OPEN))).scalars())
    db.add_all(_advance(case, event, open_clocks, _Rules(db)))


def _advance(case: Case, event: CaseEvent, open_clocks: list[Clock], rules: _Rules) -> list[Clock]:
    """The rule: ``event`` stops or cancels the open clocks it ends and returns the clocks it starts."""
    at = event.at
    for clock in open_clocks:
        if clock.policy.stop_event == event.kind:
            _stop(clock, at)
        elif event.kind in TERMINAL_EVENTS or (event.kind == "triaged" and case.status == "not_admitted"):
            clock.state, clock.stopped_at = "cancelled", at
    running_stages = {c.stage for c in open_clocks if c.state in OPEN}
    started = []
    for policy in rules.policies(at.astimezone(TZ).date()):
        if policy.stage in running_stages or not _starts(policy, event):
            continue
        if policy.procedure != "any" and policy.procedure != case.procedure:
            continue
        due = rules.calendar.deadline(at, policy.duration, policy.unit)
        started.append(Clock(case_id=case.id, policy=policy, stage=policy.stage, state="running",
                             started_at=at, due_at=due, warn_at=_warn_at(at, due, policy.warn_percent)))
    return started


def rebuild_clocks(db: Session, *, limit: int | None = None) -> int:
    """Clocks for cases whose events were written without the event hook (the
    synthetic-data generator's bulk inserts): replays each case's timeline
    through the rule ``on_event`` applies, its open clocks kept in memory."""
    has_clock = select(Clock.id).where(Clock.case_id == Case.id).exists()
    ids = db.execute(select(Case.id).where(Case.status != "draft", ~has_clock)
                     .order_by(Case.submitted_at).limit(limit)).scalars().all()
    rules = _Rules(db)
    for chunk in (ids[i:i + 1000] for i in range(0, len(ids), 1000)):
        cases = {case.id: case for case in db.execute(select(Case).where(Case.id.in_(chunk))).scalars()}
        events = db.execute(select(CaseEvent).where(CaseEvent.case_id.in_(chunk))
                            .order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id)).scalars()
        for case_id, timeline in groupby(events, key=lambda event: event.case_id):
            open_clocks: list[Clock] = []
            for event in timeline:
                started = _advance(cases[case_id], event, open_clocks, rules)
                db.add_all(started)
                open_clocks = [c for c in open_clocks + started if c.state in OPEN]
        db.flush()
    db.commit()
    return len(ids)


def _stop(clock: Clock, at: datetime) -> None:
    if clock.paused_at is not None:
        clock.paused_seconds += int((at - clock.paused_at).total_seconds())
        clock.paused_at = None
    clock.stopped_at = at
    clock.state = "met" if at < clock.due_at else "met_late"


def pause(db: Session, actor: User, case: Case, clock: Clock, reason: str | None) -> None:
    """Stop counting while the case waits on the petitioner."""
    _may_manage(actor, case, clock)
    if clock.state != "running":
        raise DomainError(_l("Only a running deadline can be paused."))
    reason = (reason or "").strip()
    if not reason or len(reason) > 1000:
        raise DomainError(_l("Say why the deadline is paused (for example, waiting on the petitioner)."))
    clock.pause_reason = reason
    clock.paused_at = utcnow()
    clock.state = "paused"
    audit.record(db, "deadline.paused", actor=actor, target=case.reference, stage=clock.stage)


def resume(db: Session, actor: User, case: Case, clock: Clock) -> None:
    _may_manage(actor, case, clock)
    if clock.state != "paused" or clock.paused_at is None:
        raise DomainError(_l("This deadline is not paused."))
    now = utcnow()
    paused = now - clock.paused_at
    clock.paused_seconds += int(paused.total_seconds())
    clock.due_at += paused
    clock.warn_at += paused
    clock.paused_at = None
    clock.state = "running"
    audit.record(db, "deadline.resumed", actor=actor, target=case.reference, stage=clock.stage,
                 paused_seconds=int(paused.total_seconds()))


def _may_manage(actor: User, case: Case, clock: Clock) -> None:
    if clock.case_id != case.id:
        raise DomainError(_l("No such deadline."))
    if not (actor.role == "supervisor" or (actor.role == "caseworker" and case.assignee_id == actor.id)):
        raise PermissionDenied(_l("You cannot do this on this case."))


@dataclass
class SweepResult:
    due_soon: int = 0
    overdue: int = 0
    escalated: int = 0
    notifications: int = 0

    def __add__(self, other: SweepResult) -> SweepResult:
        return SweepResult(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def _recipients(db: Session, clocks, key: tuple[str, str], kind: str, *, assignee: bool) -> Select:
    """One notification row per recipient of each clock in ``clocks`` (id, case_id, stage): the
    case's assignee (``assignee``) or, for an unassigned case or always otherwise, each active
    supervisor; keyed ``key[0] + clock id + key[1] + user id``. Each case is looked up once."""
    postgres = db.get_bind().dialect.name == "postgresql"
    json_object = func.json_build_object if postgres else func.json_object
    supervisors = select(User.id).where(User.role == "supervisor", User.active).subquery()
    case: Any = Case.__table__
    if postgres:
        # By primary key, clock by clock: joined, PostgreSQL hashed every case for each batch once
        # there were a million (bench/RESULTS.md, "sweep"). LIMIT keeps the lookup from being flattened.
        case = select(Case.assignee_id, Case.reference).where(Case.id == clocks.c.case_id).limit(1).lateral()
        of_case = clocks.join(case, true())
    else:
        of_case = clocks.join(case, case.c.id == clocks.c.case_id)
    recipient: ColumnElement[str]
    if assignee:
        recipient = func.coalesce(case.c.assignee_id, supervisors.c.id)
        found = of_case.outerjoin(supervisors, case.c.assignee_id.is_(None))
    else:
        recipient, found = supervisors.c.id, of_case.join(supervisors, true())
    return (select((literal(key[0], String) + clocks.c.id + literal(key[1], String) + recipient).label("key"),
                   recipient.label("user_id"), literal(kind, String).label("kind"), clocks.c.case_id.label("case_id"),
                   json_object("stage", clocks.c.stage, "reference", case.c.reference).label("data"))
            .select_from(found).where(recipient.is_not(None)))


@dataclass(frozen=True)
class _Move:
    """One kind of transition: the running clocks whose ``moment`` passed since the last sweep
    (``where``), how their notifications are keyed and whom they go to (the assignee, or the
    supervisors only)."""
    result: str
    moment: Any
    where: Any
    key: tuple[str, str]
    kind: str
    assignee: bool = True


def _moves(mark: Row, now: datetime, escalate_after: timedelta) -> list[_Move]:
    def passed(moment, since: datetime | None, until: datetime):
        found = (Clock.state == "running") & (moment <= until)
        return found if since is None else found & (moment > since)

    # A clock past both its moments since the last sweep is told it is overdue only.
    return [_Move("overdue", Clock.due_at, passed(Clock.due_at, mark.swept_from, now), ("clock:", ":overdue:"),
                  "deadline_overdue"),
            _Move("due_soon", Clock.warn_at, passed(Clock.warn_at, mark.swept_from, now) & (Clock.due_at > now),
                  ("clock:", ":due_soon:"), "deadline_due_soon"),
            _Move("escalated", Clock.due_at, passed(Clock.due_at, mark.escalated_from, now - escalate_after),
                  ("escalate:", ":"), "deadline_escalated", assignee=False)]


def _notify(db: Session, move: _Move, now: datetime, within: Any = None) -> SweepResult:
    """Notify the recipients of the clocks ``move`` finds (``within`` narrows them to one batch),
    skipping notifications that exist. Set-based: rows never travel through Python, unless their
    e-mails are queued."""
    clocks = select(Clock.id, Clock.case_id, Clock.stage).where(move.where, true() if within is None else within)
    notes = insert_selected(db, _recipients(db, clocks.subquery(), move.key, move.kind, assignee=move.assignee), now)
    result = db.execute(notes.execution_options(preserve_rowcount=True))  # counted for an INSERT too
    new = [row._asdict() for row in result] if mail.enabled() else []
    added = len(new) if mail.enabled() else rowcount(result)
    queue_mail(db, new, now)
    found = db.execute(select(func.count()).select_from(clocks.subquery())).scalar_one()
    return SweepResult(**{move.result: found, "notifications": added})


def _claim(db: Session, now: datetime, escalate_after: timedelta) -> Row | None:
    """Take the sweep's mark, moving it to ``now``; its ``swept_from`` and ``escalated_from`` are
    where the last sweep looked up to (None before the first). None when another sweep holds it
    (PostgreSQL, SKIP LOCKED; on SQLite the UPDATE takes the write lock, waiting for it). Held
    until this sweep commits."""
    held = select(Sweep.name).where(Sweep.name == DEADLINES).with_for_update(skip_locked=True).scalar_subquery()
    return db.execute(update(Sweep).where(Sweep.name == held)
                      .values(swept_from=Sweep.swept_to, swept_to=now,
                              escalated_from=Sweep.escalated_to, escalated_to=now - escalate_after)
                      .returning(Sweep.swept_from, Sweep.escalated_from)).first()


# PostgreSQL notifies a large sweep in batches of this many clocks, one transaction each, shared
# by several connections (or hosts' worth of cores) at once.
SWEEP_BATCH = 10_000
DEADLINES = "deadlines"


def sweep(db: Session, now: datetime | None = None, *, escalate_after: timedelta = timedelta(hours=1),
          workers: int = 1) -> SweepResult:
    """Notify every clock that fell due soon or overdue since the last sweep, and escalate those
    overdue for ``escalate_after``: one notification per transition, whatever runs again.

    One transaction, the mark's (``_claim``) with the notifications. On PostgreSQL a sweep of
    more than a batch per kind is shared by ``workers`` connections of their own, batch by batch,
    each committed alone; the mark commits after the last. What a failed sweep leaves, the next
    does again (it looks from the same mark; the notifications' keys skip what was sent).
    """
    now = now or utcnow()
    if isinstance(db, scoped_session):
        db = db()  # this context's session itself: the batches' threads find their edges on it
    mark = _claim(db, now, escalate_after)
    if mark is None:
        db.rollback()
        return SweepResult()
    moves = _moves(mark, now, escalate_after)
    edges = [_edge(db, move) for move in moves] if db.get_bind().dialect.name == "postgresql" else []
    if any(edge is not None for edge in edges):
        result = _share(db, chain.from_iterable(_batches(db, move, edge) for move, edge in zip(moves, edges, strict=True)),
                        now, workers)
    else:
        result = sum((_notify(db, move, now) for move in moves), SweepResult())
    if result.overdue:
        editions.raise_edition(db, editions.CLOCKS)
    db.commit()
    return result


def _edge(db: Session, move: _Move, after: datetime | None = None) -> datetime | None:
    """The moment that ends the batch after ``after``: SWEEP_BATCH clocks on, in the order of the
    index the move reads (clocks sharing that moment join the batch). None: the rest is one batch."""
    return db.execute(select(move.moment).where(move.where, true() if after is None else move.moment > after)
                      .order_by(move.moment).offset(SWEEP_BATCH - 1).limit(1)).scalar()


def _batches(db: Session, move: _Move, edge: datetime | None) -> Iterator[tuple[_Move, Any]]:
    """Every batch of ``move``'s clocks, as a condition each, from its first ``edge`` on."""
    last = None
    while True:
        yield move, and_(true() if last is None else move.moment > last, true() if edge is None else move.moment <= edge)
        if edge is None:
            return
        last, edge = edge, _edge(db, move, edge)


def _share(db: Session, batches: Iterator[tuple[_Move, Any]], now: datetime, workers: int) -> SweepResult:
    """Every batch on ``workers`` connections of their own, each batch committed alone; ``db``
    keeps the mark (and finds the batches' edges, one thread at a time)."""
    app, engine, lock = current_app._get_current_object(), db.get_bind(), threading.Lock()  # type: ignore[attr-defined]

    def part() -> SweepResult:
        result = SweepResult()
        with app.app_context(), OrmSession(engine) as session:
            while True:
                with lock:
                    batch = next(batches, None)
                if batch is None:
                    return result
                result += _notify(session, batch[0], now, batch[1])
                session.commit()

    with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="sweep") as pool:
        return sum((f.result() for f in [pool.submit(part) for _ in range(max(workers, 1))]), SweepResult())


# -- reading --------------------------------------------------------------

def case_clocks(db: Session, case: Case) -> list[Clock]:
    return list(db.execute(select(Clock).where(Clock.case_id == case.id)
                           .order_by(Clock.started_at, Clock.stage)).scalars())


def overdue(now: datetime) -> ColumnElement[bool]:
    """The clocks overdue at ``now``, in SQL (``Clock.status_at`` in Python)."""
    return (Clock.state == "running") & (Clock.due_at <= now)


def my_deadlines(db: Session, user: User, limit: int = 200) -> list[tuple[Clock, Case]]:
    """The caseworker's open clocks: overdue first, then due soon, by time left."""
    now = utcnow()
    order = sql_case((overdue(now), 0), ((Clock.state == "running") & (Clock.warn_at <= now), 1), else_=2)
    return list(db.execute(select(Clock, Case).join(Case, Case.id == Clock.case_id)
                           .where(Case.assignee_id == user.id, Clock.state.in_(OPEN))
                           .order_by(order, Clock.due_at).limit(limit)).all())


def overdue_count(db: Session, user: User, cases_edition: int, clocks_edition: int) -> int:
    """The number of overdue clocks ``user`` answers for, shown on every page: counted again only
    when the editions of cases (assignments) or clocks changed. Counting costs a join over a
    caseworker's cases, 15 ms at 5,000 cases (bench/RESULTS.md, "pages")."""
    query = select(func.count()).select_from(Clock).join(Case, Case.id == Clock.case_id).where(overdue(utcnow()))
    if user.role == "caseworker":
        query = query.where(Case.assignee_id == user.id)
    elif user.role != "supervisor":
        return 0
    counts = current_app.extensions.setdefault("protect.overdue_counts", Kept(10_000))
    key = (user.id, user.role, cases_edition, clocks_edition)
    found = counts.get(key)
    return found if found is not None else counts.put(key, db.execute(query).scalar_one())


def overview(db: Session) -> dict:
    """Supervisor's view: overdue clocks by stage and by caseworker, oldest first."""
    late = overdue(utcnow())
    by_stage = db.execute(select(Clock.stage, func.count(), func.min(Clock.due_at))
                          .where(late).group_by(Clock.stage)
                          .order_by(func.min(Clock.due_at))).all()
    by_assignee = db.execute(select(Case.assignee_id, func.count(), func.min(Clock.due_at))
                             .join(Case, Case.id == Clock.case_id).where(late)
                             .group_by(Case.assignee_id).order_by(func.min(Clock.due_at))).all()
    oldest = db.execute(select(Clock, Case).join(Case, Case.id == Clock.case_id)
                        .where(late).order_by(Clock.due_at).limit(100)).all()
    return {"by_stage": by_stage, "by_assignee": by_assignee, "oldest": oldest}


def next_deadline(db: Session, case: Case) -> Clock | None:
    return db.execute(select(Clock).where(Clock.case_id == case.id, Clock.state.in_(OPEN))
                      .order_by(Clock.due_at).limit(1)).scalar_one_or_none()


def time_left(clock: Clock, now: datetime | None = None) -> str:
    """'due in 2 h 15 min' / 'overdue by 3 days', translated."""
    now = now or utcnow()
    if clock.state in ("met", "met_late", "cancelled"):
        return str(STATES[clock.state])
    reference = clock.paused_at if clock.state == "paused" and clock.paused_at is not None else now
    delta = clock.due_at - reference
    text = _span(abs(delta))
    if delta.total_seconds() >= 0:
        return gettext("due in %(time)s", time=text)
    return gettext("overdue by %(time)s", time=text)


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days >= 2:
        return ngettext("%(num)d day", "%(num)d days", days)
    if days == 1:
        return gettext("1 day %(h)d h", h=hours)
    if hours:
        return gettext("%(h)d h %(m)d min", h=hours, m=minutes)
    return gettext("%(m)d min", m=minutes)


# -- policy administration -------------------------------------------------

def add_policy_version(db: Session, actor: User, *, stage: str, effective_from: date | None,
                       start_events: str, stop_event: str, duration: int | None, unit: str,
                       warn_percent: int | None, procedure: str, legal_basis: str) -> DeadlinePolicy:
    if actor.role != "admin":
        raise PermissionDenied(_l("Only administrators change deadline policies."))
    if stage not in STAGES:
        raise DomainError(_l("Choose a stage."))
    if unit not in UNITS:
        raise DomainError(_l("Choose a unit."))
    if procedure not in ("any", "ordinary", "extraordinary"):
        raise DomainError(_l("Choose a procedure."))
    if not duration or not 1 <= duration <= 10000:
        raise DomainError(_l("The duration must be a whole number from 1 to 10000."))
    if warn_percent is None or not 0 <= warn_percent <= 90:
        raise DomainError(_l("The warning threshold is a percentage from 0 to 90."))
    if effective_from is None or effective_from < utcnow().astimezone(TZ).date():
        raise DomainError(_l("A new version takes effect today or later, never in the past."))
    parse_start_events(start_events)
    if not re.fullmatch(r"[a-z_]+", stop_event or ""):
        raise DomainError(_l("The stop event is one event name."))
    legal_basis = (legal_basis or "").strip()
    if not legal_basis or len(legal_basis) > 2000:
        raise DomainError(_l("Give the legal basis (up to 2000 characters)."))
    version = (db.execute(select(func.max(DeadlinePolicy.version)).where(DeadlinePolicy.stage == stage))
               .scalar() or 0) + 1
    policy = DeadlinePolicy(stage=stage, version=version, effective_from=effective_from,
                            start_events=" ".join(start_events.split()), stop_event=stop_event,
                            duration=duration, unit=unit, warn_percent=warn_percent,
                            procedure=procedure, legal_basis=legal_basis, created_by_id=actor.id)
    db.add(policy)
    db.flush()
    audit.record(db, "deadline.policy_added", actor=actor, target=f"{stage} v{version}")
    return policy


def all_policies(db: Session) -> list[DeadlinePolicy]:
    return list(db.execute(select(DeadlinePolicy).order_by(DeadlinePolicy.stage,
                                                           DeadlinePolicy.version.desc())).scalars())


def add_closure(db: Session, actor: User, day: date | None, label: str) -> Closure:
    if actor.role != "admin":
        raise PermissionDenied(_l("Only administrators change the calendar."))
    label = (label or "").strip()
    if day is None or not label or len(label) > 120:
        raise DomainError(_l("Give the day and a short label."))
    if db.get(Closure, day):
        raise DomainError(_l("That day is already closed."))
    closure = Closure(day=day, label=label, created_by_id=actor.id)
    db.add(closure)
    audit.record(db, "deadline.closure_added", actor=actor, target=day.isoformat())
    return closure


def remove_closure(db: Session, actor: User, day: date) -> None:
    if actor.role != "admin":
        raise PermissionDenied(_l("Only administrators change the calendar."))
    closure = db.get(Closure, day)
    if closure is not None:
        db.delete(closure)
        audit.record(db, "deadline.closure_removed", actor=actor, target=day.isoformat())


def closures(db: Session) -> list[Closure]:
    return list(db.execute(select(Closure).order_by(Closure.day.desc())).scalars())
