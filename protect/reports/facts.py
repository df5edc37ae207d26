"""The delay report's own copy of the data: one narrow row per deadline clock, request, measure
and platform report of a submitted case (models.py: ``ClockFact``...).

Ranking the 400,000 deadlines of 100,000 cases once per grouping took a report made afresh
5-20 s (bench/RESULTS.md, "reports"). These rows carry what the report groups and ranks by,
worked out once: the Mexico City month, the time taken, the verdict, the case's state, kind of
beneficiary and gender. Their indexes hold them in the orders the report ranks by, so that a
percentile is one walk along an index (``LIMIT 1 OFFSET rank - 1``) and a count one range read,
whatever the period and selection. Codes and times only: no name, no text.

They follow the data: every change a report can see writes a case event, so ``refresh`` makes
again the rows of the cases with events newer than its mark, and all of them the first time,
when the facts' format changed, or when clocks were added without an event (a replay).
"""
from __future__ import annotations

from datetime import UTC, date, datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import String, and_, cast, delete, func, insert, literal, null, select, text, update
from sqlalchemy import case as sql_case
from sqlalchemy.exc import IntegrityError

from ..cases.models import Case, CaseEvent, Incident, Measure, OnlineThreat
from ..deadlines.calendar import TZ
from ..deadlines.models import Clock, DeadlinePolicy
from ..extensions import Session, rowcount, utcnow
from .models import ClockFact, FactsMark, MeasureFact, RequestFact, ThreatFact
from .sql import at, bucket, local_midnight, seconds_between

FORMAT = 2            # raised when what a fact row holds changes: every row is then made again
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)  # the open_until of a clock still running
MARK = "facts"
CASES_PER_BATCH = 500   # cases whose rows are made again in one statement each
# How late a late stage was, as a multiple of its legal term: upper bounds.
LATE_BINS = {"x2": (2, _l("Up to 2 times the term")), "x4": (4, _l("2 to 4 times")),
             "x8": (8, _l("4 to 8 times")), "more": (None, _l("More than 8 times"))}
UNSTATED = "unstated"
NOBODY = "nobody"  # the assignee of a request nobody is assigned to (user ids are hex)


def month_no(day: date) -> int:
    return day.year * 12 + day.month - 1


def month_day(no: int) -> date:
    return date(no // 12, no % 12 + 1, 1)


def _month_of(column, first: int, last: int):
    """The Mexico City month number of ``column`` (first..last; earlier times count as ``first``)."""
    starts = [local_midnight(month_day(n)) for n in range(first + 1, last + 1)]
    return sql_case((column.is_(None), null()), else_=literal(first) + bucket(column, starts))


WHO = ["state", "beneficiary", "gender"]


def first_aggressor():
    """The aggressor type of the case's first incident (one per case, so the breakdown partitions):
    the earliest date, then the first code alphabetically: MIN over "date|code", an index lookup
    with no sort per case."""
    first = (select(func.min(cast(Incident.occurred_on, String) + "|" + Incident.aggressor))
             .where(Incident.case_id == Case.id).correlate(Case).scalar_subquery())
    return func.coalesce(func.substr(first, 12, type_=String), "unknown", type_=String)


def _who():
    return [Case.state_code.label("state"), Case.beneficiary_type.label("beneficiary"),
            func.coalesce(Case.gender, UNSTATED).label("gender")]


def _of(cases, case_id=Case.id):
    """Every submitted case, or those of ``cases`` (case ids), asked of the source table's own
    case column (``case_id``): its index finds their rows without reading the others."""
    return [Case.submitted_at.is_not(None)] + ([] if cases is None else [case_id.in_(cases)])


def _clocks(months, cases):
    done = and_(Clock.stopped_at.is_not(None), Clock.state != "cancelled")
    spent = seconds_between(Clock.stopped_at, Clock.started_at) - Clock.paused_seconds
    term = seconds_between(Clock.due_at, Clock.started_at) - Clock.paused_seconds
    late = [(spent < term * limit, key) for key, (limit, _) in LATE_BINS.items() if limit]
    rows = select(
        Clock.id.label("clock_id"), Clock.case_id, Clock.stage, Clock.started_at,
        func.coalesce(Clock.stopped_at, at(FOREVER)).label("open_until"),
        _month_of(Clock.started_at, *months).label("start_month"),
        _month_of(Clock.stopped_at, *months).label("stop_month"),
        sql_case((done, spent)).label("spent"),
        sql_case((done, sql_case((Clock.state == "met", "on_time"), *late, else_="more"))).label("bin"),
        sql_case((done, seconds_between(Clock.stopped_at, Case.submitted_at))).label("journey"),
        sql_case((done, 1), else_=0).label("done"), Clock.stopped_at, *_who(), Case.assignee_id.label("assignee"),
    ).join(Case, Case.id == Clock.case_id).where(*_of(cases, Clock.case_id)).subquery()
    # The previous stop of the same stage and case, among the stops that count (met or late).
    previous = func.lag(rows.c.stop_month).over(partition_by=[rows.c.case_id, rows.c.stage, rows.c.done],
                                                 order_by=[rows.c.stopped_at, rows.c.clock_id])
    # The latest end of the same case's clocks started before this one.
    open_before = func.max(rows.c.open_until).over(partition_by=rows.c.case_id,
                                                   order_by=[rows.c.started_at, rows.c.clock_id], rows=(None, -1))
    columns = ["clock_id", "case_id", "stage", "started_at", "open_until", "start_month", "stop_month", "spent",
               "bin", "journey"]
    return ClockFact, select(*[rows.c[c] for c in columns], sql_case((rows.c.done == 1, previous)),
                             *[rows.c[c] for c in WHO + ["assignee"]], open_before), \
        columns + ["prev_month", *WHO, "assignee", "prev_open"]


def _requests(months, cases):
    triaged = (select(CaseEvent.case_id, func.min(CaseEvent.at).label("at"),
                      func.max(CaseEvent.data["procedure"].as_string()).label("procedure"),
                      func.max(CaseEvent.data["reason"].as_string()).label("reason"))
               .where(CaseEvent.kind == "triaged", *([] if cases is None else [CaseEvent.case_id.in_(cases)]))
               .group_by(CaseEvent.case_id).subquery())
    query = (select(Case.id, Case.submitted_at, _month_of(Case.submitted_at, *months), triaged.c.at,
                    triaged.c.procedure,
                    sql_case((triaged.c.procedure == "not_admitted", func.coalesce(triaged.c.reason, "other"))),
                    func.coalesce(Case.assignee_id, NOBODY), *_who(), first_aggressor())
             .outerjoin(triaged, triaged.c.case_id == Case.id).where(*_of(cases)))
    return RequestFact, query, ["case_id", "submitted_at", "month", "triaged_at", "outcome", "reason", "assignee",
                                *WHO, "aggressor"]


def _previous(query, at_, groups: dict[str, list[str]]):
    """``query``'s columns, and for each of ``groups`` (a name -> the columns that group by, within
    the case) the month of the case's previous row of the same group: a row is its case's first
    of the group in a span of months that starts after that month (distinct cases by one count)."""
    rows = query.subquery()
    previous = [func.lag(rows.c.month).over(partition_by=[rows.c.case_id, *[rows.c[c] for c in columns]],
                                            order_by=[rows.c[at_], rows.c.id]).label(name)
                for name, columns in groups.items()]
    return select(*[c for c in rows.c if c.name != "id"], *previous)


def _measures(months, cases):
    query = (select(Measure.id, Measure.id.label("measure_id"), Measure.case_id, Measure.authority, Measure.kind,
                    Measure.decided_at, _month_of(Measure.decided_at, *months).label("month"),
                    Measure.implemented_at, Measure.withdrawn_at,
                    sql_case((Measure.implemented_at.is_not(None),
                              seconds_between(Measure.implemented_at, Measure.decided_at))).label("spent"), *_who())
             .join(Case, Case.id == Measure.case_id).where(*_of(cases, Measure.case_id)))
    return MeasureFact, _previous(query, "decided_at", {"prev_month": [], "prev_authority_month": ["authority"],
                                                        "prev_kind_month": ["kind"]}), \
        ["measure_id", "case_id", "authority", "kind", "decided_at", "month", "implemented_at", "withdrawn_at", "spent",
         *WHO, "prev_month", "prev_authority_month", "prev_kind_month"]


def _threats(months, cases):
    query = (select(OnlineThreat.id, OnlineThreat.id.label("threat_id"), OnlineThreat.case_id, OnlineThreat.platform,
                    OnlineThreat.reported_at, _month_of(OnlineThreat.reported_at, *months).label("month"),
                    OnlineThreat.responded_at, OnlineThreat.removed_at,
                    seconds_between(OnlineThreat.responded_at, OnlineThreat.reported_at).label("answer_time"),
                    seconds_between(OnlineThreat.removed_at, OnlineThreat.reported_at).label("removal_time"), *_who())
             .join(Case, Case.id == OnlineThreat.case_id)
             .where(*_of(cases, OnlineThreat.case_id), OnlineThreat.reported_at.is_not(None)))
    return ThreatFact, _previous(query, "reported_at", {"prev_month": [], "prev_platform_month": ["platform"]}), \
        ["threat_id", "case_id", "platform", "reported_at", "month", "responded_at", "removed_at", "answer_time",
         "removal_time", *WHO, "prev_month", "prev_platform_month"]


KINDS = (_clocks, _requests, _measures, _threats)


def data_state(db: Session) -> tuple[int | None, int, int | None]:
    """What the reports are made of, in one cheap statement: the newest case event, the number of
    clocks (the facts follow these two) and the newest deadline policy (the terms shown)."""
    row = db.execute(select(select(func.max(CaseEvent.id)).scalar_subquery(),
                            select(func.count()).select_from(Clock).scalar_subquery(),
                            select(func.max(DeadlinePolicy.id)).scalar_subquery())).one()
    return row[0], row[1], row[2]


def refresh(db: Session, state: list | None = None) -> str:
    """Bring the facts up to the data, committed: "current" (nothing to do, or another refresh
    is doing it), "cases" (the rows of the cases with new events made again) or "all".
    ``state``: ``data_state`` as the caller just read it."""
    event_id, clocks, _ = state or data_state(db)
    mark = db.get(FactsMark, MARK)
    if mark is not None and (mark.event_id, mark.clocks, mark.format) == (event_id, clocks, FORMAT):
        db.commit()
        return "current"
    # Everything again the first time, for a new format, or for clocks added without an event.
    everything = mark is None or mark.format != FORMAT or (mark.clocks != clocks and mark.event_id == event_id)
    since = 0 if mark is None else mark.event_id or 0
    values = {"format": FORMAT, "event_id": event_id, "clocks": clocks, "made_at": utcnow()}
    if mark is None:
        try:
            db.add(FactsMark(name=MARK, edition=1, **values))
            db.flush()
        except IntegrityError:   # two first refreshes at once: the other one made them
            db.rollback()
            return "current"
    elif not rowcount(db.execute(update(FactsMark).where(FactsMark.name == MARK, FactsMark.edition == mark.edition)
                                 .values(edition=mark.edition + 1, **values))):
        db.rollback()  # another refresh claimed it first
        return "current"
    first = db.execute(select(func.min(Case.submitted_at))).scalar()
    now_month = month_no(local_month(utcnow()))
    months = (month_no(local_month(first)) if first else now_month, now_month + 1)
    if everything:
        for kind in KINDS:
            model, query, columns = kind(months, None)
            # Indexes made once over the whole table are several times faster than kept row by row.
            indexes = model.__table__.indexes
            for index in indexes:
                index.drop(db.connection())
            db.execute(delete(model))
            db.execute(insert(model).from_select(columns, query))
            for index in indexes:
                index.create(db.connection())
    else:
        # The ids of the cases with new events (no more: codes to look rows up by), a batch at a time.
        changed = db.execute(select(CaseEvent.case_id).where(CaseEvent.id > since).distinct()).scalars().all()
        for start in range(0, len(changed), CASES_PER_BATCH):
            batch = changed[start:start + CASES_PER_BATCH]
            for kind in KINDS:
                model, query, columns = kind(months, batch)
                db.execute(delete(model).where(model.case_id.in_(batch)))
                db.execute(insert(model).from_select(columns, query))
    db.commit()
    if everything and db.get_bind().dialect.name == "postgresql":
        # Fresh statistics for the planner, and pages marked all-visible for index-only scans
        # (else every index entry the report walks is checked against its table row).
        with db.get_bind().engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE report_clocks, report_requests, report_measures, report_threats"))
    return "all" if everything else "cases"


def local_month(moment: datetime) -> date:
    return moment.astimezone(TZ).date().replace(day=1)
