"""Delay reports: how long protection takes, from the clocks and the timeline, in SQL.

Everything is computed in the database, never by loading cases: counts by
GROUP BY and order statistics by walking an index, over the report's own copy
of the data (facts.py), in a fixed number of statements whatever the number
of cases (``_Reader``), half of them on a second connection at once. Python
only adds the finest groups up into the coarser ones, arranges the aggregates
into tables and applies the suppression rule (``suppression.py``).

Definitions (also in the report's method notes, templates/reports/_method.html):

- The period is whole months, Mexico City time. Every figure is "as of" the
  end of the period (or now, if that is earlier): what happens later does not
  change the report of a past period (but for the caseload, which follows
  whom each case is assigned to now).
- A stage's time is that of its deadline clock: from its start event to its
  stop event, minus the time it was paused waiting on the petitioner. A stage
  counts in the period in which it ended. "On time" is the clock's own
  verdict (stopped before its due time, under the policy version it started
  with).
- Percentiles are nearest-rank, the same SQL on SQLite and PostgreSQL: of n
  values in ascending order, the p-th percentile is value number ceil(p·n/100)
  (the median is p = 50: the lower middle value when n is even).
- Waiting: clocks started before the end of the period and not stopped by
  then; their age is calendar time since they started.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

from flask import current_app
from flask_babel import get_locale, gettext, ngettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from ..accounts.models import User
from ..audit import service as audit
from ..cases import codes
from ..cases.models import Case, CaseEvent, Measure, MeasureType, OnlineThreat
from ..deadlines.calendar import TZ
from ..deadlines.models import Clock
from ..deadlines.service import STAGES, current_policies
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import Session, UTCDateTime, rowcount, utcnow
from ..kept import Kept
from . import facts
from .facts import LATE_BINS, NOBODY, UNSTATED, first_aggressor
from .models import PreparedReport
from .sql import at, bucket, local_midnight, next_month, seconds_between
from .suppression import Cell, Network, suppress

MAX_MONTHS = 60
HOUR, DAY = 3600, 86400
# Backlog age bands: upper bounds in days (the last is open).
AGE_BANDS = {"week": (7, _l("Less than 1 week")), "weeks": (30, _l("1 to 4 weeks")),
             "months": (91, _l("1 to 3 months")), "half_year": (182, _l("3 to 6 months")),
             "older": (None, _l("More than 6 months"))}
OUTCOMES = {"extraordinary": _l("Admitted, extraordinary procedure"), "ordinary": _l("Admitted, ordinary procedure"),
            "not_admitted": _l("Not admitted"), "pending": _l("No decision yet")}
MEASURE_STATES = {"implemented": _l("Implemented"), "pending": _l("Not implemented yet"),
                  "withdrawn": _l("Withdrawn before implementation")}
GENDERS = {**codes.GENDERS, UNSTATED: _l("Not stated (or a collective)")}
# Who asked: the requests received add up along each of these (one value per case).
BREAKDOWNS = {"state": codes.STATES, "beneficiary": codes.BENEFICIARY_TYPES, "gender": GENDERS,
              "aggressor": codes.AGGRESSOR_TYPES}
BREAKDOWN_TITLES = {"state": _l("By state"), "beneficiary": _l("By kind of beneficiary"), "gender": _l("By gender"),
                    "aggressor": _l("By type of aggressor (of the first incident reported)")}
# The stages whose times are also broken down by who asked, and by what.
BROKEN_DOWN = ("triage", "implementation")
TIMED_BREAKDOWNS = ("state", "beneficiary", "gender")


# -- what is asked ------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    first: date   # first day of the first month
    last: date    # first day of the last month

    @property
    def months(self) -> list[date]:
        out, month = [], self.first
        while month <= self.last:
            out.append(month)
            month = next_month(month)
        return out

    @property
    def start(self) -> datetime:
        return local_midnight(self.first)

    @property
    def end(self) -> datetime:
        return local_midnight(next_month(self.last))


def previous_month(day: date) -> date:
    return date(day.year - (day.month == 1), (day.month - 2) % 12 + 1, 1)


def this_month() -> date:
    today = utcnow().astimezone(TZ).date()
    return today.replace(day=1)


def latest_month(role: str) -> date:
    """Donors see complete months only (a past report never changes); supervisors also the current one."""
    current = this_month()
    return current if role == "supervisor" else previous_month(current)


def default_period(role: str) -> Period:
    last = first = latest_month(role)
    for _ in range(11):
        first = previous_month(first)
    return Period(first, last)


def check_period(viewer: User, period: Period) -> Period:
    if period.last < period.first:
        raise DomainError(_l("The last month comes before the first one."))
    latest = latest_month(viewer.role)
    if period.last > latest:
        raise DomainError(_l("The report covers the months up to %(month)s; choose an earlier last month.",
                             month=latest.strftime("%Y-%m")))
    if len(period.months) > MAX_MONTHS:
        raise DomainError(_l("Choose at most %(n)d months.", n=MAX_MONTHS))
    return period


@dataclass(frozen=True)
class Filters:
    """Which cases: ``None`` is any; a donor's scope narrows every choice."""

    states: tuple[str, ...] | None = None
    beneficiaries: tuple[str, ...] | None = None
    gender: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in (("states", self.states), ("beneficiaries", self.beneficiaries),
                                  ("gender", self.gender)) if v is not None}

    @classmethod
    def from_dict(cls, found: dict) -> Filters:
        states, beneficiaries = (tuple(found[k]) if k in found else None for k in ("states", "beneficiaries"))
        return cls(states, beneficiaries, found.get("gender"))


def scope_of(user: User) -> Filters:
    """What a viewer may see at all: a donor's scope ({"states": [...], "beneficiaries": [...]})."""
    return _scope(user.report_scope if user.role == "donor" else None)


def _scope(scope: dict | None) -> Filters:
    scope = scope or {}
    states = tuple(s for s in scope.get("states") or () if s in codes.STATES) or None
    beneficiaries = tuple(b for b in scope.get("beneficiaries") or () if b in codes.BENEFICIARY_TYPES) or None
    return Filters(states, beneficiaries)


def narrow(viewer: User, *, state: str | None = None, beneficiary: str | None = None,
           gender: str | None = None) -> Filters:
    """The viewer's scope narrowed by the filters chosen; a choice outside the scope is refused."""
    scope = scope_of(viewer)
    states, beneficiaries = scope.states, scope.beneficiaries
    if state:
        if state not in codes.STATES or (states is not None and state not in states):
            raise DomainError(_l("Choose a state from the list."))
        states = (state,)
    if beneficiary:
        if beneficiary not in codes.BENEFICIARY_TYPES or (beneficiaries is not None and beneficiary not in beneficiaries):
            raise DomainError(_l("Choose a kind of beneficiary from the list."))
        beneficiaries = (beneficiary,)
    if gender and gender not in GENDERS:
        raise DomainError(_l("Choose a gender from the list."))
    return Filters(states, beneficiaries, gender or None)


def set_scope(db: Session, actor: User, user: User, *, states, beneficiaries) -> None:
    """Limit a donor's reports to some states and kinds of beneficiary (none chosen: everything)."""
    if actor.role != "admin":
        raise PermissionDenied(_l("Only administrators change accounts."))
    states = sorted(set(states or ()))
    beneficiaries = sorted(set(beneficiaries or ()))
    if any(s not in codes.STATES for s in states) or any(b not in codes.BENEFICIARY_TYPES for b in beneficiaries):
        raise DomainError(_l("Choose states and kinds of beneficiary from the lists."))
    if (states or beneficiaries) and user.role != "donor":
        raise DomainError(_l("Only donor accounts have a report scope."))
    scope = {"states": states, "beneficiaries": beneficiaries} if states or beneficiaries else None
    if scope != user.report_scope:
        user.report_scope = scope
        audit.record(db, "user.report_scope_changed", actor=actor, target=user.id,
                     states=states, beneficiaries=beneficiaries)


# -- SQL pieces --------------------------------------------------------------------------

def _month_ends(period: Period) -> list[datetime]:
    return [local_midnight(next_month(m)) for m in period.months]


def _month(column, period: Period):
    """The month of ``column`` as 0..n-1 (Mexico City months); the caller keeps it within the period."""
    return bucket(column, _month_ends(period)[:-1])


def _of_cases(query, case_id, filters: Filters):
    """``query`` narrowed to the cases of ``filters`` (no join at all when they take every case)."""
    if filters == Filters():
        return query
    return query.join(Case, Case.id == case_id).where(*_case_conditions(filters))


def _case_conditions(filters: Filters) -> list:
    conditions: list = [Case.submitted_at.is_not(None)]
    if filters.states is not None:
        conditions.append(Case.state_code.in_(filters.states))
    if filters.beneficiaries is not None:
        conditions.append(Case.beneficiary_type.in_(filters.beneficiaries))
    if filters.gender == UNSTATED:
        conditions.append(Case.gender.is_(None))
    elif filters.gender:
        conditions.append(Case.gender == filters.gender)
    return conditions


def _case_dims(*, aggressor: bool = True):
    return [Case.state_code.label("state"), Case.beneficiary_type.label("beneficiary"),
            func.coalesce(Case.gender, UNSTATED).label("gender")] + (
        [first_aggressor().label("aggressor")] if aggressor else [])


def _open_at(moment: datetime):
    return and_(Clock.started_at < at(moment), or_(Clock.stopped_at.is_(None), Clock.stopped_at >= at(moment)))


# -- the families of figures: one row set each, aggregated in one statement (and listed by the drill-down)

@dataclass(frozen=True)
class Ask:
    period: Period
    filters: Filters
    as_of: datetime


def _done(ask: Ask):
    """Stage clocks that stopped (met or late) within the period."""
    spent = seconds_between(Clock.stopped_at, Clock.started_at) - Clock.paused_seconds
    term = seconds_between(Clock.due_at, Clock.started_at) - Clock.paused_seconds
    late = [(spent < term * limit, key) for key, (limit, _) in LATE_BINS.items() if limit]
    # (Times are not broken down by aggressor: finding each clock's case's first incident would
    # cost more than the rest of this row set; requests are.)
    return (select(Clock.case_id, Clock.stage, _month(Clock.stopped_at, ask.period).label("month"),
                   sql_case((Clock.state == "met", 1), else_=0).label("met"),
                   sql_case((Clock.state == "met", "on_time"), *late, else_="more").label("bin"),
                   spent.label("spent"), seconds_between(Clock.stopped_at, Case.submitted_at).label("journey"),
                   *_case_dims(aggressor=False))
            .join(Case, Case.id == Clock.case_id)
            # Stopped and not cancelled: met or late. (Said so, SQLite reads the clocks in one pass
            # instead of through the index on state, which would visit most of the table by lookups.)
            .where(Clock.stopped_at >= at(ask.period.start), Clock.stopped_at < at(ask.as_of),
                   Clock.state != "cancelled", *_case_conditions(ask.filters)))


def _waiting(ask: Ask):
    """Stage clocks still open at the end of the period (started before it, not stopped by then)."""
    age = seconds_between(at(ask.as_of), Clock.started_at)
    band = sql_case(*[(age < limit * DAY, key) for key, (limit, _) in AGE_BANDS.items() if limit], else_="older")
    return (select(Clock.case_id, Clock.stage, age.label("age"), band.label("band"),
                   Case.assignee_id.label("assignee"))
            .join(Case, Case.id == Clock.case_id)
            .where(_open_at(ask.as_of), *_case_conditions(ask.filters)))


def _requests(ask: Ask):
    """Requests received in the period, with their triage decision as of its end."""
    # Grouped by case (there is one triage per case), so it is read once and joined, not
    # looked up per case through the (kind, at) index SQLite would pick without statistics.
    triaged = (select(CaseEvent.case_id, func.max(CaseEvent.data["procedure"].as_string()).label("procedure"),
                      func.max(CaseEvent.data["reason"].as_string()).label("reason"))
               .where(CaseEvent.kind == "triaged", CaseEvent.at >= at(ask.period.start),  # after the request
                      CaseEvent.at < at(ask.as_of))
               .group_by(CaseEvent.case_id).subquery())
    outcome = func.coalesce(triaged.c.procedure, "pending")
    return (select(Case.id.label("case_id"), _month(Case.submitted_at, ask.period).label("month"),
                   outcome.label("outcome"),
                   sql_case((outcome == "not_admitted", func.coalesce(triaged.c.reason, "other")),
                            else_=null()).label("reason"),
                   func.coalesce(Case.assignee_id, NOBODY).label("assignee"), *_case_dims())
            .outerjoin(triaged, triaged.c.case_id == Case.id)
            .where(Case.submitted_at >= at(ask.period.start), Case.submitted_at < at(ask.as_of),
                   *_case_conditions(ask.filters)))


def _measures(ask: Ask):
    """Measures decided in the period, and where they stood at its end."""
    end = at(ask.as_of)
    status = sql_case((Measure.implemented_at < end, "implemented"), (Measure.withdrawn_at < end, "withdrawn"),
                      else_="pending")
    spent = sql_case((Measure.implemented_at < end, seconds_between(Measure.implemented_at, Measure.decided_at)),
                     else_=null())
    return _of_cases(select(Measure.case_id, Measure.authority, Measure.kind, status.label("status"),
                            _month(Measure.decided_at, ask.period).label("month"), spent.label("spent"))
                     .where(Measure.decided_at >= at(ask.period.start), Measure.decided_at < end),
                     Measure.case_id, ask.filters)


def _threats(ask: Ask):
    """Online threats reported to their platform in the period, and the platform's answer by its end."""
    end = at(ask.as_of)
    answered = OnlineThreat.responded_at < end
    removed = OnlineThreat.removed_at < end
    return _of_cases(select(
        OnlineThreat.case_id, OnlineThreat.platform, _month(OnlineThreat.reported_at, ask.period).label("month"),
        sql_case((answered, 1), else_=0).label("answered"),
        sql_case((answered, seconds_between(OnlineThreat.responded_at, OnlineThreat.reported_at)),
                 else_=null()).label("answer_time"),
        sql_case((removed, seconds_between(OnlineThreat.removed_at, OnlineThreat.reported_at)),
                 else_=null()).label("removal_time"))
        .where(OnlineThreat.reported_at >= at(ask.period.start), OnlineThreat.reported_at < end),
        OnlineThreat.case_id, ask.filters)

FAMILIES = {"done": _done, "waiting": _waiting, "requests": _requests, "measures": _measures,
            "threats": _threats}


class Agg(NamedTuple):
    """One group's figures: rows, distinct cases; or the order statistics of a value (nearest rank).
    (A tuple: tens of thousands are made and kept per report.)"""

    n: int = 0
    cases: int | None = 0   # None: not counted at this level
    median: int | None = None
    p90: int | None = None
    worst: int | None = None
    met: int | None = None


NONE = Agg()
AGG_FIELDS = len(Agg._fields)

def read_figures(db: Session, ask: Ask, state: list | None = None) -> dict:
    """Every aggregate the report of ``ask`` is made of, read from the report's copy of the data
    (brought up to the data first), as JSON: per family and level, rows of [*group keys, *Agg];
    and the clocks open at the month ends."""
    facts.refresh(db, state)
    # The database's work is most of a report made afresh: its two halves run at once, the
    # second on a connection of its own (both backends run two readers on two cores). Each half
    # reads one snapshot, so a refresh committed between their starts shows in one only; every
    # sum the suppression relies on lies within one family, hence within one half.
    with ThreadPoolExecutor(max_workers=1) as pool:
        apart = pool.submit(_read_apart, db.get_bind(), ask, SECOND_HALF)
        found = _Reader(db, ask).read(FIRST_HALF)
        found.update(apart.result())
    figures: dict = {name: {level: [[*key, *agg] for key, agg in groups.items()] for level, groups in levels.items()}
                     for name, levels in found.items() if name != "open_at"}
    figures["open_at"] = found["open_at"]
    return figures


# The families of figures read on each connection: the halves take about as long.
FIRST_HALF = ("done", "waiting", "open_at")
SECOND_HALF = ("requests", "measures", "threats")


def _read_apart(bind, ask: Ask, families: tuple[str, ...]) -> dict:
    with OrmSession(bind) as session:
        return _Reader(session, ask).read(families)


def _thaw(figures: dict) -> dict:
    """``read_figures``' JSON as the builder reads it: per family and level, group keys -> Agg."""
    out: dict = {name: {level: {tuple(row[:-AGG_FIELDS]): Agg(*row[-AGG_FIELDS:]) for row in rows}
                        for level, rows in levels.items()} for name, levels in figures.items() if name != "open_at"}
    out["open_at"] = [tuple(row) for row in figures["open_at"]]
    return out


# -- the figures, read from the facts ---------------------------------------------------------

@dataclass(frozen=True)
class _Rank:
    """An order statistic wanted: of the ``n`` values of ``value`` in ``table`` where ``where`` (with
    ``params``) holds, along ``index``, the one of rank ``rank``; it goes to ``found[key].stat``.
    ``by``: the column the index orders them by, if not ``value`` itself (``reverse``: the value
    grows as it falls)."""

    found: dict
    key: tuple
    stat: str
    table: str
    index: str
    value: str
    where: str
    params: dict
    rank: int
    n: int
    by: str | None = None
    reverse: bool = False


RANKS_PER_STATEMENT = 50


class _Reader:
    """The aggregates of ``ask`` from the report's copy of the data (facts.py), as ``read_figures``
    keeps them: per family and level, group keys -> ``Agg``.

    Counts are range reads grouped at the finest level that stays small (a few thousand groups at
    most), added up here into the coarser levels. An order statistic of a group of n values is the
    value of rank r = ceil(p·n/100) (nearest rank), found by one walk along the index that holds
    the group's values in order: ``LIMIT 1 OFFSET r - 1``, from the top for the upper ranks, with
    the n from the counts. Stops, requests, measures and platform reports happen before now, so
    "within the period" is "within its months" (as of its end or now, whichever is earlier).
    """

    RANKS = {"median": 50, "p90": 90, "worst": 100}

    def __init__(self, db: Session, ask: Ask):
        self.db, self.ask = db, ask
        self.sqlite = db.get_bind().dialect.name == "sqlite"
        self.first = facts.month_no(ask.period.first)
        self.params: dict = {"first": self.first, "last": self.first + len(ask.period.months) - 1,
                             "as_of": ask.as_of}
        who = []
        for column, chosen in (("state", ask.filters.states), ("beneficiary", ask.filters.beneficiaries),
                               ("gender", ask.filters.gender and (ask.filters.gender,))):
            if chosen:
                names = [f"w_{column}_{i}" for i in range(len(chosen))]
                self.params.update(zip(names, chosen, strict=True))
                who.append(f" AND {column} IN ({', '.join(':' + n for n in names)})")
        self.who = "".join(who)
        self.wanted: list[_Rank] = []

    def read(self, families: tuple[str, ...]) -> dict:
        """The figures of ``families`` (names of methods), with the order statistics they ask for,
        in one transaction of their own (a snapshot of the data on both backends)."""
        self.db.commit()
        if self.sqlite:
            self.db.execute(text("BEGIN"))   # (the driver would read each statement apart)
        else:
            self.db.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            # For this transaction only: JIT compiling these statements costs more than it saves,
            # and the groupings by case fit in memory instead of spilling to disk.
            self.db.execute(text("SET LOCAL jit = off"))
            self.db.execute(text("SET LOCAL work_mem = '64MB'"))
        found = {name: getattr(self, name)() for name in families}
        self.read_ranks()
        self.db.commit()
        return found

    def run(self, sql: str, params: dict | None = None):
        params = {**self.params, **(params or {})}
        statement = text(sql).bindparams(*[bindparam(k, type_=UTCDateTime()) for k, v in params.items()
                                           if isinstance(v, datetime) and f":{k}" in sql])
        return self.db.execute(statement, params).all()

    def month(self, no: int) -> str:
        return str(no - self.first)

    def rank(self, found: dict, key: tuple, n: int, stats: tuple[str, ...], table: str, index: str,
             column: str, where: str = "", **params) -> None:
        """Ask for order statistics of the ``n`` values of ``column`` in a group."""
        found[key] = found.get(key, Agg(cases=None))._replace(n=n)
        for stat in stats if n else ():
            self.wanted.append(_Rank(found, key, stat, table, index, column, where, params,
                                     (self.RANKS[stat] * n + 99) // 100, n))

    def read_ranks(self) -> None:
        """Every order statistic asked for: fifty index walks to a statement."""
        wanted, self.wanted = self.wanted, []
        # PostgreSQL plans a compound of several hundred subqueries in more time than it takes to run
        # them (220 ms for 400, 20 ms for 140): a few dozen to a statement.
        for start in range(0, len(wanted), RANKS_PER_STATEMENT):
            parts, params = [], {}
            for i, w in enumerate(wanted[start:start + RANKS_PER_STATEMENT]):
                where = w.where
                for name, v in w.params.items():
                    where = where.replace(f":{name}", f":r{i}_{name}")
                    params[f"r{i}_{name}"] = v
                hint = f" INDEXED BY {w.index}" if self.sqlite else ""
                # The upper ranks are found from the top: the shorter walk.
                top, offset = (True, w.n - w.rank) if 2 * w.rank > w.n else (False, w.rank - 1)
                by = w.by or w.value
                parts.append(f"SELECT {i} AS i, (SELECT {w.value} FROM {w.table}{hint} WHERE {by} IS NOT NULL"
                             f"{where}{self.who} ORDER BY {by} {'DESC' if top != w.reverse else 'ASC'} "
                             f"LIMIT 1 OFFSET {offset}) AS v")
            for i, v in self.run(" UNION ALL ".join(parts), params):
                w = wanted[start + i]
                w.found[w.key] = w.found[w.key]._replace(**{w.stat: v})

    # -- the families ---------------------------------------------------------------------
    def done(self) -> dict:
        """Stage clocks stopped (met or late) within the period."""
        out: dict = {level: {} for level in ("cases", "fine", "stage", "stage_month", "journey", *TIMED_BREAKDOWNS)}
        in_period = " AND stop_month BETWEEN :first AND :last"
        hint = " INDEXED BY ix_report_clocks_done" if self.sqlite else ""
        for stage, month, bin_, n, firsts in self.run(
                f"SELECT stage, stop_month, bin, COUNT(*), {_first('prev_month', ':first')} FROM report_clocks{hint} "
                f"WHERE stop_month BETWEEN :first AND :last AND bin IS NOT NULL{self.who} GROUP BY stage, stop_month, bin"):
            met = n if bin_ == "on_time" else 0
            out["fine"][(stage, self.month(month), bin_)] = Agg(n, None, met=met)
            for level, key, cases in (("cases", (stage,), firsts), ("stage", (stage,), None),
                                      ("stage_month", (stage, self.month(month)), None)):
                was = out[level].get(key, Agg(0, None if cases is None else 0, met=0))
                out[level][key] = Agg(was.n + n, None if cases is None else (was.cases or 0) + cases,
                                      met=(was.met or 0) + met)
        for (stage,), agg in out["stage"].items():
            self.rank(out["stage"], (stage,), agg.n, ("median", "p90", "worst"), "report_clocks",
                      "ix_report_clocks_spent", "spent", " AND stage = :stage" + in_period, stage=stage)
            if stage == "implementation":
                out["journey"][()] = Agg(agg.n, None, met=agg.met)
                self.rank(out["journey"], (), agg.n, ("median", "p90", "worst"), "report_clocks",
                          "ix_report_clocks_journey", "journey", " AND stage = :stage" + in_period, stage=stage)
        for (stage, month), agg in out["stage_month"].items():
            self.rank(out["stage_month"], (stage, month), agg.n, ("median",), "report_clocks",
                      "ix_report_clocks_month_spent", "spent", " AND stage = :stage AND stop_month = :month",
                      stage=stage, month=int(month) + self.first)
        stages = ", ".join(f"'{s}'" for s in BROKEN_DOWN)
        by: dict[str, dict] = {dim: {} for dim in TIMED_BREAKDOWNS}
        hint = " INDEXED BY ix_report_clocks_who" if self.sqlite else ""
        for stage, _, *values, n, met in self.run(
                f"SELECT stage, stop_month, {', '.join(TIMED_BREAKDOWNS)}, COUNT(*), "
                f"SUM(CASE WHEN bin = 'on_time' THEN 1 ELSE 0 END) FROM report_clocks{hint} WHERE stage IN ({stages}) "
                f"AND stop_month BETWEEN :first AND :last AND bin IS NOT NULL{self.who} "
                f"GROUP BY stage, stop_month, {', '.join(TIMED_BREAKDOWNS)}"):
            for dim, value in zip(TIMED_BREAKDOWNS, values, strict=True):
                was = by[dim].get((stage, value), (0, 0))
                by[dim][(stage, value)] = (was[0] + n, was[1] + met)
        for dim, groups in by.items():
            for (stage, value), (n, met) in groups.items():
                out[dim][(stage, value)] = Agg(n, None, met=met)
                self.rank(out[dim], (stage, value), n, ("median",), "report_clocks", f"ix_report_clocks_{dim}_spent",
                          "spent", f" AND stage = :stage AND {dim} = :value" + in_period, stage=stage, value=value)
        return out

    def requests(self) -> dict:
        """Requests received in the period, with their triage decision as of its end."""
        out: dict = {level: {} for level in ("all", "month", "outcome", "cell", "reason", "assignee", *BREAKDOWNS)}
        where = f"FROM report_requests WHERE month BETWEEN :first AND :last{self.who}"
        # Grouped in the order of an index each (no sort), by month first: added up here.
        for month, result, why, n, decided in self.run(
                f"SELECT month, outcome, reason, COUNT(*), SUM(CASE WHEN triaged_at < :as_of THEN 1 ELSE 0 END) "
                f"{where} GROUP BY month, outcome, reason"):
            month = self.month(month)
            for outcome, count in ((result or "pending", decided), ("pending", n - decided)):
                for level, key in (("all", ()), ("month", (month,)), ("outcome", (outcome,)), ("cell", (month, outcome)),
                                   ("reason", (why if outcome == "not_admitted" else None,))):
                    _add(out[level], key, count)
        for _, assignee, n in self.run(f"SELECT month, assignee, COUNT(*) {where} GROUP BY month, assignee"):
            _add(out["assignee"], (assignee,), n)
        hint = " INDEXED BY ix_report_requests_{}" if self.sqlite else ""
        for dim, _, value, n in self.run(" UNION ALL ".join(
                f"SELECT '{dim}', month, {dim}, COUNT(*) FROM report_requests{hint.format(dim)} WHERE month BETWEEN "
                f":first AND :last{self.who} GROUP BY month, {dim}" for dim in BREAKDOWNS)):
            _add(out[dim], (value,), n)
        return {level: {key: Agg(n, None) for key, n in groups.items()} for level, groups in out.items()}

    def measures(self) -> dict:
        """Measures decided in the period, and where they stood at its end."""
        implemented, withdrawn = (f"({at_} IS NOT NULL AND {at_} < :as_of)" for at_ in ("implemented_at", "withdrawn_at"))
        statuses = {"implemented": implemented, "withdrawn": f"NOT {implemented} AND {withdrawn}",
                    "pending": f"NOT {implemented} AND NOT {withdrawn}"}
        counts: dict = {level: {} for level in ("all", "status", "authority", "authority_status", "kind",
                                                 "kind_status", "month", "s_authority", "s_kind", "s_month", "s_all")}
        cases: dict = {level: {} for level in ("all", "authority", "kind")}
        sums = ", ".join(f"SUM(CASE WHEN {test} THEN 1 ELSE 0 END)" for test in statuses.values())
        for month, authority, kind, *found in self.run(
                f"SELECT month, authority, kind, {sums}, {_first('prev_month', ':first')}, "
                f"{_first('prev_authority_month', ':first')}, {_first('prev_kind_month', ':first')} "
                f"FROM report_measures WHERE month BETWEEN :first AND :last{self.who} GROUP BY month, authority, kind"):
            month = self.month(month)
            for st, n in zip(statuses, found[:3], strict=True):
                for level, key in (("all", ()), ("status", (st,)), ("authority", (authority,)),
                                   ("authority_status", (authority, st)), ("kind", (kind,)), ("kind_status", (kind, st)),
                                   ("month", (month,))):
                    _add(counts[level], key, n)
                if st == "implemented":
                    for level, key in (("s_authority", (authority,)), ("s_kind", (kind,)), ("s_month", (month,)),
                                       ("s_all", ())):
                        _add(counts[level], key, n)
            for level, key, first in zip(("all", "authority", "kind"), ((), (authority,), (kind,)), found[3:],
                                         strict=True):
                _add(cases[level], key, first)
        out = {level: {key: Agg(n, cases[level].get(key) if level in cases else None) for key, n in groups.items()
                       if n or level in cases} for level, groups in counts.items()}
        self.case_flags(out, "report_measures", "ix_report_measures_case", "month BETWEEN :first AND :last",
                        {("status", (st,)): test for st, test in statuses.items()})
        for level, column, stats in (("s_authority", "authority", ("median", "p90", "worst")),
                                     ("s_kind", "kind", ("median", "p90", "worst")), ("s_month", "month", ("median",)),
                                     ("s_all", None, ("median", "p90", "worst"))):
            for key, agg in list(out[level].items()):
                value = int(key[0]) + self.first if column == "month" else key[0] if column else None
                self.rank(out[level], key, agg.n, stats, "report_measures",
                          f"ix_report_measures_{column}_spent" if column else "ix_report_measures_spent", "spent",
                          _group_in_period(column) + " AND implemented_at < :as_of", value=value)
        return out

    def case_flags(self, out: dict, table: str, index: str, where: str, flags: dict[tuple, str]) -> None:
        """The distinct cases of groups whose rows depend on the time the figures are as of, where
        most cases have several rows: each case's rows grouped (along ``index``, by case), a flag
        per group (level and key -> the SQL condition of its rows)."""
        hint = f" INDEXED BY {index}" if self.sqlite else ""
        names = list(flags)
        per_case = "".join(f", MAX(CASE WHEN {flags[name]} THEN 1 ELSE 0 END) AS c{i}" for i, name in enumerate(names))
        found = self.run(f"SELECT {', '.join(f'SUM(c{i})' for i in range(len(names)))} FROM "
                         f"(SELECT case_id{per_case} FROM {table}{hint} WHERE {where}{self.who} GROUP BY case_id) per_case")
        for (level, key), cases in zip(names, found[0], strict=True):
            if key in out[level]:
                out[level][key] = out[level][key]._replace(cases=cases or 0)

    def repeats(self, cases: dict, table: str, where: str, repeated: str, columns: dict[str, str],
                levels: dict[str, tuple[str, ...]]) -> None:
        """The distinct cases of groups whose rows depend on the time the figures are as of, where
        few cases have several rows: ``cases`` (level -> key -> rows) less the rows of a case past
        its first in the group. Only the cases with a row that ``repeated`` says is not its case's
        first where ``where`` holds are read: their rows grouped by ``columns`` (name -> SQL);
        ``levels``: level -> the columns of its key."""
        names = list(columns)
        grouping = ", ".join(str(i) for i in range(1, len(names) + 2))
        hint = f" INDEXED BY ix_{table}_case" if self.sqlite else ""
        at = {level: [names.index(d) for d in dims] for level, dims in levels.items()}
        within: dict[tuple, int] = {}   # (level, case, *key) -> the case's rows in the group
        for case_id, *values, n in self.run(
                f"SELECT case_id, {', '.join(columns.values())}, COUNT(*) FROM {table}{hint} WHERE {where}{self.who} "
                f"AND case_id IN (SELECT case_id FROM {table} WHERE {where} AND {repeated}{self.who}) "
                f"GROUP BY {grouping}"):
            for level, positions in at.items():
                _add(within, (level, case_id, *[values[i] for i in positions]), n)
        for (level, _, *key), n in within.items():
            cases[level][tuple(key)] -= n - 1

    def waiting(self) -> dict:
        """Stage clocks still open at the end of the period (started before it, not stopped by then)."""
        age = str(seconds_between(literal_column(":as_of"), literal_column("started_at"))
                  .compile(dialect=self.db.get_bind().dialect))
        # (A band by its start: started after as_of minus the band's bound.)
        band = "CASE " + " ".join(f"WHEN started_at > :band_{key} THEN '{key}'" for key, (limit, _) in AGE_BANDS.items()
                                  if limit) + " ELSE 'older' END"
        self.params.update({f"band_{key}": self.ask.as_of - timedelta(days=limit)
                            for key, (limit, _) in AGE_BANDS.items() if limit})
        open_ = "open_until >= :as_of AND started_at < :as_of"
        counts: dict = {level: {} for level in ("all", "stage", "band", "cell", "assignee")}
        started: dict[str, dict[int, int]] = {}   # stage -> month started -> clocks
        hint = " INDEXED BY ix_report_clocks_open" if self.sqlite else ""
        for stage, month, in_band, assignee, n in self.run(
                f"SELECT stage, start_month, {band}, assignee, COUNT(*) FROM report_clocks{hint} WHERE {open_}{self.who} "
                "GROUP BY 1, 2, 3, 4"):
            for level, key in (("all", ()), ("stage", (stage,)), ("band", (in_band,)), ("cell", (stage, in_band)),
                               ("assignee", (assignee,))):
                _add(counts[level], key, n)
            _add(started.setdefault(stage, {}), month, n)
        cases = {level: dict(counts[level]) for level in ("all", "stage", "band", "assignee")}
        self.repeats(cases, "report_clocks", open_, "prev_open >= :as_of",
                     {"stage": "stage", "band": band, "assignee": "assignee"},
                     {"all": (), "stage": ("stage",), "band": ("band",), "assignee": ("assignee",)})
        out = {level: {key: Agg(n, cases[level][key] if level in cases else None) for key, n in groups.items()}
               for level, groups in counts.items()}
        # Ages, youngest first: the month the clock of that rank started in, by the counts, then
        # one walk among that month's clocks.
        out["stage_age"] = {key: Agg(agg.n, None) for key, agg in out["stage"].items()}
        for (stage,), agg in out["stage"].items():
            for stat in ("median", "worst"):
                month, rank, n = _within((self.RANKS[stat] * agg.n + 99) // 100,
                                         sorted(started[stage].items(), reverse=True))
                self.wanted.append(_Rank(out["stage_age"], (stage,), stat, "report_clocks", "ix_report_clocks_started",
                                         age, f" AND stage = :stage AND start_month = :month AND {open_}",
                                         {"stage": stage, "month": month}, rank, n, by="started_at", reverse=True))
        return out

    def threats(self) -> dict:
        """Online threats reported to their platform in the period, and the platform's answer by its end."""
        where = "month BETWEEN :first AND :last"
        counts: dict = {level: {} for level in ("all", "platform", "answered", "cell", "month")}
        cases: dict = {level: {} for level in ("all", "platform", "month")}
        answer = "CASE WHEN responded_at < :as_of THEN '1' ELSE '0' END"
        for platform, month, is_answered, n, *firsts in self.run(
                f"SELECT platform, month, {answer}, COUNT(*), "
                f"{_first('prev_month', ':first')}, {_first('prev_platform_month', ':first')}, "
                f"{_first('prev_month', 'month')} FROM report_threats WHERE {where}{self.who} GROUP BY 1, 2, 3"):
            for level, key in (("all", ()), ("platform", (platform,)), ("answered", (is_answered,)),
                               ("cell", (platform, is_answered)), ("month", (self.month(month),))):
                _add(counts[level], key, n)
            for level, key, first in zip(("all", "platform", "month"), ((), (platform,), (self.month(month),)),
                                         firsts, strict=True):
                _add(cases[level], key, first)
        distinct = {level: dict(counts[level]) for level in ("answered", "cell")}
        self.repeats(distinct, "report_threats", where, "prev_month >= :first",
                     {"platform": "platform", "answered": answer},
                     {"answered": ("answered",), "cell": ("platform", "answered")})
        out = {level: {key: Agg(n, (cases if level in cases else distinct)[level][key]) for key, n in groups.items()}
               for level, groups in counts.items()}
        answered = {(k[0],): agg.n for k, agg in out["cell"].items() if k[1] == "1"}
        for level, time, at_, by, groups, stats in (
                ("answer", "answer_time", "responded_at", "platform", answered, ("median", "p90")),
                ("answer_month", "answer_time", "responded_at", "month", None, ("median",)),
                ("answer_all", "answer_time", "responded_at", None, None, ("median", "p90")),
                ("removal", "removal_time", "removed_at", "platform", None, ("median",)),
                ("removal_all", "removal_time", "removed_at", None, None, ("median",))):
            out[level] = {}
            for key, n in (groups if groups is not None else self.count_answered(time, at_, by)).items():
                value = int(key[0]) + self.first if by == "month" else key[0] if by else None
                self.rank(out[level], key, n, stats, "report_threats",
                          f"ix_report_threats_{by}_{time}" if by else f"ix_report_threats_{time}", time,
                          _group_in_period(by) + f" AND {at_} < :as_of", value=value)
        return out

    def count_answered(self, time: str, at_: str, by: str | None) -> dict:
        found = self.run(f"SELECT {by or 0}, COUNT(*) FROM report_threats WHERE month BETWEEN :first AND :last "
                         f"AND {at_} < :as_of{self.who} GROUP BY 1")
        return {((self.month(k) if by == "month" else k),) if by else (): n for k, n in found if n}

    def open_at(self) -> list[list]:
        """Clocks open at the end of each month but the last (which ends with the period), as
        (stage, month ends passed before it started, before it stopped, clocks): a clock is open
        at month end m when started <= m < stopped, so one grouped read gives every month."""
        ends = len(self.ask.period.months) - 1
        found: dict[tuple, int] = {}
        for stage, start, stop, n in self.run(
                "SELECT stage, start_month, stop_month, COUNT(*) FROM report_clocks WHERE start_month < :ends "
                f"AND (stop_month IS NULL OR stop_month > :first){self.who} GROUP BY stage, start_month, stop_month",
                {"ends": self.first + ends}) if ends else ():
            key = (stage, min(max(start - self.first, 0), ends),
                   ends if stop is None else min(max(stop - self.first, 0), ends))
            found[key] = found.get(key, 0) + n
        return [[*key, n] for key, n in found.items()]


def _group_in_period(column: str | None) -> str:
    """SQL: the rows of a group (``column`` = :value, or all) of a month in the period. A group of
    one month says only that: with the period's range beside it, SQLite may read the range and
    sort the month's rows instead of walking them in order."""
    if column == "month":
        return " AND month = :value"
    return (f" AND {column} = :value" if column else "") + " AND month BETWEEN :first AND :last"


def _first(previous: str, since: str) -> str:
    """SQL: how many rows are their case's first of their group since ``since`` (a month), by the
    month of the case's previous row of the group (facts.py, ``_previous``)."""
    return f"SUM(CASE WHEN {previous} IS NULL OR {previous} < {since} THEN 1 ELSE 0 END)"


def _within(rank: int, groups: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Of ``groups`` (key, rows) in order, the one that holds the row of ``rank``: its key, the
    rank within it, and its rows."""
    for key, n in groups:
        if rank <= n:
            return key, rank, n
        rank -= n
    raise ValueError(rank)


def _add(counts: dict, key: tuple, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


# -- the report ----------------------------------------------------------------------------

@dataclass
class Column:
    key: str
    label: object
    kind: str = "count"   # count | duration | hours | days | share | text


@dataclass
class Row:
    key: str
    label: object
    values: list
    unit: str | None = None  # hours | days: how this row's "duration" columns read


@dataclass
class Table:
    key: str
    title: object
    columns: list[Column]
    rows: list[Row]
    total: Row | None = None
    note: object = None

    def all_rows(self) -> list[Row]:
        return self.rows + ([self.total] if self.total else [])


@dataclass
class Report:
    period: Period
    filters: Filters
    as_of: datetime
    internal: bool          # a supervisor's report: nothing suppressed, figures link to their cases
    k: int
    terms: dict[str, tuple[int, str]]
    tables: dict[str, Table] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to publish: no case at all, or (for a donor) none of the figures may be shown."""
        return not any(cell.shown and cell.value for cell in self.cells)


class _Builder:
    """Makes every count of the aggregates a ``Cell`` in the suppression network, then the tables."""

    def __init__(self, db: Session, ask: Ask, figures: dict, *, internal: bool, k: int):
        self.db = db
        self.ask = ask
        self.figures = _thaw(figures)
        self.internal = internal
        self.k = k
        self.network = Network()
        self.cells: list[Cell] = []
        self.months = [str(i) for i in range(len(ask.period.months))]
        self.month_labels = [m.strftime("%Y-%m") for m in ask.period.months]
        policies = current_policies(db, self.ask.as_of.astimezone(TZ).date())
        self.terms = {p.stage: (p.duration, p.unit) for p in policies}

    def cell(self, found: dict, keys: tuple, family: str, *, count_cases: bool = False, **dims) -> Cell:
        """The count of a group (its rows, or with ``count_cases`` its distinct cases) as a cell."""
        agg = found.get(tuple(str(k) for k in keys), NONE)
        return self.made(agg.cases if count_cases else agg.n, agg.cases, family, **dims)

    def made(self, value: int, cases: int | None, family: str, **dims) -> Cell:
        made = Cell(value, -1 if cases is None else cases, (family, {k: str(v) for k, v in dims.items()}))
        self.cells.append(made)
        return made

    def stat(self, agg: Agg, attr: str, cases: int):
        """An order statistic of a group of ``cases`` cases: shown only for k cases or more."""
        return getattr(agg, attr) if agg.n and cases >= self.k else None

    def stat_share(self, agg: Agg, cases: int):
        return agg.met / agg.n if agg.n and cases >= self.k and agg.met is not None else None

    @staticmethod
    def floor(n: int, whole: Cell) -> int:
        """The fewest cases ``n`` rows of ``whole`` can come from: each of whole's repeated cases
        (rows beyond the first of a case) may be among them."""
        return max(0, n - (whole.value - whole.cases))

    @staticmethod
    def share(part: Cell, whole: Cell):
        """``part`` of ``whole``, when both are published (else it would give the hidden one away)."""
        return part.value / whole.value if part.shown and whole.shown and whole.value else None

    def unit(self, stage: str) -> str:
        return "hours" if self.terms.get(stage, (0, ""))[1] == "hours" else "days"

    def term_text(self, stage: str) -> str:
        return term_text(*self.terms[stage]) if stage in self.terms else "—"

    # -- figures -------------------------------------------------------------------------
    def read_stages(self):
        found = self.done = self.figures["done"]
        fine = {key: agg.n for key, agg in found["fine"].items()}

        def count(s, months, bins):
            return sum(fine.get((s, m, b), 0) for m in months for b in bins)

        late_bins = list(LATE_BINS)
        self.completed, self.on_time, self.late, self.by_month, self.on_time_by_month, self.bins = ({} for _ in range(6))
        for s in STAGES:
            stage = found["cases"].get((s,), NONE)
            # Distinct cases are counted for the whole stage only; a part of it has at least its
            # rows minus the stage's repeats (a case that ended the stage twice), exactly its rows if none.
            repeats = stage.n - (stage.cases or 0)

            def cell(value, repeats=repeats, s=s, **dims):
                return self.made(value, max(0, value - repeats), "done", stage=s, **dims)

            self.completed[s] = self.made(stage.n, stage.cases, "done", stage=s)
            self.on_time[s] = cell(count(s, self.months, ["on_time"]), met=1)
            self.late[s] = cell(count(s, self.months, late_bins), met=0)
            rows = [[cell(count(s, [m], ["on_time"]), month=m, met=1), cell(count(s, [m], late_bins), month=m, met=0)]
                    for m in self.months]
            self.on_time_by_month[s] = [row[0] for row in rows]
            self.by_month[s] = [cell(count(s, [m], ["on_time"] + late_bins), month=m) for m in self.months]
            self.network.table(rows, self.by_month[s], [self.on_time[s], self.late[s]], self.completed[s])
            self.bins[s] = [cell(count(s, self.months, [b]), bin=b) for b in LATE_BINS]
            self.network.split(self.late[s], self.bins[s])

    def read_backlog(self):
        found = self.waiting = self.figures["waiting"]
        self.backlog, self.waiting_by_stage = [], []
        for s in STAGES:
            stage = found["stage"].get((s,), NONE)
            repeats = stage.n - (stage.cases or 0)
            self.backlog.append([self.made(n, max(0, n - repeats), "waiting", stage=s, band=b) for b in AGE_BANDS
                                 for n in [found["cell"].get((s, b), NONE).n]])
            self.waiting_by_stage.append(self.made(stage.n, stage.cases, "waiting", stage=s))
        self.band_totals = [self.cell(found["band"], (b,), "waiting", band=b) for b in AGE_BANDS]
        self.waiting_total = self.cell(found["all"], (), "waiting")
        self.network.table(self.backlog, self.waiting_by_stage, self.band_totals, self.waiting_total)
        self.open_at_month_end = self.month_end_backlog()

    def month_end_backlog(self) -> list[Cell]:
        """Deadlines open at the end of each month; the last month ends with the period: the same cell.
        A case waits on one clock of a stage at a time, so the largest stage's count is a floor
        on the cases behind the figure."""
        rows = self.figures["open_at"]
        cells = []
        for m in range(len(self.months) - 1):
            by_stage: dict[str, int] = {}
            for stage, first, last, n in rows:
                if first <= m < last:
                    by_stage[stage] = by_stage.get(stage, 0) + n
            cells.append(self.made(sum(by_stage.values()), max(by_stage.values(), default=0), "open_at", month=m))
        return cells + [self.waiting_total]

    def read_requests(self):
        found = self.requests = self.figures["requests"]
        self.outcomes = [[self.cell(found["cell"], (m, o), "requests", month=m, outcome=o) for o in OUTCOMES]
                         for m in self.months]
        self.received = [self.cell(found["month"], (m,), "requests", month=m) for m in self.months]
        self.outcome_totals = [self.cell(found["outcome"], (o,), "requests", outcome=o) for o in OUTCOMES]
        self.received_total = self.cell(found["all"], (), "requests")
        self.network.table(self.outcomes, self.received, self.outcome_totals, self.received_total)
        self.reasons = [self.cell(found["reason"], (r,), "requests", outcome="not_admitted", reason=r)
                        for r in codes.NOT_ADMITTED_REASONS]
        self.network.split(self.outcome_totals[list(OUTCOMES).index("not_admitted")], self.reasons)
        self.breakdowns = {}
        for dim in BREAKDOWNS:
            self.breakdowns[dim] = [self.cell(found[dim], (c,), "requests", **{dim: c}) for c in self.categories(dim)]
            self.network.split(self.received_total, self.breakdowns[dim])

    def categories(self, dim: str) -> dict:
        """The rows of a breakdown: those the filters (a donor's scope) allow. The others are
        zero and known to be, so they are not shown: as "< k" they would seem to hide cases."""
        chosen = {"state": self.ask.filters.states, "beneficiary": self.ask.filters.beneficiaries,
                  "gender": self.ask.filters.gender and (self.ask.filters.gender,)}.get(dim)
        return {c: label for c, label in BREAKDOWNS[dim].items() if chosen is None or c in chosen}

    def read_caseload(self):
        """Requests of the period by whom they are assigned to (a part of the requests received), and
        each one's open cases at the end of the period (counts in no sum that is published)."""
        received, waiting = self.requests["assignee"], self.waiting["assignee"]
        people = sorted(({k for (k,) in received} | {k for (k,) in waiting if k is not None}) - {NOBODY})
        self.load = {p: (self.cell(received, (p,), "requests", assignee=p),
                         self.cell(waiting, (p,), "waiting", count_cases=True, assignee=p)) for p in people}
        self.unassigned = self.cell(received, (NOBODY,), "requests", assignee=NOBODY)
        self.network.split(self.received_total, [cells[0] for cells in self.load.values()] + [self.unassigned])

    def read_measures(self):
        # A cell of a row has at least its measures minus the row's repeats (cases with more
        # than one measure in that row).
        found = self.measures = self.figures["measures"]
        self.kinds = self.measure_types()

        def within(row: Cell, level: str, key, **dims) -> Cell:
            n = found[level].get(tuple(str(k) for k in key), NONE).n
            return self.made(n, self.floor(n, row), "measures", **dims)
        self.by_status = [self.cell(found["status"], (st,), "measures", status=st) for st in MEASURE_STATES]
        self.decided = self.cell(found["all"], (), "measures")
        self.authority_rows = [self.cell(found["authority"], (a,), "measures", authority=a) for a in codes.AUTHORITIES]
        self.authority_cells = [[within(self.authority_rows[i], "authority_status", (a, st), authority=a, status=st)
                                 for st in MEASURE_STATES] for i, a in enumerate(codes.AUTHORITIES)]
        self.network.table(self.authority_cells, self.authority_rows, self.by_status, self.decided)
        self.kind_rows = [self.cell(found["kind"], (t,), "measures", kind=t) for t in self.kinds]
        self.kind_cells = [[within(self.kind_rows[i], "kind_status", (t, st), kind=t, status=st)
                            for st in MEASURE_STATES] for i, t in enumerate(self.kinds)]
        self.network.second_table(self.by_status, self.kind_cells, self.kind_rows, self.decided)
        self.decided_by_month = [within(self.decided, "month", (m,), month=m) for m in self.months]
        self.network.split(self.decided, self.decided_by_month)

    def read_platforms(self):
        found = self.threats = self.figures["threats"]
        self.reported = [self.cell(found["platform"], (p,), "threats", platform=p) for p in codes.PLATFORMS]
        self.answers = [[self.cell(found["cell"], (p, a), "threats", platform=p, answered=a) for a in (1, 0)]
                        for p in codes.PLATFORMS]
        self.by_answer = [self.cell(found["answered"], (a,), "threats", answered=a) for a in (1, 0)]
        self.reported_total = self.cell(found["all"], (), "threats")
        self.network.table(self.answers, self.reported, self.by_answer, self.reported_total)
        self.reported_by_month = [self.cell(found["month"], (m,), "threats", month=m) for m in self.months]
        self.network.split(self.reported_total, self.reported_by_month)

    def measure_types(self) -> dict[str, str]:
        english = str(get_locale() or "es").startswith("en")
        rows = self.db.execute(select(MeasureType.code, MeasureType.name_es, MeasureType.name_en)
                               .order_by(MeasureType.category, MeasureType.code)).all()
        return {code: (en if english else es) for code, es, en in rows}

    # -- tables ----------------------------------------------------------------------------
    def build(self) -> Report:
        self.read_stages()
        self.read_backlog()
        self.read_requests()
        self.read_caseload()
        self.read_measures()
        self.read_platforms()
        suppress(self.network, self.cells, self.k)
        report = Report(self.ask.period, self.ask.filters, self.ask.as_of, self.internal, self.k, self.terms,
                        cells=self.cells)
        for table in (self.stages_table(), self.journey_table(), self.lateness_table(), self.backlog_table(),
                      self.stage_months_table(), self.requests_table(), self.reasons_table(),
                      *self.breakdown_tables(), self.measures_table("authority"), self.measures_table("kind"),
                      self.platforms_table(), self.caseload_table(), self.trend_table()):
            report.tables[table.key] = table
        return report

    def stages_table(self) -> Table:
        rows = []
        for i, s in enumerate(STAGES):
            done = self.done["stage"].get((s,), NONE)
            wait = self.waiting["stage_age"].get((s,), NONE)
            rows.append(Row(s, STAGES[s], [
                self.term_text(s), self.completed[s], self.on_time[s], self.late[s],
                self.share(self.on_time[s], self.completed[s]), *[self.stat(done, x, self.completed[s].cases)
                                                                  for x in ("median", "p90", "worst")],
                self.waiting_by_stage[i], *[self.stat(wait, x, self.waiting_by_stage[i].cases)
                                            for x in ("median", "worst")]], self.unit(s)))
        return Table("stages", _l("Time taken at each stage, against the legal term"), [
            Column("term", _l("Legal term"), "text"), Column("completed", _l("Completed in the period")),
            Column("on_time", _l("On time")), Column("late", _l("Late")),
            Column("on_time_share", _l("Share on time"), "share"), Column("median", _l("Median time"), "duration"),
            Column("p90", _l("90th percentile"), "duration"), Column("worst", _l("Longest"), "duration"),
            Column("waiting", _l("Still waiting at the end")),
            Column("median_wait", _l("Median wait so far"), "duration"),
            Column("longest_wait", _l("Longest wait so far"), "duration")], rows)

    def journey_table(self) -> Table:
        journey = self.done["journey"].get((), NONE)
        return Table("journey", _l("From the request to the measures implemented"), [
            Column("completed", _l("Measures implemented in the period")),
            Column("median", _l("Median time"), "duration"), Column("p90", _l("90th percentile"), "duration"),
            Column("worst", _l("Longest"), "duration")],
            [Row("journey", _l("Request to measures implemented"),
                 [self.completed["implementation"]] + [self.stat(journey, x, self.completed["implementation"].cases)
                                                       for x in ("median", "p90", "worst")], "days")])

    def lateness_table(self) -> Table:
        return Table("lateness", _l("How late: stages by time taken, in multiples of the legal term"),
                     [Column("on_time", _l("On time"))] + [Column(b, label) for b, (_, label) in LATE_BINS.items()]
                     + [Column("completed", _l("Completed"))],
                     [Row(s, STAGES[s], [self.on_time[s], *self.bins[s], self.completed[s]]) for s in STAGES])

    def backlog_table(self) -> Table:
        return Table("backlog", _l("Still waiting at the end of the period, by how long"),
                     [Column(b, label) for b, (_, label) in AGE_BANDS.items()] + [Column("total", _l("Total"))],
                     [Row(s, STAGES[s], [*self.backlog[i], self.waiting_by_stage[i]]) for i, s in enumerate(STAGES)],
                     Row("total", _l("All stages (deadlines)"), [*self.band_totals, self.waiting_total]))

    def stage_months_table(self) -> Table:
        rows = []
        for s in STAGES:
            for i, m in enumerate(self.months):
                done = self.done["stage_month"].get((s, m), NONE)
                rows.append(Row(f"{s}:{self.month_labels[i]}", self.month_labels[i], [
                    STAGES[s], self.by_month[s][i], self.on_time_by_month[s][i],
                    self.share(self.on_time_by_month[s][i], self.by_month[s][i]),
                    self.stat(done, "median", self.by_month[s][i].cases)],
                    self.unit(s)))
        return Table("stage_months", _l("Stages completed, month by month"), [
            Column("stage", _l("Stage"), "text"), Column("completed", _l("Completed")),
            Column("on_time", _l("On time")), Column("on_time_share", _l("Share on time"), "share"),
            Column("median", _l("Median time"), "duration")], rows)

    def acceptance(self, ext: Cell, ordinary: Cell, refused: Cell):
        """Admitted among those decided, when all three are published."""
        decided = ext.value + ordinary.value + refused.value
        shown = ext.shown and ordinary.shown and refused.shown
        return (ext.value + ordinary.value) / decided if shown and decided else None

    def requests_table(self) -> Table:
        return Table("requests", _l("Requests received and the triage decision, by month"),
                     [Column("received", _l("Received"))] + [Column(o, label) for o, label in OUTCOMES.items()]
                     + [Column("acceptance", _l("Acceptance rate"), "share")],
                     [Row(m, self.month_labels[i], [self.received[i], *self.outcomes[i],
                                                    self.acceptance(*self.outcomes[i][:3])])
                      for i, m in enumerate(self.months)],
                     Row("total", _l("The whole period"), [self.received_total, *self.outcome_totals,
                                                           self.acceptance(*self.outcome_totals[:3])]),
                     note=_l("Acceptance rate: requests admitted among those decided (admitted or not)."))

    def reasons_table(self) -> Table:
        return Table("reasons", _l("Why requests were not admitted"), [Column("count", _l("Requests"))],
                     [Row(r, codes.NOT_ADMITTED_REASONS[r], [self.reasons[i]])
                      for i, r in enumerate(codes.NOT_ADMITTED_REASONS)],
                     Row("total", _l("Not admitted"), [self.outcome_totals[list(OUTCOMES).index("not_admitted")]]))

    def breakdown_tables(self) -> list[Table]:
        tables = []
        for dim in BREAKDOWNS:
            labels, timed = self.categories(dim), dim in TIMED_BREAKDOWNS
            rows = []
            for i, c in enumerate(labels):
                values = [self.breakdowns[dim][i]]
                if timed:
                    triage = self.done[dim].get(("triage", c), NONE)
                    implementation = self.done[dim].get(("implementation", c), NONE)
                    implemented = self.floor(implementation.n, self.completed["implementation"])
                    values += [self.stat(triage, "median", self.floor(triage.n, self.completed["triage"])),
                               self.stat(implementation, "median", implemented),
                               self.stat_share(implementation, implemented)]
                rows.append(Row(c, labels[c], values))
            columns = [Column("received", _l("Requests received"))]
            if timed:
                columns += [Column("triage_median", _l("Triage: median hours"), "hours"),
                            Column("implementation_median", _l("Measures implemented: median days"), "days"),
                            Column("implementation_on_time", _l("Measures implemented: share on time"), "share")]
            tables.append(Table(f"by_{dim}", BREAKDOWN_TITLES[dim], columns, rows,
                                Row("total", _l("All"), [self.received_total] + [None] * (len(columns) - 1))))
        return tables

    def measures_table(self, by: str) -> Table:
        stats = self.measures
        columns = ([Column("decided", _l("Decided"))] + [Column(st, label) for st, label in MEASURE_STATES.items()]
                   + [Column("median", _l("Median days to implement"), "days"),
                      Column("p90", _l("90th percentile"), "days"), Column("worst", _l("Longest"), "days")])
        total = Row("total", _l("All measures"), [self.decided, *self.by_status] + [
            self.stat(stats["s_all"].get((), NONE), x, self.by_status[0].cases) for x in ("median", "p90", "worst")])
        if by == "authority":
            labels, totals, cells = codes.AUTHORITIES, self.authority_rows, self.authority_cells
            title = _l("Measures decided and implemented, by implementing authority")
        else:
            labels, totals, cells = self.kinds, self.kind_rows, self.kind_cells
            title = _l("Measures decided and implemented, by type of measure")
        # (The times are those of the implemented measures: the first status column.)
        rows = [Row(key, labels[key], [totals[i], *cells[i]] + [
            self.stat(stats[f"s_{by}"].get((key,), NONE), x, cells[i][0].cases) for x in ("median", "p90", "worst")])
            for i, key in enumerate(labels)]
        return Table("measures_authority" if by == "authority" else "measures_type", title, columns, rows, total)

    def platforms_table(self) -> Table:
        found = self.threats

        def stats(answer: Agg, answered: Cell, removal: Agg) -> list:
            removed = self.floor(removal.n, self.reported_total)
            return [self.stat(answer, "median", answered.cases), self.stat(answer, "p90", answered.cases),
                    self.stat(removal, "median", removed)]
        return Table("platforms", _l("Online threats reported to the platforms"), [
            Column("reported", _l("Reported")), Column("answered", _l("Answered")),
            Column("unanswered", _l("No answer yet")),
            Column("answer_median", _l("Median hours to answer"), "hours"),
            Column("answer_p90", _l("90th percentile"), "hours"),
            Column("removal_median", _l("Median hours to removal"), "hours")],
            [Row(p, codes.PLATFORMS[p], [self.reported[i], *self.answers[i]] + stats(
                found["answer"].get((p,), NONE), self.answers[i][0], found["removal"].get((p,), NONE)))
             for i, p in enumerate(codes.PLATFORMS)],
            Row("total", _l("All platforms"), [self.reported_total, *self.by_answer] + stats(
                found["answer_all"].get((), NONE), self.by_answer[0], found["removal_all"].get((), NONE))))

    def caseload_table(self) -> Table:
        # Busiest first by the figures shown; a suppressed caseload goes after them in a fixed
        # order, so that its place in the list tells nothing about its size.
        people = sorted(self.load, key=lambda p: (not self.load[p][1].shown, -self.load[p][1].value
                                                  if self.load[p][1].shown else 0, p))
        names = _staff_names(self.db, people) if self.internal else {}
        rows = [Row(str(n), names.get(p) or gettext("Caseworker %(n)d", n=n), list(self.load[p]))
                for n, p in enumerate(people, start=1)]
        rows.append(Row(NOBODY, _l("Not assigned"), [self.unassigned, None]))
        return Table("caseload", _l("Caseload per caseworker"), [
            Column("received", _l("Requests of the period assigned to them")),
            Column("open", _l("Open cases at the end of the period"))], rows,
            note=_l("Caseworkers are numbered by their open cases, most first; a case counts for the "
                    "caseworker it is assigned to now."))

    def trend_table(self) -> Table:
        done, measures, threats = self.done["stage_month"], self.measures["s_month"], self.threats["answer_month"]

        def median(s, i, m):
            return self.stat(done.get((s, m), NONE), "median", self.by_month[s][i].cases)

        rows = []
        for i, m in enumerate(self.months):
            implemented, answered = measures.get((m,), NONE), threats.get((m,), NONE)
            rows.append(Row(m, self.month_labels[i], [
                self.received[i], self.acceptance(*self.outcomes[i][:3]), median("triage", i, m),
                median("risk_assessment", i, m), median("implementation", i, m),
                self.share(self.on_time_by_month["implementation"][i], self.by_month["implementation"][i]),
                self.decided_by_month[i],
                self.stat(implemented, "median", self.floor(implemented.n, self.by_status[0])),
                self.reported_by_month[i], self.stat(answered, "median", self.floor(answered.n, self.by_answer[0])),
                self.open_at_month_end[i]]))
        return Table("trend", _l("Month by month"), [
            Column("received", _l("Requests received")), Column("acceptance", _l("Acceptance rate"), "share"),
            Column("triage_median", _l("Triage: median hours"), "hours"),
            Column("assessment_median", _l("Risk assessment: median days"), "days"),
            Column("implementation_median", _l("Measures implemented: median days"), "days"),
            Column("implementation_on_time", _l("Measures implemented: share on time"), "share"),
            Column("measures_decided", _l("Measures decided")),
            Column("measures_median", _l("Median days to implement a measure"), "days"),
            Column("reported", _l("Online threats reported")),
            Column("answer_median", _l("Median hours for a platform to answer"), "hours"),
            Column("open", _l("Deadlines open at the end of the month"))], rows)


def _staff_names(db: Session, ids) -> dict[str, str]:
    from ..cases.service import staff_directory
    return {i: m.name for i, m in staff_directory(db).items() if i in ids and m.name}


def term_text(duration: int, unit: str) -> str:
    if unit == "hours":
        return ngettext("%(num)d hour", "%(num)d hours", duration)
    if unit == "business_days":
        return ngettext("%(num)d business day", "%(num)d business days", duration)
    return ngettext("%(num)d natural day", "%(num)d natural days", duration)


def build(db: Session, viewer: User, period: Period, filters: Filters) -> Report:
    """The report for ``viewer``: suppressed for a donor, whole for a supervisor.

    Its aggregates take most of a second at 100,000 cases (bench/RESULTS.md, "reports"), so they
    are kept (``PreparedReport``), shared by whoever asks for the same period and selection, and
    made again in the background when the data changes (``refresh``, from the sweeper). A
    look uses the kept aggregates while the data they came from is unchanged, or while they
    are younger than ``report_max_age_seconds`` (the report says "as of" when); else it makes
    them itself. The finished report is kept in this process too, per kind of viewer and
    language, while its aggregates are the kept ones.
    """
    if viewer.role not in ("donor", "supervisor"):
        raise PermissionDenied(_l("Only donors and supervisors read the delay reports."))
    check_period(viewer, period)
    internal = viewer.role == "supervisor"
    k = 1 if internal else max(1, int(current_app.extensions["protect.settings"].report_min_cell))
    kept = _kept(db, period, filters)
    key = (kept.key, kept.made_at, internal, k, str(get_locale()))
    # (The last few made, by what they were made of.)
    cache = current_app.extensions.setdefault("protect.reports", Kept(16))
    report = cache.get(key)
    if report is None:
        report = cache.put(key, _Builder(db, Ask(period, filters, kept.as_of), kept.figures,
                                         internal=internal, k=k).build())
    return report


# -- prepared reports ----------------------------------------------------------------

KEEP_UNASKED = timedelta(days=7)   # prepared reports nobody asked for this long are dropped
ASKED_EVERY = timedelta(hours=1)   # how finely asked_at is kept: a write per look would be waste
REFRESH_PER_RUN = 2                # most reports one sweep makes again (under a second each at 100,000 cases)
# Raised whenever read_figures changes what it keeps: figures kept by an earlier
# version are then never read (and dropped a week later), so an upgrade cannot misread them.
FIGURES_FORMAT = 1


def _prepared_key(period: Period, filters: Filters) -> str:
    asked = [FIGURES_FORMAT, period.first.isoformat(), period.last.isoformat(), filters.as_dict()]
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _as_of(period: Period, now: datetime) -> datetime:
    return min(period.end, now)


def _data_state(db: Session) -> list:
    """What the figures are made of: every change a report can see writes a case event or a clock
    (or a policy version)."""
    return list(facts.data_state(db))


def _current(kept, state: list, now: datetime) -> bool:
    """Whether kept figures are those the data would give now."""
    return kept.data_state == state and kept.as_of == _as_of(Period(kept.first, kept.last), now)


def _kept(db: Session, period: Period, filters: Filters) -> PreparedReport:
    """The kept aggregates of a period and selection, made now if there are none fit to show."""
    now, state = utcnow(), _data_state(db)
    kept = db.get(PreparedReport, _prepared_key(period, filters))
    max_age = timedelta(seconds=current_app.extensions["protect.settings"].report_max_age_seconds)
    if kept is None or not (_current(kept, state, now) or now - kept.made_at < max_age):
        return prepare(db, period, filters, state, asked=True)
    if now - kept.asked_at >= ASKED_EVERY:
        kept.asked_at = now
        db.commit()
    return kept


def prepare(db: Session, period: Period, filters: Filters, state: list, *, asked: bool) -> PreparedReport:
    """Make the aggregates of a period and selection from the data, and keep them (committed).
    Two makers at once both write; the later one stays."""
    now = utcnow()
    ask = Ask(period, filters, _as_of(period, now))
    values = {"key": _prepared_key(period, filters), "first": period.first, "last": period.last,
              "filters": filters.as_dict(), "as_of": ask.as_of, "data_state": state,
              "figures": read_figures(db, ask, state), "made_at": now, "asked_at": now}
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    again = ["as_of", "data_state", "figures", "made_at"] + (["asked_at"] if asked else [])
    db.execute(dialect.insert(PreparedReport).values(values)
               .on_conflict_do_update(index_elements=["key"], set_={k: values[k] for k in again}))
    db.commit()
    return PreparedReport(**values)


def refresh(db: Session) -> int:
    """The sweeper's part: bring the report's copy of the data up to the data (so that a look
    rarely has to), make again the kept reports whose data changed (the stalest first, at most
    ``REFRESH_PER_RUN``, each at most every ``report_refresh_seconds``), and the default report of
    every donor's scope and of the supervisors ahead of their first look; drop the kept reports
    nobody asked for in ``KEEP_UNASKED``. Returns how many it made."""
    facts.refresh(db)
    now, state = utcnow(), _data_state(db)
    every = timedelta(seconds=current_app.extensions["protect.settings"].report_refresh_seconds)
    db.execute(delete(PreparedReport).where(PreparedReport.asked_at < now - KEEP_UNASKED))
    db.commit()
    kept = {row.key: row for row in db.execute(select(
        PreparedReport.key, PreparedReport.first, PreparedReport.last, PreparedReport.filters,
        PreparedReport.as_of, PreparedReport.data_state, PreparedReport.made_at))}
    stale = sorted(((row.made_at, Period(row.first, row.last), Filters.from_dict(row.filters))
                    for row in kept.values() if not _current(row, state, now) and now - row.made_at >= every),
                   key=lambda due: due[0])
    scopes = {json.dumps(scope, sort_keys=True): scope for (scope,) in db.execute(
        select(User.report_scope).where(User.role == "donor", User.active.is_(True)))}
    defaults = [(default_period("donor"), _scope(scope)) for scope in scopes.values()]
    defaults.append((default_period("supervisor"), Filters()))
    due = [(None, period, filters) for period, filters in defaults
           if _prepared_key(period, filters) not in kept] + stale
    db.commit()  # (SQLite: a write may not follow a read of data another writer changed since)
    made = 0
    for made_at, period, filters in due[:REFRESH_PER_RUN]:
        if made_at is not None:
            # Claimed first, so that sweepers on several hosts do not all make the same report.
            claimed = rowcount(db.execute(update(PreparedReport).where(
                PreparedReport.key == _prepared_key(period, filters), PreparedReport.made_at == made_at)
                .values(made_at=now)))
            db.commit()
            if not claimed:
                continue
        prepare(db, period, filters, state, asked=False)
        made += 1
    return made


# -- exports and drill-down -------------------------------------------------------------

def record_export(db: Session, viewer: User, report: Report, fmt: str, table: str | None = None) -> None:
    """Every copy of the figures that leaves the site is audited (codes only)."""
    audit.record(db, "report.exported", actor=viewer, format=fmt, table=table,
                 first=report.period.first.isoformat(), last=report.period.last.isoformat(),
                 suppressed=not report.internal, **report.filters.as_dict())


DIMENSIONS: dict[str, dict[str, set[str] | None]] = {
    "done": {"stage": set(STAGES), "month": None, "met": {"0", "1"}, "bin": set(LATE_BINS)},
    "waiting": {"stage": set(STAGES), "band": set(AGE_BANDS), "assignee": None},
    "open_at": {"month": None},
    "requests": {"month": None, "outcome": set(OUTCOMES), "reason": set(codes.NOT_ADMITTED_REASONS),
                 "assignee": None, **{dim: set(labels) for dim, labels in {**BREAKDOWNS}.items()}},
    "measures": {"authority": set(codes.AUTHORITIES), "kind": None, "status": set(MEASURE_STATES), "month": None},
    "threats": {"platform": set(codes.PLATFORMS), "answered": {"0", "1"}, "month": None},
}
DRILL_LIMIT = 500


def figure_cases(db: Session, viewer: User, period: Period, filters: Filters, family: str,
                 dims: dict[str, str]) -> tuple[list[Case], int]:
    """The cases behind one figure of a supervisor's report (at most ``DRILL_LIMIT``, oldest first)."""
    if viewer.role != "supervisor":
        raise PermissionDenied(_l("Only supervisors see the cases behind the figures."))
    check_period(viewer, period)
    allowed = DIMENSIONS.get(family)
    if allowed is None or any(k not in allowed or v not in (allowed[k] or {v}) for k, v in dims.items()):
        raise NotFound(_l("There is no such figure."))
    if "month" in dims and not (dims["month"].isdigit() and int(dims["month"]) < len(period.months)):
        raise NotFound(_l("There is no such figure."))
    ask = Ask(period, filters, min(period.end, utcnow()))
    if family == "open_at":
        end = local_midnight(next_month(period.months[int(dims.pop("month"))]))
        family, ask = "waiting", Ask(period, filters, min(end, ask.as_of))
    base = FAMILIES[family](ask).subquery()
    ids = select(base.c.case_id).where(*[cast(base.c[k], String) == v for k, v in dims.items()]).distinct().subquery()
    total = db.execute(select(func.count()).select_from(ids)).scalar_one()
    cases = db.execute(select(Case).join(ids, ids.c.case_id == Case.id)
                       .order_by(Case.submitted_at, Case.id).limit(DRILL_LIMIT)).scalars().all()
    return list(cases), total
