"""Flask extensions, created unbound and initialised by the app factory."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import flask_babel
from flask import current_app, g, has_app_context
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import DateTime, MetaData, TypeDecorator
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.orm import DeclarativeBase, scoped_session
from sqlalchemy.orm import Session as OrmSession

# Stable constraint names, so Alembic can alter them on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every engine (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Now:
    """The app's one source of the current time (``app.extensions["protect.now"]``).

    Deadlines, check-ins and sessions all ask it, so tests (browser tests
    included) move time forward instead of sleeping.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta | None = None, **kwargs) -> None:
        self.offset += delta if delta is not None else timedelta(**kwargs)


def utcnow() -> datetime:
    if has_app_context():
        return current_app.extensions["protect.now"]()
    return datetime.now(UTC)


db = SQLAlchemy(model_class=Base)
# Type checkers cannot see ``db.Model`` (made at run time from Base); models
# subclass ``Model``, which is ``db.Model`` when the code runs.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
# What services take: the request's session (Flask-SQLAlchemy's scoped proxy) or a plain one.
Session: TypeAlias = OrmSession | scoped_session[Any]
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


class _Domain(flask_babel.Domain):
    def get_translations(self):
        """This request's translations, found once per locale. Flask-Babel finds them anew for
        every string (context look-ups and the locale's name each time): a page translating a
        few hundred strings, lazy labels included, spent milliseconds on it."""
        ctx = g.get("_flask_babel")
        kept = getattr(ctx, "protect_translations", None)
        if kept is not None and kept[0] is getattr(ctx, "babel_locale", None):
            return kept[1]
        translations = super().get_translations()
        ctx = g.get("_flask_babel")  # made by the look-up; force_locale swaps its babel_locale
        if ctx is not None:
            ctx.protect_translations = (ctx.babel_locale, translations)
        return translations


class Babel(flask_babel.Babel):
    @cached_property
    def domain_instance(self):
        return _Domain(domain=self.domain)


babel = Babel()


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE, DELETE or INSERT without RETURNING touched.

    ``Session.execute`` is typed to return a plain ``Result``; for those statements
    it is a ``CursorResult``, which has the count.
    """
    return cast(CursorResult[Any], result).rowcount
