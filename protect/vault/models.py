"""The dead-man's vault: vaults, recipients, co-depositors, deposits, the
timeline, PIN failures, incidents (two-supervisor trigger) and releases.

Plain columns hold codes, sizes and times only, so the sweep works in SQL;
titles, names, e-mail addresses, file names and reasons are sealed. The
vault's X25519 release secret is wrapped by the master key (``purpose="wrap"``)
and is absent in recipients-only mode. Deposits themselves are age files in
the blob store: the database holds no key that opens them.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..crypto.columns import Ciphertext, RowId, sealed
from ..extensions import Model, UTCDateTime, utcnow

STATES = ("draft", "armed", "reminded", "grace", "welfare_hold", "pending_release", "released",
          "paused", "disarmed")
DURESS_ACTIONS = ("alert", "alert_and_release")
AFTER_GRACE = ("release", "welfare_hold")
RELEASE_CAUSES = ("missed_checkin", "duress", "incident", "request")
INCIDENT_KINDS = ("disappearance", "killing", "detention")


class Vault(RowId, Model):
    __tablename__ = "vaults"

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    title_ct: Mapped[bytes] = mapped_column("title", Ciphertext)
    state: Mapped[str] = mapped_column(String(20), default="draft")
    recipients_only: Mapped[bool] = mapped_column(Boolean, default=False)
    # The release identity: secret wrapped by the master key, public half plain.
    release_secret_ct: Mapped[bytes | None] = mapped_column("release_secret", Ciphertext)
    release_recipient: Mapped[str | None] = mapped_column(String(100))

    pin_hash: Mapped[str | None] = mapped_column(String(255))
    duress_pin_hash: Mapped[str | None] = mapped_column(String(255))
    duress_action: Mapped[str] = mapped_column(String(20), default="alert")

    # Schedule settings (hours).
    interval_hours: Mapped[int] = mapped_column(Integer, default=7 * 24)
    reminder_hours: Mapped[list] = mapped_column(JSON, default=lambda: [24, 2])
    grace_hours: Mapped[int] = mapped_column(Integer, default=48)
    after_grace: Mapped[str] = mapped_column(String(16), default="release")
    welfare_hold_hours: Mapped[int] = mapped_column(Integer, default=48)
    max_pause_hours: Mapped[int] = mapped_column(Integer, default=30 * 24)
    veto_hours: Mapped[int] = mapped_column(Integer, default=72)
    coerced_deletion_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    deletion_delay_hours: Mapped[int] = mapped_column(Integer, default=72)
    # How many times each recipient may download each file after release.
    downloads_per_file: Mapped[int] = mapped_column(Integer, default=1)
    # A messaging bridge the reminders are also posted to (sealed: it can name the person).
    webhook_url_ct: Mapped[bytes | None] = mapped_column("webhook_url", Ciphertext)

    # Schedule state. grace_until and hold_until are computed with next_due_at,
    # so the sweep's transitions are plain comparisons in SQL.
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_checkin_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hold_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    release_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    release_cause: Mapped[str | None] = mapped_column(String(20))
    # What the owner is shown while a concealed release (duress, incident) runs.
    cover_state: Mapped[str | None] = mapped_column(String(20))
    release_requested_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    release_requested_by_recipient_id: Mapped[str | None] = mapped_column(String(32))
    release_reason_ct: Mapped[bytes | None] = mapped_column("release_reason", Ciphertext)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Delayed (coerced-deletion-protected) deletion of the whole vault.
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    title = sealed("title_ct")
    release_secret = sealed("release_secret_ct", binary=True, purpose="wrap")
    release_reason = sealed("release_reason_ct")
    webhook_url = sealed("webhook_url_ct")

    recipients: Mapped[list[Recipient]] = relationship(
        back_populates="vault", order_by="Recipient.created_at", cascade="all, delete-orphan",
        passive_deletes=True)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_vaults_state_due", "state", "next_due_at"),
        Index("ix_vaults_state_reminder", "state", "next_reminder_at"),
        Index("ix_vaults_delete_after", "delete_after"),
    )


class Recipient(RowId, Model):
    __tablename__ = "vault_recipients"

    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    name_ct: Mapped[bytes] = mapped_column("name", Ciphertext)
    email_ct: Mapped[bytes] = mapped_column("email", Ciphertext)
    age_recipient: Mapped[str | None] = mapped_column(String(100))
    # Keyless recipients: a code the journalist gives them out of band (Argon2id).
    access_code_hash: Mapped[str | None] = mapped_column(String(255))
    # Recipients have no account: the language of their release e-mail and pages.
    language: Mapped[str] = mapped_column(String(5), default="es")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    name = sealed("name_ct")
    email = sealed("email_ct")

    vault: Mapped[Vault] = relationship(back_populates="recipients")


class CoDepositor(Model):
    """Another journalist who may add deposits: never read, list names or delete."""

    __tablename__ = "vault_codepositors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("vault_id", "user_id", name="uq_vault_codepositors_vault_user"),)


class Deposit(RowId, Model):
    """One age file in the blob store. After deletion the row stays as a
    tombstone: no blob, no name."""

    __tablename__ = "vault_deposits"

    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # file | note
    filename_ct: Mapped[bytes | None] = mapped_column("filename", Ciphertext)
    # The file name as a small age file for the deposit's recipients (the
    # only copy of the name in a recipients-only vault).
    name_age: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    blob_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    filename = sealed("filename_ct")

    __table_args__ = (Index("ix_vault_deposits_delete_after", "delete_after"),)


class VaultEvent(Model):
    """The vault's timeline (codes only). ``concealed`` events are left out of
    what the owner sees (a duress-started release must not show)."""

    __tablename__ = "vault_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    actor_id: Mapped[str | None] = mapped_column(String(32))
    concealed: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class PinFailure(Model):
    """A wrong PIN; recent ones throttle the vault's PIN checks."""

    __tablename__ = "vault_pin_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_vault_pin_failures_vault_at", "vault_id", "at"),)


class VaultIncident(RowId, Model):
    """An incident one supervisor reports and a different one confirms."""

    __tablename__ = "vault_incidents"

    journalist_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(12), default="reported")  # reported | confirmed
    reported_by_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report_reason_ct: Mapped[bytes] = mapped_column("report_reason", Ciphertext)
    confirm_reason_ct: Mapped[bytes | None] = mapped_column("confirm_reason", Ciphertext)

    report_reason = sealed("report_reason_ct")
    confirm_reason = sealed("confirm_reason_ct")


class Release(RowId, Model):
    """One recipient's access to a released vault. The link token is made
    when the notice is sent (so it lives only in that e-mail); only its
    SHA-256 is kept."""

    __tablename__ = "vault_releases"

    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    recipient_id: Mapped[str] = mapped_column(ForeignKey("vault_recipients.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    link_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("vault_id", "recipient_id", name="uq_vault_releases_vault_recipient"),)


class ReleaseDownload(Model):
    """How many times one recipient downloaded one deposit of a released vault."""

    __tablename__ = "vault_release_downloads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("vault_releases.id", ondelete="CASCADE"))
    deposit_id: Mapped[str] = mapped_column(ForeignKey("vault_deposits.id", ondelete="CASCADE"), index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("release_id", "deposit_id", name="uq_vault_release_downloads_release_deposit"),)


class WebhookMessage(Model):
    """A reminder posted to the vault's messaging bridge (an outbox like the
    e-mail one). The URL is opened from the vault at send time; the payload
    holds codes and times only."""

    __tablename__ = "vault_webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(10), default="pending")  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_vault_webhook_outbox_state_next", "state", "next_attempt_at"),)


class OrphanBlob(Model):
    """A blob no row named when the collector last looked; deleted once it
    has been an orphan for an hour (an upload commits its blob before its row)."""

    __tablename__ = "orphan_blobs"

    blob_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
