"""Deadline policies (versioned data), operator closures, and case clocks."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..crypto.columns import Ciphertext, RowId, sealed
from ..extensions import Model, UTCDateTime, utcnow


class DeadlinePolicy(Model):
    """One version of the rule for one stage. Clocks keep the version they
    started under; a new version applies to clocks started on or after its
    effective date."""

    __tablename__ = "deadline_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[date] = mapped_column(Date)
    # Space-separated event kinds, each optionally narrowed: "triaged[procedure=ordinary]".
    start_events: Mapped[str] = mapped_column(String(300))
    stop_event: Mapped[str] = mapped_column(String(40))
    duration: Mapped[int] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(16))
    warn_percent: Mapped[int] = mapped_column(Integer, default=25)
    procedure: Mapped[str] = mapped_column(String(16), default="any")
    legal_basis: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("stage", "version", name="uq_deadline_policies_stage_version"),)


class Closure(Model):
    """A day the operator's office is closed (counted like a holiday)."""

    __tablename__ = "closures"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    label: Mapped[str] = mapped_column(String(120))
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))


class Clock(RowId, Model):
    """One legal term running on one case. ``state`` is what events and people made of it:
    running, paused, met, met late or cancelled. "Due soon" and "overdue" follow from the time
    (``status_at``) and are never written, so a sweep writes only its notifications."""

    __tablename__ = "clocks"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("deadline_policies.id"))
    stage: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    warn_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_seconds: Mapped[int] = mapped_column(Integer, default=0)
    pause_reason_ct: Mapped[bytes | None] = mapped_column("pause_reason", Ciphertext)

    pause_reason = sealed("pause_reason_ct")
    policy: Mapped[DeadlinePolicy] = relationship(lazy="joined")

    def status_at(self, now: datetime) -> str:
        """One of the seven states the Law's terms are shown in, at ``now``."""
        if self.state != "running":
            return self.state
        if now >= self.due_at:
            return "overdue"
        return "due_soon" if now >= self.warn_at else "running"

    @property
    def status(self) -> str:
        return self.status_at(utcnow())

    # Reads go by index ranges, never every clock (bench/sweep.py): running clocks falling due
    # (overdue, escalated) by (state, due_at); running clocks entering their warning window by
    # warn_at, in a partial index that holds running clocks only, with due_at to tell those
    # already overdue without reading their rows.
    __table_args__ = (Index("ix_clocks_state_due", "state", "due_at"),
                      Index("ix_clocks_running_warn", "warn_at", "due_at", postgresql_where=text("state = 'running'"),
                            sqlite_where=text("state = 'running'")))


class Sweep(Model):
    """How far a sweep has looked: the last one covered the moments in (swept_from, swept_to],
    and for escalation the due times in (escalated_from, escalated_to] (the escalation delay
    before its end, so a delay changed between sweeps neither skips nor repeats a clock). The
    next looks only past them, so an idle sweep reads nothing however many clocks are overdue;
    the row's lock is what one sweep at a time holds (others skip it)."""

    __tablename__ = "sweeps"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    swept_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    swept_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
