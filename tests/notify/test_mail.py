"""The e-mail outbox against a real SMTP server (aiosmtpd on loopback).

Time never passes for real: tests move the app's clock
(``app.extensions["protect.now"]``) past each backoff instead of sleeping.
"""
from __future__ import annotations

import ssl
import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from protect.accounts.models import User
from protect.cases import service as cases
from protect.deadlines import service as deadlines
from protect.deadlines import sweeper
from protect.extensions import db, utcnow
from protect.notify import mail
from protect.notify.models import Notification, OutboxEmail
from protect.notify.service import notify_many

from .conftest import use_mail

NARRATIVE = "A call at night from a blocked number"


@pytest.fixture
def people(ctx, make_account):
    get = lambda role: db.session.get(User, make_account(role).id)
    people = {"journalist": get("journalist"), "caseworker": get("caseworker"),
              "supervisor": get("supervisor")}
    people["caseworker"].locale = "en"  # the supervisor keeps the default (Spanish)
    db.session.commit()
    return people


def submitted(people, assign=False):
    j = people["journalist"]
    case = cases.start_request(db.session, j)
    cases.save_who(db.session, j, case, cases.WhoAtRisk("Ana Reportera", False, None, "ana@example.org",
                                                         "journalist", None, None))
    cases.save_work(db.session, j, case, outlet="Diario del Golfo", journalism_kind=None, state_code="VER",
                    municipality="Coatzacoalcos")
    cases.add_incident(db.session, j, case, occurred_on=date.today(), kind="threat", aggressor="unknown",
                       channel="phone", place="Calle Hidalgo 12", narrative=NARRATIVE)
    cases.submit(db.session, j, case, immediate_danger=False, consent=True)
    if assign:
        cw = people["caseworker"]
        cases.assign(db.session, cw, case, cw)
    db.session.commit()
    return case


def advance(app, delta=None, **parts):
    app.extensions["protect.now"].advance(delta, **parts)


def outbox(state=None):
    query = select(OutboxEmail).order_by(OutboxEmail.id)
    if state:
        query = query.where(OutboxEmail.state == state)
    return list(db.session.execute(query).scalars())


def notification_keys():
    return set(db.session.execute(select(Notification.key)).scalars())


def test_no_mail_server_means_no_outbox(app, people):
    submitted(people)
    deadlines.sweep(db.session, utcnow() + timedelta(hours=2, minutes=30))
    assert db.session.execute(select(func.count()).select_from(Notification)).scalar_one() == 1
    assert outbox() == []
    assert not mail.deliver(db.session)


def test_sweep_mails_each_recipient_once_in_their_language(app, people, smtp):
    use_mail(app, smtp)
    assigned = submitted(people, assign=True)      # → the caseworker (English)
    unassigned = submitted(people)                 # → the supervisor (Spanish, the default)
    advance(app, hours=2, minutes=30)
    assert deadlines.sweep(db.session).notifications == 2
    queued = outbox("pending")
    assert {row.key for row in queued} == notification_keys()
    assert {row.language for row in queued} == {"en", "es"}

    result = mail.deliver(db.session)
    assert (result.sent, result.retrying, result.failed) == (2, 0, 0)
    assert all(row.state == "sent" and row.attempts == 1 and row.sent_at for row in outbox())
    by_to = {rcpt[0]: message for rcpt, message in smtp.handler.messages()}
    assert set(by_to) == {people["caseworker"].email, people["supervisor"].email}

    english = by_to[people["caseworker"].email]
    assert english["Subject"] == f"Case {assigned.reference}: deadline due soon"
    assert f"Deadline due soon: Triage, case {assigned.reference}." in english.get_content()
    assert english["Content-Language"] == "en"
    spanish = by_to[people["supervisor"].email]
    assert spanish["Subject"] == f"Caso {unassigned.reference}: plazo por vencer"
    assert f"Plazo por vencer: Clasificación inicial, caso {unassigned.reference}." in spanish.get_content()
    assert spanish["Content-Language"] == "es"
    for message in (english, spanish):
        assert message["To"] in (people["caseworker"].email, people["supervisor"].email)
        assert message["Auto-Submitted"] == "auto-generated"
        whole = message.as_string()
        for secret in (NARRATIVE, "Ana Reportera", "ana@example.org", "Diario del Golfo", "Coatzacoalcos",
                       "Hidalgo", people["journalist"].email):
            assert secret not in whole
    # Message-IDs come from the outbox keys.
    assert set(smtp.handler.message_ids()) == {mail.message_id(key) for key in notification_keys()}

    # Nothing is sent twice: again, and after a sweep that changes nothing.
    assert not mail.deliver(db.session)
    advance(app, minutes=1)
    assert deadlines.sweep(db.session).notifications == 0
    assert not mail.deliver(db.session)
    assert len(smtp.handler.messages()) == 2


def test_rolled_back_notifications_leave_no_mail(app, people, smtp):
    use_mail(app, smtp)
    notify_many(db.session, [{"key": "k1", "user_id": people["supervisor"].id, "kind": "deadline_overdue",
                              "case_id": None, "data": {"stage": "triage", "reference": "PRT-AAAA-BBBB"}}])
    if db.engine.dialect.name == "postgresql":
        # Another session (a sender on another host) sees nothing before the commit.
        seen = []

        def other():
            with app.app_context():
                seen.append(mail.deliver(db.session))
                db.session.remove()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
        assert seen and not seen[0]
    db.session.rollback()
    assert outbox() == [] and not mail.deliver(db.session)
    assert smtp.handler.messages() == []


def test_refusing_server_is_retried_with_backoff_and_each_message_arrives_once(app, people, smtp_factory):
    server = smtp_factory(refuse=4)
    use_mail(app, server)
    for _ in range(3):
        submitted(people, assign=True)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)

    first = mail.deliver(db.session)
    assert (first.sent, first.retrying) == (0, 3)  # 3 refusals of 4
    rows = outbox()
    assert {(r.state, r.attempts, r.last_error) for r in rows} == {("pending", 1, "SMTPDataError")}
    assert all(r.next_attempt_at == rows[0].next_attempt_at for r in rows)
    assert (rows[0].next_attempt_at - utcnow()).total_seconds() == pytest.approx(60, abs=2)

    advance(app, seconds=30)             # not due yet: nothing is tried
    assert not mail.deliver(db.session) and server.handler.refused == 3

    for _ in range(10):                  # bounded: every step passes the longest backoff
        if not mail.pending_count(db.session):
            break
        advance(app, hours=1)
        mail.deliver(db.session)
    rows = outbox()
    assert {r.state for r in rows} == {"sent"}
    assert sum(r.attempts for r in rows) == 3 + 4
    ids = server.handler.message_ids()
    assert len(ids) == 3 and set(ids.values()) == {1}
    assert set(ids) == {mail.message_id(r.key) for r in rows}


def test_a_refused_address_waits_alone_and_fails_after_max_attempts(app, people, smtp):
    use_mail(app, smtp, mail_max_attempts=3)
    smtp.handler.refuse_rcpt.add(people["caseworker"].email)
    submitted(people, assign=True)   # → the caseworker, whose address the server refuses
    submitted(people)                # → the supervisor
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)
    result = mail.deliver(db.session)
    assert (result.sent, result.retrying) == (1, 1)
    assert [rcpt for rcpt, _ in smtp.handler.messages()] == [[people["supervisor"].email]]
    for _ in range(2):
        advance(app, hours=1)
        mail.deliver(db.session)
    refused = [row for row in outbox() if row.state != "sent"]
    assert [(r.state, r.attempts, r.last_error) for r in refused] == [("failed", 3, "SMTPRecipientsRefused")]
    assert len(smtp.handler.raw) == 1


def test_starttls_and_login(app, people, smtp_tls, monkeypatch):
    """The certificate is checked (trusted here because the test made it) before the login."""
    use_mail(app, smtp_tls, mail_starttls=True, mail_username="protect", mail_password="s3cret")
    trusting = ssl.create_default_context
    monkeypatch.setattr(mail.ssl, "create_default_context", lambda: trusting(cafile=smtp_tls.cert))
    submitted(people, assign=True)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)
    assert mail.deliver(db.session).sent == 1
    assert len(smtp_tls.handler.raw) == 1
    assert [(login, tls) for _, login, tls in smtp_tls.logins] == [(b"protect", True)]

    # An untrusted certificate: nothing is sent, and no password goes out.
    monkeypatch.undo()
    use_mail(app, smtp_tls, mail_starttls=True, mail_username="protect", mail_password="s3cret")
    advance(app, hours=1)
    deadlines.sweep(db.session)
    result = mail.deliver(db.session)
    assert (result.sent, result.retrying) == (0, 1)
    assert outbox()[-1].last_error == "SSLCertVerificationError"
    assert len(smtp_tls.logins) == 1 and len(smtp_tls.handler.raw) == 1


def test_backoff_doubles_up_to_an_hour():
    assert [mail.backoff(n).total_seconds() / 60 for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_server_down_loses_nothing_and_delivers_once_it_is_back(app, people, smtp_factory):
    server = smtp_factory(start=False)  # nothing listens on its port yet
    use_mail(app, server)
    submitted(people, assign=True)
    submitted(people)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)
    start = utcnow()
    waits = []
    for attempt in range(1, 5):
        result = mail.deliver(db.session)
        assert (result.sent, result.retrying, result.failed) == (0, 2, 0)
        rows = outbox()
        assert {(r.state, r.attempts, r.last_error) for r in rows} == {("pending", attempt, "ConnectionRefusedError")}
        waits.append(rows[0].next_attempt_at - utcnow())
        assert not mail.deliver(db.session)   # not due until the backoff passed
        advance(app, waits[-1])
    assert [round(w.total_seconds()) for w in waits] == [60, 120, 240, 480]

    server.start()
    result = mail.deliver(db.session)
    assert (result.sent, result.retrying) == (2, 0)
    assert utcnow() - start >= timedelta(minutes=15)
    assert set(server.handler.message_ids().values()) == {1} and len(server.handler.messages()) == 2
    assert not mail.deliver(db.session)


def test_after_max_attempts_it_fails_and_can_be_requeued(app, people, smtp_factory):
    server = smtp_factory(start=False)
    use_mail(app, server, mail_max_attempts=2)
    submitted(people, assign=True)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)
    assert mail.deliver(db.session).retrying == 1
    advance(app, hours=1)
    assert mail.deliver(db.session).failed == 1
    advance(app, hours=1)
    assert not mail.deliver(db.session)   # failed rows are kept, not retried on their own
    [row] = outbox()
    assert (row.state, row.attempts, row.last_error) == ("failed", 2, "ConnectionRefusedError")

    server.start()
    runner = app.test_cli_runner()
    output = runner.invoke(args=["protect", "send-mail", "--retry-failed"]).output
    assert "re-queued: 1" in output and "e-mail sent: 1" in output
    assert len(server.handler.messages()) == 1


def test_a_claim_left_by_a_killed_sender_is_retried_after_its_lease(app, people, smtp):
    use_mail(app, smtp)
    submitted(people, assign=True)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)
    # A sender claims the row and dies before sending anything.
    [claimed] = mail._claim(db.session, utcnow(), 10)
    assert outbox()[0].state == "sending"
    advance(app, minutes=5)
    assert not mail.deliver(db.session)     # still leased to the dead sender
    advance(app, mail.lease())
    assert mail.deliver(db.session).sent == 1
    [row] = outbox()
    assert (row.state, row.attempts) == ("sent", 2)
    assert len(smtp.handler.messages()) == 1


def test_a_resend_after_a_crash_carries_the_same_message_id(app, people, smtp, monkeypatch):
    """The documented gap: killed after the server accepted, before the mark committed."""
    use_mail(app, smtp)
    submitted(people, assign=True)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(mail, "_finish", die)
    with pytest.raises(Killed):
        mail.deliver(db.session)
    monkeypatch.undo()
    db.session.rollback()
    assert len(smtp.handler.messages()) == 1 and outbox()[0].state == "sending"
    advance(app, mail.lease() + timedelta(seconds=1))
    assert mail.deliver(db.session).sent == 1
    ids = smtp.handler.message_ids()
    assert list(ids.values()) == [2] and list(ids) == [mail.message_id(outbox()[0].key)]


def test_inactive_recipient_is_not_mailed(app, people, smtp):
    use_mail(app, smtp)
    submitted(people, assign=True)
    advance(app, hours=2, minutes=30)
    deadlines.sweep(db.session)
    people["caseworker"].active = False
    db.session.commit()
    assert mail.deliver(db.session).failed == 1
    assert outbox()[0].last_error == "InactiveRecipient" and smtp.handler.messages() == []


def test_cli_sweep_sends_after_committing_and_the_sweeper_thread_does_too(app, people, smtp):
    use_mail(app, smtp)
    submitted(people, assign=True)
    submitted(people)
    advance(app, hours=2, minutes=30)
    output = app.test_cli_runner().invoke(args=["protect", "sweep"]).output
    assert "notifications: 2" in output and "e-mail sent: 2" in output
    advance(app, hours=1)   # overdue now: the embedded sweeper's one round sweeps and sends
    db.session.remove()
    sweeper.run_once(app.extensions["protect.settings"])
    assert len(smtp.handler.messages()) == 4
    assert {m["Subject"].split(": ", 1)[1] for _, m in smtp.handler.messages()} == {
        "deadline due soon", "plazo por vencer", "deadline overdue", "plazo vencido"}


def test_send_mail_without_a_server_is_an_error(app):
    result = app.test_cli_runner().invoke(args=["protect", "send-mail"])
    assert result.exit_code != 0 and "PROTECT_MAIL_SERVER" in result.output
