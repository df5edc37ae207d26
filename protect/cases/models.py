"""Cases and everything a case holds.

Personal data (names, contacts, places, narratives, notes, messages, file
names) is sealed in its column; codes and dates stay plain, so queues and
reports work in SQL without opening anything.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..crypto.columns import Ciphertext, RowId, sealed
from ..extensions import Model, UTCDateTime, utcnow


class Case(RowId, Model):
    __tablename__ = "cases"

    reference: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    procedure: Mapped[str | None] = mapped_column(String(16))  # extraordinary | ordinary
    immediate_danger: Mapped[bool] = mapped_column(Boolean, default=False)
    beneficiary_type: Mapped[str | None] = mapped_column(String(16))
    gender: Mapped[str | None] = mapped_column(String(16))
    state_code: Mapped[str | None] = mapped_column(String(8))
    journalism_kind: Mapped[str | None] = mapped_column(String(16))
    pseudonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    risk_level: Mapped[str | None] = mapped_column(String(16))
    outcome_reason: Mapped[str | None] = mapped_column(String(32))  # not-admitted / closure code
    petitioner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    filed_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    assignee_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    intake_step: Mapped[int] = mapped_column(Integer, default=1)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    name_ct: Mapped[bytes | None] = mapped_column("name", Ciphertext)
    real_identity_ct: Mapped[bytes | None] = mapped_column("real_identity", Ciphertext)
    contact_ct: Mapped[bytes | None] = mapped_column("contact", Ciphertext)
    outlet_ct: Mapped[bytes | None] = mapped_column("outlet", Ciphertext)
    municipality_ct: Mapped[bytes | None] = mapped_column("municipality", Ciphertext)
    others_at_risk_ct: Mapped[bytes | None] = mapped_column("others_at_risk", Ciphertext)

    name = sealed("name_ct")                    # the name or pseudonym used on the case
    real_identity = sealed("real_identity_ct")  # sealed: revealed only by a supervisor
    contact = sealed("contact_ct")
    outlet = sealed("outlet_ct")
    municipality = sealed("municipality_ct")
    others_at_risk = sealed("others_at_risk_ct")

    incidents: Mapped[list[Incident]] = relationship(
        back_populates="case", order_by="Incident.occurred_on", cascade="all, delete-orphan")
    online_threats: Mapped[list[OnlineThreat]] = relationship(
        back_populates="case", order_by="OnlineThreat.created_at", cascade="all, delete-orphan")
    evidence: Mapped[list[Evidence]] = relationship(
        back_populates="case", order_by="Evidence.created_at", cascade="all, delete-orphan")
    measures: Mapped[list[Measure]] = relationship(
        back_populates="case", order_by="Measure.decided_at", cascade="all, delete-orphan")

    __mapper_args__ = {"version_id_col": version}
    # The queue's orders and filters (bench/RESULTS.md, "pages"): priority order
    # without a sort, a caseworker's own cases, a filer's drafts.
    __table_args__ = (Index("ix_cases_queue", "status", "immediate_danger", "submitted_at"),
                      Index("ix_cases_priority", immediate_danger.desc(), submitted_at, "id"),
                      Index("ix_cases_assignee_status", "assignee_id", "status", "immediate_danger",
                            "submitted_at", "id"),
                      Index("ix_cases_filer_status", "filed_by_id", "status"))


class ListEdition(Model):
    """How often what the case lists ("cases") or the deadline counts ("clocks") show has
    changed: raised in the transaction of every change (cases/editions.py)."""

    __tablename__ = "list_editions"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)  # "cases" | "clocks"
    number: Mapped[int] = mapped_column(BigInteger, default=0)


class Incident(RowId, Model):
    __tablename__ = "incidents"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    occurred_on: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(20))
    aggressor: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    place_ct: Mapped[bytes | None] = mapped_column("place", Ciphertext)
    narrative_ct: Mapped[bytes | None] = mapped_column("narrative", Ciphertext)
    place = sealed("place_ct")
    narrative = sealed("narrative_ct")

    case: Mapped[Case] = relationship(back_populates="incidents")


class OnlineThreat(RowId, Model):
    """A threatening post or account, and the report made to its platform."""

    __tablename__ = "online_threats"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    incident_id: Mapped[str | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    platform: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    platform_report_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(16))
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locator_ct: Mapped[bytes | None] = mapped_column("locator", Ciphertext)
    locator = sealed("locator_ct")  # URL or account handle

    case: Mapped[Case] = relationship(back_populates="online_threats")


class Evidence(RowId, Model):
    __tablename__ = "evidence"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    incident_id: Mapped[str | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    online_threat_id: Mapped[str | None] = mapped_column(ForeignKey("online_threats.id", ondelete="SET NULL"))
    blob_id: Mapped[str] = mapped_column(String(32), unique=True)
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    uploaded_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    filename_ct: Mapped[bytes | None] = mapped_column("filename", Ciphertext)
    filename = sealed("filename_ct")

    case: Mapped[Case] = relationship(back_populates="evidence")


class RiskAssessment(RowId, Model):
    __tablename__ = "risk_assessments"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    factors_ct: Mapped[bytes | None] = mapped_column("factors", Ciphertext)
    recommendation_ct: Mapped[bytes | None] = mapped_column("recommendation", Ciphertext)
    factors = sealed("factors_ct")
    recommendation = sealed("recommendation_ct")


class BoardDecision(RowId, Model):
    __tablename__ = "board_decisions"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    decided_on: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    communicated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MeasureType(Model):
    """The measures catalogue (seeded by a migration, editable)."""

    __tablename__ = "measure_types"

    code: Mapped[str] = mapped_column(String(24), primary_key=True)
    category: Mapped[str] = mapped_column(String(16))  # urgent | protection | preventive
    name_es: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Measure(RowId, Model):
    __tablename__ = "measures"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    decision_id: Mapped[str | None] = mapped_column(ForeignKey("board_decisions.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(ForeignKey("measure_types.code"))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    authority: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="decided")
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    implemented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    case: Mapped[Case] = relationship(back_populates="measures")


class Review(RowId, Model):
    __tablename__ = "reviews"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    notes_ct: Mapped[bytes | None] = mapped_column("notes", Ciphertext)
    notes = sealed("notes_ct")


class Appeal(RowId, Model):
    """An inconformidad against a decision, with the independent study."""

    __tablename__ = "appeals"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    study_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    grounds_ct: Mapped[bytes | None] = mapped_column("grounds", Ciphertext)
    grounds = sealed("grounds_ct")


class Note(RowId, Model):
    """A caseworker's note: staff only, never shown to the journalist."""

    __tablename__ = "case_notes"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    body_ct: Mapped[bytes] = mapped_column("body", Ciphertext)
    body = sealed("body_ct")


class Message(RowId, Model):
    """A message between the case team and the journalist."""

    __tablename__ = "case_messages"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    to_petitioner: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    body_ct: Mapped[bytes] = mapped_column("body", Ciphertext)
    body = sealed("body_ct")


class CaseEvent(Model):
    """The append-only timeline: one typed row per thing that happened.

    ``data`` holds codes and ids only, never personal data; deadlines and
    reports are computed from these rows.
    """

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    data: Mapped[dict] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_case_events_case_at", "case_id", "at"),
                      Index("ix_case_events_kind_at", "kind", "at"))
