"""Pages that belong to no domain: the front door, language, health, errors."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from .cases import editions
from .crypto.uploads import StorageProblem
from .deadlines.service import overdue_count
from .extensions import db, login_manager
from .notify.service import unread_counted
from .security.access import home_endpoint

log = logging.getLogger(__name__)
bp = Blueprint("main", __name__)

LANGUAGES = {"es": "Español", "en": "English"}

ERRORS = {
    400: (_l("The request could not be understood"),
          _l("Something in the form was missing or malformed. Go back, reload the page and try again.")),
    403: (_l("Not allowed"), _l("Your account does not have access to this page.")),
    404: (_l("Page not found"), _l("There is nothing at this address.")),
    405: (_l("Not possible here"), _l("This page cannot be used that way.")),
    413: (_l("Too large"), _l("What you sent is larger than allowed.")),
    429: (_l("Too many attempts"), _l("Too many attempts in a short time. Wait a minute and try again.")),
    500: (_l("Something went wrong"), _l("Nothing was saved. Please try again in a moment.")),
    503: (_l("Try again shortly"), _l("The service is briefly unavailable. Nothing was saved; please try again in a moment.")),
}


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for(home_endpoint(current_user)))
    return redirect(url_for("accounts.login"))


@bp.route("/language", methods=["POST"])
def set_language():
    code = request.form.get("language")
    if code in LANGUAGES:
        session["locale"] = code
        if current_user.is_authenticated:
            current_user.locale = code
            db.session.commit()
    return redirect(safe_local_path(request.form.get("next")) or url_for("main.index"))


def safe_local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None (never send anyone
    to another host). No control characters: URL parsing drops tabs and
    newlines, so "/\t/evil.org" would leave as "//evil.org"."""
    if (target and target.startswith("/") and not target.startswith("//") and "\\" not in target
            and target.isprintable()):
        return target
    return None


def refuse_json_bodies():
    # Every form here is an HTML form; Flask-WTF would also read a JSON body,
    # letting numbers and lists reach validators that expect text.
    if request.method not in ("GET", "HEAD", "OPTIONS") and request.is_json:
        abort(400)


@dataclass(frozen=True)
class Navigation:
    unread: int   # notices not read yet
    cases: int    # the editions as this request found them (cases/editions.py)
    clocks: int


# Built once: every signed-in page asks it.
_NAVIGATION = select(unread_counted(bindparam("user_id")), editions.edition(editions.CASES),
                     editions.edition(editions.CLOCKS))


def navigation() -> Navigation:
    """The signed-in person's unread notices and both editions, in one statement, once per
    request; a change made during the request forgets them (``editions.raise_edition``)."""
    found = g.get(editions.SEEN)
    if found is None:
        unread, cases, clocks = db.session.execute(_NAVIGATION, {"user_id": current_user.id}).one()
        found = Navigation(unread or 0, cases or 0, clocks or 0)
        setattr(g, editions.SEEN, found)
    return found


def navigation_counts() -> dict:
    """Overdue deadlines and unread notices, shown in the navigation bar."""
    if not current_user or not current_user.is_authenticated:
        return {}
    seen = navigation()
    return {"nav_overdue": overdue_count(db.session, current_user, seen.cases, seen.clocks),
            "nav_unread": seen.unread}


def select_locale() -> str:
    if not has_request_context():  # CLI, sweeper, tests calling services
        return current_app.extensions["protect.settings"].default_locale
    if current_user and current_user.is_authenticated and current_user.locale in LANGUAGES:
        return current_user.locale
    if session.get("locale") in LANGUAGES:
        return session["locale"]
    return (request.accept_languages.best_match(list(LANGUAGES))
            or current_app.extensions["protect.settings"].default_locale)


def _render_error(code: int, message=None):
    title, generic = ERRORS.get(code, ERRORS[500])
    return render_template("error.html", title=title, message=message or generic, code=code), code


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        log.info("CSRF check refused a request to %s: %s", request.endpoint, exc.description)
        return _render_error(400)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        # The blob store's refusals say what happened (full, unreachable), already translated.
        message = exc.description if isinstance(exc, StorageProblem) else None
        return _render_error(exc.code if exc.code in ERRORS else 400, message)

    @app.errorhandler(DataError)
    def refused_by_database(exc):
        # Input the database will not store or compare (a NUL byte in text on
        # PostgreSQL, a number out of range): the request was malformed.
        db.session.rollback()
        log.warning("database refused input on %s: %s", request.endpoint, type(exc.orig).__name__)
        return _render_error(400)

    @app.errorhandler(OperationalError)
    def database_down(exc):
        db.session.rollback()
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        # The page must not need the database: reading the signed-in account (or its
        # counts for the menu) would fail again and end in a bare 500. It is shown as
        # to a visitor; the session cookie is left alone, signed in for the next request.
        g._login_user = login_manager.anonymous_user()
        return _render_error(503)

    @app.errorhandler(Exception)
    def unexpected(exc):
        # The trace goes to the operator's log (no request data in it), never to the user.
        log.exception("unhandled error on %s", request.endpoint)
        db.session.rollback()
        return _render_error(500)
