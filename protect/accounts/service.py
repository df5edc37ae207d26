"""Accounts: the rules for signing in, second factors, passwords and users.

Plain functions taking a database session and the acting user; each state
change writes its audit row in the same transaction.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, func, select, update

from ..audit import service as audit
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import Session, rowcount, utcnow
from ..security import passwords, totp
from ..security.sessions import end_all_sessions
from .models import ROLES, RecoveryCode, User


def find_by_email(db: Session, email: str) -> User | None:
    return db.execute(select(User).where(User.email.lookup(User, email))).scalar_one_or_none()


def authenticate(db: Session, email: str, password: str) -> User | None:
    """The user whose password this is, or None. The same audit row and the
    same cost whether the account is missing, disabled or the password wrong."""
    user = find_by_email(db, email) if email else None
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.active:
        audit.record(db, "login.failed", target=user.id if user else None)
        db.commit()
        return None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return user


def complete_login(db: Session, user: User, method: str) -> None:
    user.last_login_at = utcnow()
    audit.record(db, "login.ok", actor=user, target=user.id, method=method)


def record_logout(db: Session, user: User) -> None:
    audit.record(db, "logout", actor=user, target=user.id)


def check_second_factor(db: Session, user: User, code: str) -> str | None:
    """'totp' or 'recovery' when ``code`` is a valid second factor, else None."""
    step = totp.accepted_step(user.totp_secret, code, user.totp_last_step) if user.totp_enabled else None
    if step is not None:
        user.totp_last_step = step
        return "totp"
    used = rowcount(db.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None),
               RecoveryCode.code_hash == totp.hash_recovery_code(code))
        .values(used_at=utcnow())))
    if used:
        audit.record(db, "2fa.recovery_code_used", actor=user, target=user.id)
        return "recovery"
    audit.record(db, "login.failed", target=user.id, factor="second")
    db.commit()
    return None


def start_totp_enrolment(db: Session, user: User) -> str:
    """A new pending secret; the old one (if any) stays in force until confirmed."""
    if not user.totp_pending:
        user.totp_pending = totp.new_secret()
        db.commit()
    return user.totp_pending


def confirm_totp_enrolment(db: Session, user: User, code: str) -> list[str]:
    """Make the pending secret the user's second factor once a code from it
    checks out; returns the new recovery codes (shown once)."""
    secret = user.totp_pending
    step = totp.accepted_step(secret, code, None) if secret else None
    if step is None:
        raise DomainError(_l("That code is not right. Check the time on your phone and try again."))
    user.totp_secret = secret
    user.totp_pending = None
    user.totp_enabled = True
    user.totp_last_step = step
    codes = _replace_recovery_codes(db, user)
    audit.record(db, "2fa.enrolled", actor=user, target=user.id)
    return codes


def new_recovery_codes(db: Session, user: User, password: str) -> list[str]:
    if not passwords.verify_password(user.password_hash, password):
        raise DomainError(_l("Your current password is not right."))
    if not user.totp_enabled:
        raise DomainError(_l("Turn on two-step verification first."))
    codes = _replace_recovery_codes(db, user)
    audit.record(db, "2fa.recovery_codes_replaced", actor=user, target=user.id)
    return codes


def _replace_recovery_codes(db: Session, user: User) -> list[str]:
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = totp.new_recovery_codes()
    db.add_all(RecoveryCode(user_id=user.id, code_hash=totp.hash_recovery_code(c)) for c in codes)
    return codes


def recovery_codes_left(db: Session, user: User) -> int:
    return db.execute(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))).scalar_one()


def disable_totp(db: Session, user: User, password: str) -> None:
    if user.needs_totp:
        raise PermissionDenied(_l("Two-step verification is required for your role."))
    if not passwords.verify_password(user.password_hash, password):
        raise DomainError(_l("Your current password is not right."))
    _clear_totp(db, user)
    audit.record(db, "2fa.disabled", actor=user, target=user.id)


def reset_totp(db: Session, actor: User | None, user: User) -> None:
    """Break-glass: the user enrols again at next login (staff) or goes without."""
    _clear_totp(db, user)
    end_all_sessions(user)
    audit.record(db, "2fa.reset", actor=actor, target=user.id)


def _clear_totp(db: Session, user: User) -> None:
    user.totp_secret = None
    user.totp_pending = None
    user.totp_enabled = False
    user.totp_last_step = None
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def change_password(db: Session, user: User, current: str, new: str, confirm: str) -> None:
    if not passwords.verify_password(user.password_hash, current):
        raise DomainError(_l("Your current password is not right."))
    _check_new_password(new, confirm)
    user.password_hash = passwords.hash_password(new)
    user.password_changed_at = utcnow()
    audit.record(db, "password.changed", actor=user, target=user.id)


def _check_new_password(new: str, confirm: str) -> None:
    if new != confirm:
        raise DomainError(_l("The two new passwords are not the same."))
    problems = passwords.password_problems(new)
    if problems:
        raise DomainError(problems[0])


def create_user(db: Session, actor: User | None, *, email: str, role: str, password: str,
                name: str | None = None, enrol_totp: bool = False) -> tuple[User, str | None]:
    """A new account. With ``enrol_totp`` a staff account gets its TOTP secret
    now (returned once, for scripts); otherwise staff enrol at first login."""
    if actor is not None and actor.role != "admin":
        raise PermissionDenied(_l("Only administrators create accounts."))
    email = email.strip()
    if not email.isprintable() or (name and not name.isprintable()):
        raise DomainError(_l("Remove the control characters from the e-mail address and name."))
    if role not in ROLES:
        raise DomainError(_l("Choose one of the roles."))
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise DomainError(_l("Enter a valid e-mail address."))
    if find_by_email(db, email):
        raise DomainError(_l("An account with this e-mail address already exists."))
    _check_new_password(password, password)
    user = User(role=role, password_hash=passwords.hash_password(password))
    user.email = email
    user.name = name or None
    secret = None
    if enrol_totp and role in ("caseworker", "supervisor", "admin"):
        secret = totp.new_secret()
        user.totp_secret = secret
        user.totp_enabled = True
    db.add(user)
    db.flush()
    audit.record(db, "user.created", actor=actor, target=user.id, role=role)
    return user, secret


def get_user(db: Session, user_id: str) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound(_l("No such account."))
    return user


def update_user(db: Session, actor: User, user: User, *, role: str, active: bool) -> None:
    if actor.role != "admin":
        raise PermissionDenied(_l("Only administrators change accounts."))
    if role not in ROLES:
        raise DomainError(_l("Choose one of the roles."))
    if user.id == actor.id and (role != "admin" or not active):
        raise DomainError(_l("You cannot remove your own administrator access."))
    if role != user.role:
        audit.record(db, "user.role_changed", actor=actor, target=user.id,
                     old=user.role, new=role)
        user.role = role
        end_all_sessions(user)
    if active != user.active:
        audit.record(db, "user.enabled" if active else "user.disabled",
                     actor=actor, target=user.id)
        user.active = active
        if not active:
            end_all_sessions(user)


def list_users(db: Session, *, role: str | None = None, page: int = 1, per_page: int = 50):
    query = select(User)
    if role in ROLES:
        query = query.where(User.role == role)
    total = db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    users = db.execute(query.order_by(User.created_at.desc())
                       .offset((page - 1) * per_page).limit(per_page)).scalars().all()
    return users, total
