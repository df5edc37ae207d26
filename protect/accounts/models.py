from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..crypto.columns import Ciphertext, RowId, sealed
from ..extensions import Model, UTCDateTime, utcnow

ROLES = ("journalist", "caseworker", "supervisor", "donor", "admin")
STAFF_ROLES = frozenset({"caseworker", "supervisor", "admin"})


def normalise_email(value: str) -> str:
    return value.strip().lower()


class User(RowId, UserMixin, Model):
    __tablename__ = "users"

    email_ct: Mapped[bytes] = mapped_column("email", Ciphertext)
    email_index: Mapped[str] = mapped_column(String(96), unique=True)
    name_ct: Mapped[bytes | None] = mapped_column("name", Ciphertext)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locale: Mapped[str | None] = mapped_column(String(5))
    totp_secret_ct: Mapped[bytes | None] = mapped_column("totp_secret", Ciphertext)
    # A secret being enrolled: it takes effect only once a code from it is verified.
    totp_pending_ct: Mapped[bytes | None] = mapped_column("totp_pending", Ciphertext)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Highest TOTP time step accepted, so a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A donor limited to part of the programme: {"states": [...], "beneficiaries": [...]}.
    report_scope: Mapped[dict | None] = mapped_column(JSON)

    email = sealed("email_ct", index="email_index", normalise=normalise_email)
    name = sealed("name_ct")
    totp_secret = sealed("totp_secret_ct")
    totp_pending = sealed("totp_pending_ct")

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def needs_totp(self) -> bool:
        return self.is_staff


class RecoveryCode(Model):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginSession(Model):
    """A server-side record of each login, so a session can really be ended
    (logout, password change, idle timeout) rather than merely forgotten."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the token
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
