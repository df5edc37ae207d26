"""E-mail through the outbox: written with the notification, sent after commit.

``enqueue`` is called by ``notify_many`` in the transaction that writes the
notifications, so an e-mail row exists exactly when its notification
committed, and never for one that rolled back. ``deliver`` — run by the
embedded sweeper after each sweep, by ``flask protect sweep`` after sweeping
and by ``flask protect send-mail`` from a timer — sends only rows that
committed (the outbox pattern):

1. it *claims* due rows with one UPDATE … RETURNING (``state`` pending →
   sending, ``attempts`` + 1, ``next_attempt_at`` = end of a lease) and
   commits the claim; on PostgreSQL the rows other senders hold are skipped
   (``FOR UPDATE SKIP LOCKED``), and the UPDATE re-checks its condition, so
   of several senders on several hosts each row is claimed by one only;
2. it sends the claimed rows over one SMTP connection (timeouts; STARTTLS
   and login when configured);
3. it marks them ``sent`` — or, when the server refused or could not be
   reached, puts them back to ``pending`` with exponential backoff (1, 2,
   4 … minutes, at most an hour apart), and after ``mail_max_attempts``
   tries marks them ``failed`` (kept, logged, and re-queued by
   ``flask protect send-mail --retry-failed``). Nothing is deleted.

What "exactly once" honestly means here. A row is claimed by one sender at a
time and marked sent once, so in normal operation — retries, refusals,
outages, several senders at once — each e-mail is handed to the SMTP server
once. The one gap no outbox can close: if the process dies after the SMTP
server accepted a message and before the ``sent`` mark committed (marks are
committed per batch of ``batch`` messages), the row stays ``sending`` until
its lease runs out and is then sent again. That rare resend carries the same
``Message-ID`` (derived from the outbox key), so mail clients and archives
can recognise it as the same message rather than a new alert.

Nothing personal is logged: log lines name the outbox row id, the attempt
and the exception class, never an address, a subject or a body.
"""
from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.charset import BASE64, QP, Charset
from email.header import Header
from email.mime.text import MIMEText
from email.utils import format_datetime, parseaddr
from urllib.parse import urlsplit

from flask import current_app
from flask_babel import force_locale, gettext
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..accounts.models import User
from ..extensions import utcnow
from .bulk import insert_new
from .models import OutboxEmail

log = logging.getLogger(__name__)

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)
# Errors that concern one message (a refusal of it, an address the server cannot take):
# that message waits for its next try and the others go on. Anything else (refused
# connection, timeout, dropped connection, TLS or login failure) ends the run.
MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError,
                  smtplib.SMTPNotSupportedError, UnicodeError, ValueError)
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP        # readable bodies (base64 is the default for utf-8)
_UTF8.header_encoding = BASE64  # one encoding tried, not the shorter of two, per header


def _settings():
    return current_app.extensions["protect.settings"]


def enabled() -> bool:
    return bool(_settings().mail_server)


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones: 1, 2, 4 … min, capped at 1 h."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def lease() -> timedelta:
    """How long a claimed row stays ``sending`` before another sender may take it."""
    return timedelta(seconds=max(600, 10 * _settings().mail_timeout_seconds))


# -- enqueue ----------------------------------------------------------------

def render(kind: str, data: dict) -> tuple[str, str]:
    """Subject and body of one notification's e-mail, in the current locale.

    Only the case reference and the stage: no name, narrative or place.
    """
    from ..deadlines.service import STAGES  # deadlines imports notify

    ref = str(data.get("reference") or "")
    stage_code = data.get("stage")
    stage = str(STAGES[stage_code]) if stage_code in STAGES else str(stage_code or "")
    if kind == "deadline_due_soon":
        subject = gettext("Case %(ref)s: deadline due soon", ref=ref)
        line = gettext("Deadline due soon: %(stage)s, case %(ref)s.", stage=stage, ref=ref)
    elif kind == "deadline_overdue":
        subject = gettext("Case %(ref)s: deadline overdue", ref=ref)
        line = gettext("Deadline overdue: %(stage)s, case %(ref)s.", stage=stage, ref=ref)
    elif kind == "deadline_escalated":
        subject = gettext("Case %(ref)s: overdue deadline escalated", ref=ref)
        line = gettext("Escalated: a deadline is still overdue: %(stage)s, case %(ref)s.", stage=stage, ref=ref)
    else:
        subject = gettext("Case %(ref)s: update", ref=ref)
        line = gettext("Update on case %(ref)s.", ref=ref)
    url = _settings().public_url.rstrip("/") + "/notifications"
    body = "\n\n".join([
        line,
        gettext("Sign in to see it: %(url)s", url=url),
        gettext("This message leaves out every detail of the case on purpose. Replies are not read."),
    ]) + "\n"
    return subject, body


def _chunks(items: list, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def enqueue(db: Session, notifications: list[dict], now: datetime | None = None) -> None:
    """Queue one e-mail per notification (same key), rendered in each recipient's language."""
    from ..main import LANGUAGES  # main imports notify

    if not notifications:
        return
    now = now or utcnow()
    default = _settings().default_locale
    locales: dict[str, str | None] = {}
    for chunk in _chunks(sorted({n["user_id"] for n in notifications})):
        query = select(User.id, User.locale).where(User.id.in_(chunk))
        locales.update((row.id, row.locale) for row in db.execute(query))
    by_language: dict[str, list[dict]] = defaultdict(list)
    for note in notifications:
        locale = locales.get(note["user_id"])
        by_language[locale if locale in LANGUAGES else default].append(note)
    rows = []
    for language, notes in by_language.items():
        with force_locale(language):
            for note in notes:
                subject, body = render(note["kind"], note.get("data") or {})
                rows.append({"key": note["key"], "user_id": note["user_id"], "language": language,
                             "subject": subject[:200], "body": body})
    insert_new(db, OutboxEmail.__table__, rows,
               {"state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}, keys=False)


# -- deliver ----------------------------------------------------------------

@dataclass
class DeliveryResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    def __bool__(self) -> bool:
        return bool(self.sent or self.retrying or self.failed)


def message_id(key: str) -> str:
    """The same Message-ID every time a given outbox row is sent."""
    sender = _settings().mail_from
    domain = sender.rpartition("@")[2].strip(" >") or "protect.invalid"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def _claim(session: Session, now: datetime, limit: int) -> list:
    due = OutboxEmail.state.in_(("pending", "sending")) & (OutboxEmail.next_attempt_at <= now)
    ids = select(OutboxEmail.id).where(due).order_by(OutboxEmail.next_attempt_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    statement = (update(OutboxEmail).where(OutboxEmail.id.in_(ids.scalar_subquery()), due)
                 .values(state="sending", attempts=OutboxEmail.attempts + 1, next_attempt_at=now + lease())
                 .returning(OutboxEmail.id, OutboxEmail.key, OutboxEmail.user_id, OutboxEmail.language,
                            OutboxEmail.subject, OutboxEmail.body, OutboxEmail.attempts))
    rows = session.execute(statement, execution_options={"synchronize_session": False}).all()
    session.commit()
    return rows


class _Connection:
    """One SMTP session, opened on first use."""

    def __init__(self):
        self.settings = _settings()
        self.sender = parseaddr(self.settings.mail_from)[1]
        self.smtp: smtplib.SMTP | None = None

    def open(self) -> None:
        if self.smtp is None:
            self.smtp = self._open()

    def send(self, to: str, message: bytes) -> None:
        self.smtp.sendmail(self.sender, [to], message)

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        host, _, port = s.mail_server.rpartition(":") if ":" in s.mail_server else (s.mail_server, "", "25")
        # Host given to the constructor (not to connect()): STARTTLS checks the certificate against it.
        smtp = smtplib.SMTP(host.strip("[]"), int(port), timeout=s.mail_timeout_seconds,
                            local_hostname=urlsplit(s.public_url).hostname or "localhost")
        try:
            smtp.ehlo()
            if s.mail_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.mail_username:
                smtp.login(s.mail_username, s.mail_password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
            self.smtp = None


def _message(row, to: str, now: datetime) -> bytes:
    # Built with the compat32 classes: several times cheaper than EmailMessage's
    # header registry, which matters when a sweep queues thousands at once.
    body = MIMEText(row.body, "plain", _UTF8)
    body["From"] = _settings().mail_from
    body["To"] = to
    body["Subject"] = Header(row.subject, _UTF8)
    body["Date"] = format_datetime(now)
    body["Message-ID"] = message_id(row.key)
    body["Auto-Submitted"] = "auto-generated"
    body["Content-Language"] = row.language
    return body.as_bytes()


def _recipients(session: Session, rows) -> dict[str, str]:
    """user id → e-mail address, for the active recipients among ``rows``."""
    users = session.execute(select(User).where(User.id.in_(sorted({r.user_id for r in rows})), User.active)).scalars()
    return {user.id: user.email for user in users}


def deliver(session: Session, now: datetime | None = None, *, limit: int = 1000,
            batch: int = 50) -> DeliveryResult:
    """Send up to ``limit`` due e-mails, ``batch`` claimed (and marked) at a time."""
    result = DeliveryResult()
    if not _settings().mail_server:
        return result
    connection = _Connection()
    try:
        while result.sent + result.retrying + result.failed < limit:
            at = now or utcnow()
            rows = _claim(session, at, min(batch, limit - result.sent - result.retrying - result.failed))
            if not rows:
                break
            broken = _send_batch(session, connection, rows, at, result)
            if broken:
                break
    finally:
        connection.close()
        session.rollback()
    return result


def _send_batch(session: Session, connection: _Connection, rows, now: datetime,
                result: DeliveryResult) -> bool:
    """Send claimed rows and record the outcome; True when the connection broke."""
    max_attempts = _settings().mail_max_attempts
    sent: list[int] = []
    errors: dict[int, str] = {}   # row id → exception class name
    broken = False
    try:
        addresses = _recipients(session, rows)
        session.rollback()  # end the read; nothing is held while talking to the server
        for row in rows:
            if broken:
                errors[row.id] = broken
                continue
            to = addresses.get(row.user_id)
            if to is None:
                errors[row.id] = "InactiveRecipient"
                continue
            try:
                connection.open()
            except (smtplib.SMTPException, OSError) as exc:
                broken = errors[row.id] = type(exc).__name__
                connection.close()
                continue
            try:
                connection.send(to, _message(row, to, now))
                sent.append(row.id)
            except MESSAGE_ERRORS as exc:
                errors[row.id] = type(exc).__name__
            except (smtplib.SMTPException, OSError) as exc:
                broken = errors[row.id] = type(exc).__name__
                connection.close()
    finally:
        _finish(session, rows, sent, errors, now, max_attempts, result)
    return bool(broken)


def _finish(session: Session, rows, sent: list[int], errors: dict[int, str], now: datetime,
            max_attempts: int, result: DeliveryResult) -> None:
    claimed = (OutboxEmail.state == "sending")
    if sent:
        session.execute(update(OutboxEmail).where(OutboxEmail.id.in_(sent), claimed)
                        .values(state="sent", sent_at=now, last_error=None),
                        execution_options={"synchronize_session": False})
        result.sent += len(sent)
    retry: dict[tuple[datetime, str], list[int]] = defaultdict(list)
    failed: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        error = errors.get(row.id)
        if error is None:
            continue  # sent, or never reached (left to its lease)
        if error == "InactiveRecipient" or row.attempts >= max_attempts:
            failed[error].append(row.id)
            log.error("e-mail %s failed for good after %d attempt(s) (%s)", row.id, row.attempts, error)
        else:
            delay = backoff(row.attempts)
            retry[(now + delay, error)].append(row.id)
            log.warning("e-mail %s: attempt %d failed (%s); next try in %s", row.id, row.attempts, error, delay)
    for (when, error), ids in retry.items():
        session.execute(update(OutboxEmail).where(OutboxEmail.id.in_(ids), claimed)
                        .values(state="pending", next_attempt_at=when, last_error=error),
                        execution_options={"synchronize_session": False})
        result.retrying += len(ids)
    for error, ids in failed.items():
        session.execute(update(OutboxEmail).where(OutboxEmail.id.in_(ids), claimed)
                        .values(state="failed", last_error=error),
                        execution_options={"synchronize_session": False})
        result.failed += len(ids)
    session.commit()


def retry_failed(session: Session, now: datetime | None = None) -> int:
    """Put every failed e-mail back in the queue with a fresh count (operator's choice)."""
    changed = session.execute(update(OutboxEmail).where(OutboxEmail.state == "failed")
                              .values(state="pending", attempts=0, next_attempt_at=now or utcnow()),
                              execution_options={"synchronize_session": False}).rowcount
    session.commit()
    return changed


def pending_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(OutboxEmail)
                           .where(OutboxEmail.state.in_(("pending", "sending")))).scalar_one()
