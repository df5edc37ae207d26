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

Release notices to vault recipients (``release_id`` set, no account) are
queued by ``deliver`` itself (``vault.release.queue_notices``) and written at
send time: their one-time link is made then, so it exists only in the
message. Its hash is committed before the message leaves; a message sent
again (the gap above) carries a new link, and the earlier one stops working.

Nothing personal is logged: log lines name the outbox row id, the attempt
and the exception class, never an address, a subject or a body.
"""
from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.charset import BASE64, QP, Charset
from email.header import Header
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, parseaddr
from typing import cast
from urllib.parse import urlsplit

from flask import current_app
from flask_babel import force_locale, gettext
from flask_babel import format_datetime as local_datetime
from sqlalchemy import Row, Table, func, select, update

from ..accounts.models import User
from ..errors import DomainError, NotFound
from ..extensions import Session, rowcount, utcnow
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
# Failures no retry can mend.
PERMANENT_ERRORS = {"InactiveRecipient", "ReleaseGone", "ReleaseExpired"}
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP        # readable bodies (base64 is the default for utf-8)
_UTF8.header_encoding = BASE64  # one encoding tried, not the shorter of two, per header
# SMTP lines end in CRLF, and smtplib sends bytes unchanged: with bare LFs a
# message over 1,000 bytes is one "line" that strict servers refuse.
_WIRE = compat32.clone(linesep="\r\n")


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

def render(kind: str, data: dict, user_id: str | None = None) -> tuple[str, str]:
    """Subject and body of one notification's e-mail to ``user_id``, in the current locale.

    Only the case reference and the stage (for a vault: times, and a link to
    act on it): no name, title, narrative or place.
    """
    from ..deadlines.service import STAGES  # deadlines imports notify

    if kind.startswith("vault_"):
        return _render_vault(kind, data, owner=data.get("journalist") in (None, user_id))

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


def _when(value) -> str:
    try:
        return local_datetime(datetime.fromisoformat(value), "long")
    except (TypeError, ValueError):
        return ""


def _render_vault(kind: str, data: dict, *, owner: bool) -> tuple[str, str]:
    """A vault notice: times and codes only (no title, no name). The owner's
    notices that ask for an answer link to the check-in (or refuse-release)
    page, where only a POST with the PIN acts (mail scanners open links)."""
    page = None
    if owner and kind == "vault_reminder":
        subject, page = gettext("Check-in reminder"), "check-in"
        lines = [gettext("Check in to your vault: it is due in %(hours)s hours.", hours=data.get("hours")),
                 gettext("Due: %(when)s.", when=_when(data.get("due")))]
    elif owner and kind == "vault_grace":
        subject, page = gettext("Check-in missed"), "check-in"
        lines = [gettext("You missed a check-in. Check in now: your vault goes to its recipients when the "
                         "grace period ends."),
                 gettext("The grace period ends: %(when)s.", when=_when(data.get("grace_until")))]
    elif owner and kind == "vault_welfare_hold":
        subject, page = gettext("Check-in missed"), "check-in"
        lines = [gettext("Your vault is held while your caseworker checks on you. Check in now, or it will be "
                         "released: %(when)s.", when=_when(data.get("hold_until")))]
    elif owner and kind in ("vault_release_requested", "vault_veto_reminder"):
        subject, page = gettext("Your answer is needed"), "refuse-release"
        lines = [gettext("Someone asked for your vault to be released. If you do not refuse with your PIN, "
                         "it will be released."),
                 gettext("You can refuse until %(when)s.", when=_when(data.get("release_after")))]
    elif owner and kind == "vault_resumed":
        subject = gettext("Your pause has ended")
        lines = [gettext("Your vault is armed again after your pause."),
                 gettext("Due: %(when)s.", when=_when(data.get("due")))]
    elif kind == "vault_released":
        subject = gettext("Vault released")
        lines = [gettext("A vault was released to its recipients.")]
    elif kind == "vault_grace":
        subject = gettext("Welfare check needed")
        lines = [gettext("A journalist missed a vault check-in. Please check on their welfare.")]
    elif kind == "vault_welfare_hold":
        subject = gettext("Welfare check needed")
        lines = [gettext("A vault is held for a welfare check. Confirm the journalist is safe, or it will be "
                         "released."),
                 gettext("Released at: %(when)s.", when=_when(data.get("hold_until")))]
    elif kind == "vault_release_requested":
        subject = gettext("Release requested")
        lines = [gettext("A recipient asked for a vault to be released.")]
    elif kind == "vault_release_refused":
        subject = gettext("Release refused")
        lines = [gettext("The journalist refused the release of their vault.")]
    elif kind == "vault_duress":
        subject = gettext("Urgent: duress alert")
        lines = [gettext("Duress alert: a journalist used their duress PIN. Act now, discreetly.")]
    elif kind == "vault_incident_reported":
        subject = gettext("Incident waiting for confirmation")
        lines = [gettext("A supervisor reported an incident against a journalist. A second supervisor must "
                         "confirm it before their vaults are released.")]
    elif kind == "vault_deletion_scheduled":
        subject = gettext("Delayed deletion in a vault")
        lines = [gettext("A journalist asked to delete vault contents; under coerced-deletion protection it "
                         "takes effect later. Check on them.")]
    else:
        subject = gettext("Update")
        lines = [gettext("There is something new for you.")]
    base = _settings().public_url.rstrip("/")
    vault_id = str(data.get("vault") or "")
    if page == "check-in" and vault_id.isalnum():
        lines.append(gettext("Check in here (opening the page does not check you in: it asks for your PIN): "
                             "%(url)s", url=f"{base}/vault/{vault_id}/check-in"))
    elif page == "refuse-release" and vault_id.isalnum():
        lines.append(gettext("Refuse here (opening the page does not refuse: it asks for your PIN): %(url)s",
                             url=f"{base}/vault/{vault_id}/refuse-release"))
    else:
        lines.append(gettext("Sign in to see it: %(url)s", url=base + "/notifications"))
    lines.append(gettext("This message leaves out every detail on purpose. Replies are not read."))
    return subject, "\n\n".join(line for line in lines if line) + "\n"


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
                subject, body = render(note["kind"], note.get("data") or {}, note["user_id"])
                rows.append({"key": note["key"], "user_id": note["user_id"], "language": language,
                             "subject": subject[:200], "body": body})
    insert_new(db, cast(Table, OutboxEmail.__table__), rows,
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


def claim_due(session: Session, outbox, now: datetime, limit: int, *returning) -> Sequence[Row]:
    """Claim up to ``limit`` due rows of an outbox model (this e-mail one, the vault's
    webhook one): pending (or sending past its lease) → sending, attempts + 1, leased;
    committed, so no other sender takes them. Returns ``returning`` of each row."""
    due = outbox.state.in_(("pending", "sending")) & (outbox.next_attempt_at <= now)
    ids = select(outbox.id).where(due).order_by(outbox.next_attempt_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    statement = (update(outbox).where(outbox.id.in_(ids.scalar_subquery()), due)
                 .values(state="sending", attempts=outbox.attempts + 1, next_attempt_at=now + lease())
                 .returning(*returning))
    rows = session.execute(statement, execution_options={"synchronize_session": False}).all()
    session.commit()
    return rows


def _claim(session: Session, now: datetime, limit: int) -> Sequence[Row]:
    return claim_due(session, OutboxEmail, now, limit, OutboxEmail.id, OutboxEmail.key, OutboxEmail.user_id,
                     OutboxEmail.release_id, OutboxEmail.language, OutboxEmail.subject, OutboxEmail.body,
                     OutboxEmail.attempts)


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
        if self.smtp is None:
            raise RuntimeError("send() before open()")
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


def _message(row, to: str, subject: str, text: str, now: datetime) -> bytes:
    # Built with the compat32 classes: several times cheaper than EmailMessage's
    # header registry, which matters when a sweep queues thousands at once.
    # (typeshed wants a str charset and str headers; compat32 takes Charset and Header)
    body = MIMEText(text, "plain", _UTF8)  # type: ignore[arg-type]
    body["From"] = _settings().mail_from
    body["To"] = to
    body["Subject"] = Header(subject, _UTF8)  # type: ignore[assignment]
    body["Date"] = format_datetime(now)
    body["Message-ID"] = message_id(row.key)
    body["Auto-Submitted"] = "auto-generated"
    body["Content-Language"] = row.language
    return body.as_bytes(policy=_WIRE)


def _recipients(session: Session, rows) -> dict[str, str]:
    """user id → e-mail address, for the active account holders among ``rows``."""
    ids = sorted({r.user_id for r in rows if r.user_id is not None})
    users: Iterable[User] = session.execute(select(User).where(User.id.in_(ids), User.active)).scalars() if ids else []
    return {user.id: user.email for user in users}


def _release_notices(session: Session, rows, errors: dict[int, str]) -> dict:
    """row id → the release notice (address, subject, body with a new link) for
    the release rows among ``rows``; those that cannot go get an error."""
    from ..vault import release  # vault imports notify

    notices = {}
    for row in rows:
        if row.release_id is None:
            continue
        try:
            notices[row.id] = release.notice(session, row.release_id, row.language)
        except NotFound:
            errors[row.id] = "ReleaseGone"
        except DomainError:
            errors[row.id] = "ReleaseExpired"
    return notices


def deliver(session: Session, now: datetime | None = None, *, limit: int = 1000,
            batch: int = 50) -> DeliveryResult:
    """Send up to ``limit`` due e-mails, ``batch`` claimed (and marked) at a time."""
    from ..vault import release  # vault imports notify

    result = DeliveryResult()
    if not _settings().mail_server:
        return result
    release.queue_notices(session, now or utcnow())
    session.commit()
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
    broken: str | None = None  # the error that ended the connection
    try:
        addresses = _recipients(session, rows)
        notices = _release_notices(session, rows, errors)
        # The new links' hashes before any message carrying one leaves; then
        # nothing is held while talking to the server.
        session.commit()
        for row in rows:
            if row.id in errors:
                continue
            if broken:
                errors[row.id] = broken
                continue
            if row.release_id is not None:
                notice = notices[row.id]
                to, subject, text = notice.to, notice.subject, notice.body
            else:
                to, subject, text = addresses.get(row.user_id), row.subject, row.body
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
                connection.send(to, _message(row, to, subject, text, now))
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
        if error in PERMANENT_ERRORS or row.attempts >= max_attempts:
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
    changed = rowcount(session.execute(update(OutboxEmail).where(OutboxEmail.state == "failed")
                                       .values(state="pending", attempts=0, next_attempt_at=now or utcnow()),
                                       execution_options={"synchronize_session": False}))
    session.commit()
    return changed


def pending_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(OutboxEmail)
                           .where(OutboxEmail.state.in_(("pending", "sending")))).scalar_one()
