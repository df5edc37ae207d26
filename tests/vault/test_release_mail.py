"""Release notices and vault e-mails through the outbox, to a real SMTP server (aiosmtpd)."""
from __future__ import annotations

import hashlib
import logging
import re
from sqlalchemy import select, text, update

from protect.extensions import db
from protect.notify import mail
from protect.notify.models import OutboxEmail
from protect.vault import release as rs
from protect.vault import service as vs
from protect.vault.models import Release
from tests.notify.conftest import smtp, use_mail  # noqa: F401

from .conftest import make_vault, open_case, upload

CODE = "entregado-en-mano-2026"
TITLE = "Investigación: contratos de seguridad"
LINK = re.compile(r"http://127\.0\.0\.1:5000/release/([A-Za-z0-9_-]{43})\b")


def released(people, clock):
    """A vault (its owner has a caseworker) with a keyed English-speaking and a
    keyless Spanish-speaking recipient, released by a missed check-in."""
    open_case(people)
    vault = make_vault(people)
    vault.recipients[0].language = "en"
    keyless = vs.add_recipient(db.session, people["journalist"], vault, name="Consorcio Periodístico",
                               email="consorcio@example.org", access_code=CODE)
    keyless.language = "es"
    vs.add_file_deposit(db.session, people["journalist"], vault, upload(vault, b"%PDF contratos", "a.pdf"))
    db.session.commit()
    clock.advance(hours=vault.interval_hours + vault.grace_hours + 1)
    assert vs.sweep(db.session).released == 1
    return vault


def messages_to(server, address):
    return [m for rcpts, m in server.handler.messages() if address in rcpts]


def every_value_in_the_database() -> str:
    """Every row of every table, as text (to look for what must not be stored)."""
    out = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(text(f"SELECT * FROM {table.name}")):
            out.append(repr(tuple(row)))
    return "\n".join(out)


def test_recipients_get_a_notice_with_a_working_link_that_is_stored_nowhere(app, people, clock, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    use_mail(app, smtp)
    vault = released(people, clock)
    result = mail.deliver(db.session)
    assert result.sent >= 2 and not result.failed

    [keyed] = messages_to(smtp, "editora@example.org")
    [keyless] = messages_to(smtp, "consorcio@example.org")
    assert keyed["Content-Language"] == "en" and keyless["Content-Language"] == "es"
    assert keyed["Date"].datetime is not None  # an RFC 5322 date, whatever the language
    body = keyed.get_content()
    assert TITLE in body and "Hello Editora Forbidden Stories," in body
    assert TITLE not in keyed["Subject"] and "Files entrusted to you have been released" == keyed["Subject"]
    assert "age key" in body and "Each file can be downloaded once." in body
    # In the keyless recipient's own language: Spanish.
    assert "código de acceso" in keyless.get_content() and CODE not in keyless.get_content()
    tokens = [LINK.search(m.get_content()).group(1) for m in (keyed, keyless)]

    # Stored nowhere: not in the outbox, not in any table; only their hashes.
    everything = every_value_in_the_database()
    for token in tokens:
        assert token not in everything
        assert hashlib.sha256(token.encode()).hexdigest() in everything
    assert TITLE not in everything  # (sealed; the notice's body was written at send time)
    rows = db.session.execute(select(OutboxEmail).where(OutboxEmail.release_id.is_not(None))).scalars().all()
    assert len(rows) == 2 and all(r.user_id is None and r.state == "sent" and r.body == "" for r in rows)

    # The link works, once traded for the session marker.
    client = app.test_client()
    first = client.get(f"/release/{tokens[0]}")
    assert first.status_code == 303 and first.location == "/release/"
    page = client.get("/release/")
    assert page.status_code == 200 and TITLE in page.get_data(as_text=True)
    spanish = app.test_client()
    assert spanish.get(f"/release/{tokens[1]}").status_code == 303
    with spanish.session_transaction() as kept:
        assert kept["locale"] == "es"  # the recipient's language, until they choose another

    # The app's logs (not the test SMTP server's, which logs what it receives).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert not any(token in logged for token in tokens) and TITLE not in logged
    assert "editora@example.org" not in logged

    # Queued once: later runs add nothing.
    mail.deliver(db.session)
    assert len(messages_to(smtp, "editora@example.org")) == 1
    assert rs.queue_notices(db.session) == 0


def test_a_resend_after_a_crash_carries_a_new_link_and_the_old_one_stops(app, people, clock, smtp):
    use_mail(app, smtp)
    released(people, clock)
    mail.deliver(db.session)
    [first] = messages_to(smtp, "editora@example.org")
    old = LINK.search(first.get_content()).group(1)
    # The process died after the server took the message, before "sent" was recorded.
    db.session.execute(update(OutboxEmail).where(OutboxEmail.key.like("release:%"))
                       .values(state="sending", next_attempt_at=clock()))
    db.session.commit()
    clock.advance(minutes=1)
    mail.deliver(db.session)
    second = messages_to(smtp, "editora@example.org")[1]
    new = LINK.search(second.get_content()).group(1)
    assert new != old and first["Message-ID"] == second["Message-ID"]
    assert "Only the link in the most recent message" in second.get_content()
    client = app.test_client()
    assert client.get(f"/release/{old}").status_code == 404
    assert client.get(f"/release/{new}").status_code == 303


def test_no_mail_server_queues_no_notice_and_an_expired_one_fails_for_good(app, people, clock, smtp):
    released(people, clock)
    assert not mail.deliver(db.session)
    assert db.session.execute(select(OutboxEmail)).scalars().all() == []
    use_mail(app, smtp)
    assert rs.queue_notices(db.session) == 2
    db.session.commit()
    clock.advance(days=vs.RELEASE_LINK_DAYS)
    result = mail.deliver(db.session)
    assert result.failed == 2 and messages_to(smtp, "editora@example.org") == []
    rows = db.session.execute(select(OutboxEmail).where(OutboxEmail.release_id.is_not(None))).scalars().all()
    assert {(r.state, r.last_error) for r in rows} == {("failed", "ReleaseExpired")}
    assert all(r.token_hash is None for r in db.session.execute(select(Release)).scalars())


def test_vault_notices_reach_account_holders_without_details(app, people, clock, smtp):
    use_mail(app, smtp)
    vault = released(people, clock)
    mail.deliver(db.session)
    owner = messages_to(smtp, people["journalist"].email)
    caseworker = messages_to(smtp, people["caseworker"].email)
    kinds = {m["Subject"] for m in owner}
    assert kinds >= {"Check-in missed", "Vault released"}, kinds
    grace = next(m for m in owner if m["Subject"] == "Check-in missed").get_content()
    assert f"http://127.0.0.1:5000/vault/{vault.id}/check-in" in grace and "asks for your PIN" in grace
    assert {m["Subject"] for m in caseworker} >= {"Welfare check needed", "Vault released"}
    for message in owner + caseworker:
        content = message.get_content()
        assert TITLE not in content and "contratos" not in content and "Editora" not in content
        assert "/release/" not in content
        if message in caseworker:
            assert "/check-in" not in content and "/notifications" in content


def test_reminder_email_links_to_the_check_in_page(app, people, clock, smtp):
    use_mail(app, smtp)
    vault = make_vault(people)
    clock.advance(hours=vault.interval_hours - 23)
    vs.sweep(db.session)
    mail.deliver(db.session)
    [reminder] = messages_to(smtp, people["journalist"].email)
    assert reminder["Subject"] == "Check-in reminder"
    content = reminder.get_content()
    assert "it is due in 24 hours" in content and f"/vault/{vault.id}/check-in" in content
    assert TITLE not in content


def test_release_request_email_links_to_the_refusal_page(app, people, clock, smtp):
    open_case(people)
    vault = make_vault(people)
    use_mail(app, smtp)
    vs.request_release(db.session, people["caseworker"], vault, "Sin respuesta desde el martes")
    db.session.commit()
    mail.deliver(db.session)
    [asked] = messages_to(smtp, people["journalist"].email)
    content = asked.get_content()
    assert asked["Subject"] == "Your answer is needed"
    assert f"/vault/{vault.id}/refuse-release" in content and "Sin respuesta" not in content
