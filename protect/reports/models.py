"""Prepared reports: the aggregates a delay report is made from, kept between looks."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model, UTCDateTime


class PreparedReport(Model):
    """The SQL aggregates of one report (a period and a selection of cases), as of ``as_of``.

    Made in the database at 100,000 cases in seconds, so they are kept here: every look
    (page, PDF, CSV, JSON; any worker, any host) is made from them in Python, and the
    sweeper makes them again in the background when the data changed. They are counts and
    order statistics only, by codes (and by staff id for the caseload): no name, no text.
    Suppression is applied when a report is made from them, for whoever looks.
    """

    __tablename__ = "prepared_reports"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of period and selection
    first: Mapped[date] = mapped_column(Date)
    last: Mapped[date] = mapped_column(Date)
    filters: Mapped[dict] = mapped_column(JSON)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    # What the figures were made of: newest case event, number of clocks, newest policy.
    data_state: Mapped[list] = mapped_column(JSON)
    figures: Mapped[dict] = mapped_column(JSON, deferred=True)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime)


# -- the report's own copy of the data (facts.py) --------------------------------------------
# One narrow row per deadline clock, request, measure and platform report of a submitted case:
# codes, times and Mexico City month numbers (year * 12 + month - 1) only. Each is indexed in
# the orders the report ranks by, so that a percentile is one walk along an index.

_DIMS = ("state", "beneficiary", "gender")


class _Who:
    """The case's state, kind of beneficiary and gender ("unstated" if none), for the filters."""

    state: Mapped[str | None] = mapped_column(String(8))
    beneficiary: Mapped[str | None] = mapped_column(String(16))
    gender: Mapped[str] = mapped_column(String(16))


class FactsMark(Model):
    """How far the facts go: the newest case event and the number of clocks they were made from,
    in the facts' ``format``; ``edition`` counts refreshes (a refresh claims the mark by it)."""

    __tablename__ = "report_facts_mark"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    format: Mapped[int] = mapped_column(Integer)
    edition: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[int | None] = mapped_column(Integer)
    clocks: Mapped[int] = mapped_column(Integer)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClockFact(_Who, Model):
    """A deadline clock. ``spent``, ``bin`` (on_time if met) and ``journey`` only once it stopped,
    met or late (not cancelled); ``prev_month``: the month of the same case's previous such stop of the
    same stage (a stop is its case's first in a period that starts after that month); ``prev_open``:
    the latest open_until of the same case's clocks started before it (a clock open at a moment is
    its case's first open then unless that is later)."""

    __tablename__ = "report_clocks"

    clock_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    open_until: Mapped[datetime] = mapped_column(UTCDateTime)   # stopped_at, or FOREVER
    start_month: Mapped[int] = mapped_column(Integer)
    stop_month: Mapped[int | None] = mapped_column(Integer)
    spent: Mapped[int | None] = mapped_column(Integer)
    bin: Mapped[str | None] = mapped_column(String(8))
    journey: Mapped[int | None] = mapped_column(Integer)
    prev_month: Mapped[int | None] = mapped_column(Integer)
    assignee: Mapped[str | None] = mapped_column(String(32))
    prev_open: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_report_clocks_case", "case_id"),
        Index("ix_report_clocks_done", "stage", "stop_month", "bin", "prev_month", *_DIMS),  # met: bin on_time
        Index("ix_report_clocks_who", "stage", "stop_month", *_DIMS, "bin"),
        Index("ix_report_clocks_spent", "stage", "spent", "stop_month", *_DIMS),
        Index("ix_report_clocks_month_spent", "stage", "stop_month", "spent", *_DIMS),
        Index("ix_report_clocks_journey", "stage", "journey", "stop_month", *_DIMS),
        *[Index(f"ix_report_clocks_{dim}_spent", "stage", dim, "spent", "stop_month",
                *[d for d in _DIMS if d != dim]) for dim in _DIMS],
        Index("ix_report_clocks_open", "open_until", "started_at", "stage", "start_month", "assignee", "prev_open",
              "case_id", *_DIMS),
        Index("ix_report_clocks_started", "stage", "start_month", "started_at", "open_until", *_DIMS),
        Index("ix_report_clocks_months", "stage", "start_month", "stop_month", *_DIMS))


class RequestFact(_Who, Model):
    """A request (a submitted case) and its triage: ``outcome`` is the procedure it was admitted
    to, or not_admitted (with ``reason``); assignee, NOBODY if none."""

    __tablename__ = "report_requests"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    month: Mapped[int] = mapped_column(Integer)
    triaged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    assignee: Mapped[str] = mapped_column(String(32))
    aggressor: Mapped[str] = mapped_column(String(24))

    # Each in the order of a grouping of the report, by month first.
    __table_args__ = (Index("ix_report_requests_month", "month", "outcome", "reason", "triaged_at", *_DIMS),
                      Index("ix_report_requests_assignee", "month", "assignee", *_DIMS),
                      *[Index(f"ix_report_requests_{dim}", "month", *dict.fromkeys([dim, *_DIMS]))
                        for dim in (*_DIMS, "aggressor")])


class MeasureFact(_Who, Model):
    """A measure decided: ``spent`` from decision to implementation, once implemented."""

    __tablename__ = "report_measures"

    measure_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    authority: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(40))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    month: Mapped[int] = mapped_column(Integer)
    implemented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    spent: Mapped[int | None] = mapped_column(Integer)
    # The month of the same case's previous measure: any, of the same authority, of the same kind.
    prev_month: Mapped[int | None] = mapped_column(Integer)
    prev_authority_month: Mapped[int | None] = mapped_column(Integer)
    prev_kind_month: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_report_measures_case", "case_id", "month", "implemented_at", "withdrawn_at", *_DIMS),
        Index("ix_report_measures_month", "month", "authority", "kind", "implemented_at", "withdrawn_at", "prev_month",
              "prev_authority_month", "prev_kind_month", *_DIMS),
        *[Index(f"ix_report_measures_{by}_spent" if by else "ix_report_measures_spent",
                *dict.fromkeys([*([by] if by else []), "spent", "month", "decided_at", "implemented_at", *_DIMS]))
          for by in ("authority", "kind", "month", None)])


class ThreatFact(_Who, Model):
    """An online threat reported to its platform: hours to the platform's answer, and to removal."""

    __tablename__ = "report_threats"

    threat_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    month: Mapped[int] = mapped_column(Integer)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answer_time: Mapped[int | None] = mapped_column(Integer)
    removal_time: Mapped[int | None] = mapped_column(Integer)
    # The month of the same case's previous report: any, to the same platform.
    prev_month: Mapped[int | None] = mapped_column(Integer)
    prev_platform_month: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_report_threats_case", "case_id", "month", "platform", "responded_at", *_DIMS),
        Index("ix_report_threats_month", "month", "platform", "responded_at", "prev_month", "prev_platform_month",
              *_DIMS),
        *[Index(f"ix_report_threats_{by}_{time}" if by else f"ix_report_threats_{time}",
                *dict.fromkeys([*([by] if by else []), time, "month", at, *_DIMS]))
          for time, at in (("answer_time", "responded_at"), ("removal_time", "removed_at"))
          for by in ("platform", "month", None)])
