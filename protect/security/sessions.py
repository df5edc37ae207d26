"""Login sessions kept server-side.

The signed cookie carries only a random token; the ``login_sessions`` row it
names decides whether the session is alive. That makes logout, password
change and idle timeout real: a copied cookie stops working with them.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app, session
from flask_login import login_user, logout_user
from sqlalchemy import bindparam, select, update

from ..accounts.models import LoginSession, User
from ..extensions import db, login_manager, utcnow

# Writing last_seen on every request would be a write per page view.
TOUCH_EVERY = timedelta(seconds=60)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def idle_limit(user: User) -> timedelta:
    s = current_app.extensions["protect.settings"]
    return timedelta(minutes=s.staff_idle_minutes if user.is_staff else s.idle_minutes)


def start(user: User) -> None:
    """Sign ``user`` in on a fresh session: nothing from before login survives."""
    locale = session.get("locale")
    session.clear()
    if locale:
        session["locale"] = locale
    token = secrets.token_urlsafe(32)
    db.session.add(LoginSession(id=_digest(token), user_id=user.id))
    session["sid"] = token
    login_user(user)


def end() -> None:
    token = session.get("sid")
    if token:
        db.session.execute(update(LoginSession).where(LoginSession.id == _digest(token))
                           .values(ended_at=utcnow()))
    logout_user()
    session.clear()


def end_other_sessions(user: User) -> None:
    """End every session of ``user`` but this one (after a password change)."""
    keep = _digest(session.get("sid", ""))
    db.session.execute(update(LoginSession)
                       .where(LoginSession.user_id == user.id, LoginSession.id != keep,
                              LoginSession.ended_at.is_(None))
                       .values(ended_at=utcnow()))


def end_all_sessions(user: User) -> None:
    db.session.execute(update(LoginSession)
                       .where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
                       .values(ended_at=utcnow()))


# The session and its account in one statement, built once: this runs on every signed-in request.
_SESSION = (select(LoginSession, User).join(User, User.id == LoginSession.user_id)
            .where(LoginSession.id == bindparam("digest")))


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    token = session.get("sid")
    if not token:
        return None
    found = db.session.execute(_SESSION, {"digest": _digest(token)}).first()
    if found is None:
        return None
    row, user = found
    if row.ended_at is not None or row.user_id != user_id or not user.active:
        return None
    now = utcnow()
    if now - row.last_seen_at > idle_limit(user):
        row.ended_at = now
        db.session.commit()
        session["expired"] = True
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
        db.session.commit()
    return user
