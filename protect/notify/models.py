from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model, UTCDateTime, utcnow


class Notification(Model):
    """An in-app notice to one person. ``key`` is unique, so whatever writes
    notifications (the sweep above all) can run again without doubling any.

    The person and the case are named by id without foreign keys, as in the
    audit trail: checking them cost the sweep more than writing the rows
    (migration 0008), and neither is ever deleted."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


OUTBOX_STATES = ("pending", "sending", "sent", "failed")


class OutboxEmail(Model):
    """An e-mail waiting to be sent (the transactional outbox).

    Written in the transaction that writes its notification (same ``key``),
    so an e-mail exists exactly when its notification committed; the sender
    (``protect.notify.mail.deliver``) picks it up only after that commit.
    Subject and body are rendered at enqueue time in the recipient's language
    and hold the case reference and the stage only. The address is not
    stored here: it is opened from the recipient's sealed e-mail at send time.

    ``next_attempt_at`` is when a pending row is due, and for a row being
    sent it is the end of the sender's lease: a ``sending`` row past it was
    left by a sender that died, and is tried again.
    """

    __tablename__ = "email_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    # An account holder's e-mail, or (release_id) a vault recipient's release notice,
    # whose one-time link is made at send time so it exists only in the message.
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    release_id: Mapped[str | None] = mapped_column(ForeignKey("vault_releases.id", ondelete="CASCADE"),
                                                   index=True)
    language: Mapped[str] = mapped_column(String(5))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), default="pending")  # OUTBOX_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(80))  # exception class name only
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_email_outbox_state_next", "state", "next_attempt_at"),)
