"""`flask protect doctor`: what is wrong with this deployment's settings.

Each check gives findings: ``ok``, ``warn`` (fine on one host, or a
recommendation) or ``fail`` (fix before serving people). The command exits
non-zero when anything fails. Messages name settings and files, never data.
"""
from __future__ import annotations

import os
import smtplib
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from limits.storage import storage_from_string
from sqlalchemy.exc import SQLAlchemyError

from ..crypto.blobs import LocalBlobStore
from ..extensions import db
from ..settings import Settings
from .health import blob_store_problem, database_problem

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_SECRET_CHARS = 32
MIN_SECRET_DISTINCT = 16  # "aaaa…" or "0123…0123" is long, not strong
# Seconds to wait on Redis; SMTP uses PROTECT_MAIL_TIMEOUT_SECONDS, as sending does.
REDIS_TIMEOUT = 5


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    message: str


def _private(path: Path, mode: int, what: str) -> Iterator[Finding]:
    """``path`` must be owned by this process's user and closed to group and others."""
    try:
        st = path.stat()
    except OSError as exc:
        yield Finding(FAIL, what, f"{path}: {exc.strerror}")
        return
    if st.st_uid != os.geteuid():
        yield Finding(FAIL, what, f"{path} belongs to uid {st.st_uid}, not to the user running protect "
                                  f"(uid {os.geteuid()})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        yield Finding(FAIL, what, f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: others may read it "
                                  f"(chmod {mode:o} {path})")
    elif not os.access(path, os.R_OK):
        yield Finding(FAIL, what, f"{path} cannot be read by this process")


def check_environment(s: Settings, app: Flask) -> Iterator[Finding]:
    if not s.production:
        yield Finding(FAIL, "environment", f"PROTECT_ENV is {s.env}: a deployment runs with production")
    if s.debug or app.debug:
        yield Finding(FAIL, "debug", "debug is on (PROTECT_DEBUG): it shows code and data on errors")
    if not s.public_url.startswith("https://"):
        yield Finding(FAIL, "public URL", f"PROTECT_PUBLIC_URL is {s.public_url}: people must reach "
                                          "protect over https://")
    cookie = app.config
    if not cookie["SESSION_COOKIE_SECURE"]:
        yield Finding(FAIL, "cookies", "session cookies are not marked Secure (they follow from an https "
                                       "public URL or production)")
    if not cookie["SESSION_COOKIE_HTTPONLY"] or cookie["SESSION_COOKIE_SAMESITE"] not in ("Lax", "Strict"):
        yield Finding(FAIL, "cookies", "session cookies must be HttpOnly and SameSite=Lax or Strict")
    if s.production and s.proxy_hops == 0:
        yield Finding(WARN, "proxy", "PROTECT_PROXY_HOPS is 0: behind nginx set it to 1, or every client "
                                     "has the proxy's address and all share one login limit")
    if s.production and s.log_format != "json":
        yield Finding(WARN, "logs", "PROTECT_LOG_FORMAT is text: json suits log collectors")


def check_secrets(s: Settings, app: Flask) -> Iterator[Finding]:
    key = s.secret_key
    if len(key) < MIN_SECRET_CHARS:
        yield Finding(FAIL, "secret key", f"PROTECT_SECRET_KEY has {len(key)} characters; at least "
                                          f"{MIN_SECRET_CHARS} random ones are needed")
    elif len(set(key)) < MIN_SECRET_DISTINCT:
        yield Finding(FAIL, "secret key", "PROTECT_SECRET_KEY repeats few characters: make it random "
                                          "(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')")
    secret_file = s.instance / "secret_key"
    if secret_file.exists():
        yield from _private(secret_file, 0o600, "secret key")
        yield Finding(WARN, "secret key", f"the secret key was generated into {secret_file}: with several "
                                          "hosts give them all the same PROTECT_SECRET_KEY")
    if s.master_keys:
        ring = app.extensions["protect.keyring"]
        yield Finding(OK, "master keys", f"{len(ring.keys)} from PROTECT_MASTER_KEYS")
        return
    keys_dir = s.instance / "keys"
    found = list(_private(keys_dir, 0o700, "master keys"))
    files = sorted(keys_dir.glob("*.key"))
    for path in files:
        found += _private(path, 0o600, "master keys")
    yield from found
    if not found:
        yield Finding(OK, "master keys", f"{len(files)} in {keys_dir}, readable by this user only")


def check_database(s: Settings, app: Flask) -> Iterator[Finding]:
    problem = database_problem()
    if problem:
        yield Finding(FAIL, "database", f"unreachable: {problem}")
        return
    migrate = app.extensions["migrate"]
    heads = set(ScriptDirectory.from_config(migrate.migrate.get_config(migrate.directory)).get_heads())
    try:
        with db.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        yield Finding(FAIL, "database", f"schema version unreadable: {type(exc).__name__}")
        return
    if current != heads:
        yield Finding(FAIL, "database", f"schema at {', '.join(sorted(current)) or 'nothing'}, code at "
                                        f"{', '.join(sorted(heads))}: run flask db upgrade")
    else:
        yield Finding(OK, "database", f"{db.engine.dialect.name} reachable, schema up to date")


def check_blob_store(s: Settings, app: Flask) -> Iterator[Finding]:
    store = app.extensions["protect.blobs"]
    problem = blob_store_problem(store)
    if problem:
        yield Finding(FAIL, "blob store", problem)
    else:
        yield Finding(OK, "blob store", "reachable")
    if isinstance(store, LocalBlobStore):
        yield from _private(store.root, 0o700, "blob store")


def check_mail(s: Settings, app: Flask) -> Iterator[Finding]:
    if not s.mail_server:
        yield Finding(WARN, "mail", "no PROTECT_MAIL_SERVER: no e-mail goes out (vault release notices "
                                    "to recipients included), only in-app notices")
        return
    from ..notify.mail import _Connection  # the very connection the sender opens

    connection = _Connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError) as exc:
        yield Finding(FAIL, "mail", f"{s.mail_server}: {type(exc).__name__}: {exc}")
        return
    finally:
        connection.close()
    tls = "STARTTLS with a valid certificate" if s.mail_starttls else "no STARTTLS"
    yield Finding(OK, "mail", f"{s.mail_server} answers EHLO ({tls}{', login accepted' if s.mail_username else ''})")
    if not s.mail_starttls:
        yield Finding(WARN, "mail", "PROTECT_MAIL_STARTTLS is off: only for a relay on this host")


def check_rate_limits(s: Settings, app: Flask) -> Iterator[Finding]:
    url = s.ratelimit_storage_url
    if url.startswith("memory://"):
        yield Finding(WARN, "rate limits", "memory:// counts in each process: with several workers or hosts "
                                           "login throttling needs PROTECT_RATELIMIT_STORAGE_URL=redis://…")
        return
    options = {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT} \
        if url.startswith(("redis://", "rediss://")) else {}
    try:
        reachable = storage_from_string(url, **options).check()
    except Exception as exc:  # noqa: BLE001 - any storage library error means "not usable"
        reachable, reason = False, type(exc).__name__
    else:
        reason = "no answer"
    scheme, _, rest = url.partition("://")
    safe_url = f"{scheme}://{rest.rpartition('@')[2]}"  # never print a password
    if reachable:
        yield Finding(OK, "rate limits", f"counters in {safe_url}")
    else:
        yield Finding(FAIL, "rate limits", f"{safe_url} unreachable ({reason}): sign-ins would fail")


def check_several_hosts(s: Settings, app: Flask) -> Iterator[Finding]:
    single = []
    if db.engine.dialect.name == "sqlite":
        single.append("SQLite (use PostgreSQL)")
    if isinstance(app.extensions["protect.blobs"], LocalBlobStore):
        single.append("a local blob directory (use s3://)")
    if single:
        yield Finding(WARN, "several hosts", "fine for one host; several need shared services: "
                                             + ", ".join(single))


CHECKS: list[Callable[[Settings, Flask], Iterator[Finding]]] = [
    check_environment, check_secrets, check_database, check_blob_store, check_mail, check_rate_limits,
    check_several_hosts,
]


def examine() -> list[Finding]:
    """Run every check against the current app (needs an app context)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = app.extensions["protect.settings"]
    return [finding for check in CHECKS for finding in check(settings, app)]
