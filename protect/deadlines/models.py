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
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    pause_reason = sealed("pause_reason_ct")
    policy: Mapped[DeadlinePolicy] = relationship(lazy="joined")

    # The sweep's queries read index ranges, never every clock (bench/sweep.py): clocks falling
    # due (and to escalate) by (state, due_at); running clocks entering their warning window by
    # warn_at, in a partial index that holds running clocks only (small, and no rival for the
    # escalation query when statistics lag behind a mass change).
    __table_args__ = (Index("ix_clocks_state_due", "state", "due_at"),
                      Index("ix_clocks_running_warn", "warn_at", postgresql_where=text("state = 'running'"),
                            sqlite_where=text("state = 'running'")))
