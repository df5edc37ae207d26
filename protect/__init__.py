"""protect: case management for journalist-protection mechanisms."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_babel import get_locale
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.pool import Pool

from .crypto.blobs import blob_store_from_url
from .crypto.keyring import load_keyring
from .extensions import Now, babel, csrf, db, limiter, login_manager, migrate
from .localtime import moment
from .settings import ROOT, load_settings


def create_app(config_overrides: Mapping[str, Any] | None = None) -> Flask:
    settings = load_settings(config_overrides)
    app = Flask(__name__, instance_path=settings.instance_path,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.extensions["protect.settings"] = settings
    app.extensions["protect.now"] = Now()
    app.extensions["protect.keyring"] = load_keyring(settings.instance, settings.master_keys)
    app.extensions["protect.blobs"] = blob_store_from_url(
        settings.blob_url, endpoint_url=settings.s3_endpoint_url or None)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        DEBUG=settings.debug,
        TESTING=settings.testing,
        SQLALCHEMY_DATABASE_URI=_sqlalchemy_url(settings.database_url),
        # Parameters may hold sealed personal data; keep them out of error text.
        SQLALCHEMY_ENGINE_OPTIONS={"hide_parameters": True},
        SESSION_COOKIE_NAME="protect_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.env == "production" or settings.public_url.startswith("https://"),
        MAX_CONTENT_LENGTH=settings.max_upload_mb * 1024 * 1024,
        MAX_FORM_MEMORY_SIZE=2 * 1024 * 1024,  # above the upload read size (crypto/uploads.py)
        WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_url,
        RATELIMIT_HEADERS_ENABLED=False,
        BABEL_DEFAULT_LOCALE=settings.default_locale,
        # People read times in Mexico City time; storage stays UTC.
        BABEL_DEFAULT_TIMEZONE="America/Mexico_City",
        BABEL_TRANSLATION_DIRECTORIES=str(ROOT / "protect" / "translations"),
    )
    _init_extensions(app)
    _register(app)
    return app


def _sqlalchemy_url(url: str) -> str:
    # psycopg 3 is the driver; accept the plain postgresql:// form operators write.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        # 64 MiB of page cache instead of 2: mass sweeps and the queue's sorts (bench/RESULTS.md).
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()


# A pooled connection idle this long is tried before use, so that a database restarted meanwhile
# costs nobody a request; one in steady use is not tried (the try is a round trip per request): a
# restart within this second fails the requests it catches like those in flight (503, try again),
# and the first failure replaces every pooled connection.
IDLE_BEFORE_PING = 1.0


@event.listens_for(Pool, "checkin")
def _returned(_dbapi_connection, record) -> None:
    record.info["returned_at"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    if time.monotonic() - record.info.get("returned_at", float("-inf")) < IDLE_BEFORE_PING:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        # The ping's implicit transaction ends here: a connection leaves the pool idle (one in a
        # transaction cannot be switched to autocommit, as the reports' VACUUM does).
        dbapi_connection.rollback()
    except Exception as exc:
        # The pool replaces the connection and checks out another (SQLAlchemy's own recipe).
        raise DisconnectionError() from exc


def _init_extensions(app: Flask) -> None:
    from .crypto import uploads
    from .main import refuse_json_bodies, select_locale
    from .security import access, sessions  # noqa: F401  (sessions registers the user loader)
    uploads.install(app)
    db.init_app(app)
    app.teardown_appcontext(_end_session)  # runs before Flask-SQLAlchemy's own (registered first)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True,
                     compare_type=True)
    login_manager.init_app(app)
    login_manager.login_view = "accounts.login"
    login_manager.login_message = None
    login_manager.session_protection = None  # sessions are checked server-side instead
    # The access policy runs before CSRF checking, which parses the body:
    # nobody without access gets a request body read at all.
    access.install(app)
    app.before_request(refuse_json_bodies)
    csrf.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    logging.getLogger("protect").setLevel(logging.INFO)


def _end_session(_exc) -> None:
    """End the request's session; a connection the database dropped (a restart) cannot
    even be rolled back, and must not turn the answer already made into a 500."""
    try:
        db.session.remove()
    except OperationalError as exc:
        logging.getLogger("protect").warning("database connection lost while ending a session: %s",
                                             type(exc.orig).__name__)


def _register(app: Flask) -> None:
    from . import ops
    from .accounts.views import bp as accounts_bp
    from .audit.views import bp as audit_bp
    from .cases.intake import bp as intake_bp
    from .cases.views import bp as cases_bp
    from .cli import cli
    from .crypto import serverkeys  # noqa: F401  (model)
    from .deadlines import sweeper
    from .deadlines.views import bp as deadlines_bp
    from .main import LANGUAGES, install_error_handlers, navigation_counts
    from .main import bp as main_bp
    from .notify.views import bp as notify_bp
    from .reports.views import bp as reports_bp
    from .security import headers
    from .security.access import home_endpoint
    from .vault.release_views import bp as release_bp
    from .vault.staff_views import bp as vault_staff_bp
    from .vault.views import bp as vault_bp

    for bp in (main_bp, accounts_bp, audit_bp, intake_bp, cases_bp, deadlines_bp, notify_bp, reports_bp,
               vault_bp, vault_staff_bp, release_bp):
        app.register_blueprint(bp)
    headers.install(app)
    ops.install(app)
    sweeper.install(app)
    install_error_handlers(app)
    app.cli.add_command(cli)
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.jinja_env.globals["get_locale"] = get_locale
    app.jinja_env.filters["local_datetime"] = moment
    app.jinja_env.globals["home_endpoint"] = home_endpoint
    app.context_processor(navigation_counts)

