"""The messaging-bridge channel, against a real HTTP server on 127.0.0.1 (on SQLite
and PostgreSQL): the owner's notices are queued with the sweep's, posted once,
retried with backoff, never doubled by a repeated sweep, and hold no personal data."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from protect.deadlines import sweeper
from protect.errors import DomainError
from protect.extensions import db
from protect.vault import service as vs, webhooks
from protect.vault.models import Vault, WebhookMessage
from protect.vault.service import Schedule

from .conftest import PIN, make_vault, open_case
from .test_pages import post, sign_in, text

TITLE = "Investigación: contratos de seguridad"  # make_vault's default title


class Bridge:
    """A messaging bridge: records every POST; answers ``status`` (one per
    request from ``answers`` while any are left, then 204)."""

    def __init__(self):
        self.received: list[dict] = []
        self.raw: list[bytes] = []
        self.answers: list[int] = []
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                bridge.raw.append(body)
                bridge.received.append({"path": self.path, "type": self.headers["Content-Type"],
                                        "json": json.loads(body)})
                status = bridge.answers.pop(0) if bridge.answers else 204
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/abc123"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bridge():
    server = Bridge()
    yield server
    server.close()


def hooked_vault(people, url, **kwargs):
    vault = make_vault(people, **kwargs)
    vs.set_webhook(db.session, people["journalist"], vault, url)
    db.session.commit()
    return vault


def messages() -> list[WebhookMessage]:
    db.session.expire_all()
    return list(db.session.execute(select(WebhookMessage).order_by(WebhookMessage.id)).scalars())


def test_a_reminder_is_posted_once(people, clock, bridge):
    vault = hooked_vault(people, bridge.url)
    at = clock() + timedelta(days=6, hours=1)  # the 24 h reminder is due
    vs.sweep(db.session, now=at)
    (message,) = messages()
    due = vault.next_due_at.strftime("%Y%m%dT%H%M%S")
    assert (message.kind, message.state) == ("vault_reminder", "pending")
    assert message.key == f"vault:{vault.id}:remind:{due}:24"  # the notification's key
    result = webhooks.deliver(db.session, at)
    assert (result.sent, result.retrying, result.failed) == (1, 0, 0)
    (got,) = bridge.received
    assert got["path"] == "/hook/abc123" and got["type"] == "application/json"
    payload = got["json"]
    assert set(payload) == {"id", "kind", "vault", "hours", "due", "check_in_url"}
    assert payload["kind"] == "vault_reminder" and payload["vault"] == vault.id and payload["hours"] == 24
    assert payload["check_in_url"] == f"http://127.0.0.1:5000/vault/{vault.id}/check-in"
    for secret in (TITLE, "Editora", "editora@example.org", people["journalist"].id, PIN):
        assert secret not in bridge.raw[0].decode()
    # Nothing twice: not by delivering again, nor by sweeping again.
    assert not webhooks.deliver(db.session, at + timedelta(hours=2))
    vs.sweep(db.session, now=at)
    assert not webhooks.deliver(db.session, at + timedelta(hours=2))
    assert len(bridge.received) == 1
    (message,) = messages()
    assert message.state == "sent" and message.attempts == 1 and message.sent_at == at


def test_a_failed_post_is_retried_with_backoff(people, clock, bridge, caplog):
    hooked_vault(people, bridge.url)
    at = clock() + timedelta(days=6, hours=1)
    vs.sweep(db.session, now=at)
    bridge.answers = [500, 302]
    with caplog.at_level(logging.INFO):
        assert webhooks.deliver(db.session, at).retrying == 1
        (message,) = messages()
        assert (message.state, message.last_error, message.next_attempt_at) == ("pending", "HTTP 500",
                                                                                at + timedelta(minutes=1))
        assert not webhooks.deliver(db.session, at + timedelta(seconds=30))  # not due yet
        assert webhooks.deliver(db.session, at + timedelta(minutes=1)).retrying == 1  # a redirect is not followed
        (message,) = messages()
        assert message.last_error == "HTTP 302" and message.next_attempt_at == at + timedelta(minutes=3)
        assert webhooks.deliver(db.session, at + timedelta(minutes=3)).sent == 1
    assert [r["path"] for r in bridge.received] == ["/hook/abc123"] * 3
    assert len({r["json"]["id"] for r in bridge.received}) == 1  # the same id: the bridge can drop repeats
    (message,) = messages()
    assert message.state == "sent" and message.attempts == 3
    logged = caplog.text
    assert "webhook message" in logged
    assert bridge.url not in logged and "abc123" not in logged and str(bridge.server.server_port) not in logged


def test_an_unreachable_bridge_is_retried_then_given_up(people, clock, bridge):
    bridge.close()  # nothing listens on that port any more
    vault = hooked_vault(people, bridge.url)
    at = clock() + timedelta(days=6, hours=1)
    vs.sweep(db.session, now=at)
    assert webhooks.deliver(db.session, at).retrying == 1
    assert messages()[0].last_error == "ConnectionRefusedError"
    db.session.execute(WebhookMessage.__table__.update().values(attempts=webhooks.MAX_ATTEMPTS - 1,
                                                                 next_attempt_at=at))
    db.session.commit()
    assert webhooks.deliver(db.session, at).failed == 1
    assert messages()[0].state == "failed" and messages()[0].vault_id == vault.id


def test_a_removed_webhook_fails_its_queued_messages(people, clock, bridge):
    vault = hooked_vault(people, bridge.url)
    at = clock() + timedelta(days=6, hours=1)
    vs.sweep(db.session, now=at)
    vs.set_webhook(db.session, people["journalist"], vault, "")
    db.session.commit()
    assert webhooks.deliver(db.session, at).failed == 1
    assert messages()[0].last_error == "NoWebhook" and bridge.received == []


def test_every_notice_to_the_owner_goes_to_the_bridge_and_no_staff_notice(people, clock, bridge):
    open_case(people)
    vault = hooked_vault(people, bridge.url, schedule=Schedule(after_grace="welfare_hold"))
    quiet = make_vault(people)  # no webhook: nothing queued for it
    start = clock()
    for later in (timedelta(days=6, hours=1), timedelta(days=6, hours=23), timedelta(days=7, minutes=1),
                  timedelta(days=9, minutes=2)):
        vs.sweep(db.session, now=start + later)
    vs.confirm_welfare(db.session, people["caseworker"], db.session.get(Vault, vault.id))
    vs.request_release(db.session, people["caseworker"], db.session.get(Vault, vault.id), "Nadie sabe de ella")
    db.session.commit()
    kinds = [m.kind for m in messages()]
    assert kinds == ["vault_reminder", "vault_reminder", "vault_grace", "vault_welfare_hold",
                     "vault_release_requested"]
    assert quiet.id not in {m.vault_id for m in messages()}
    assert "journalist" not in json.dumps([m.data for m in messages()])
    assert webhooks.deliver(db.session, start + timedelta(days=10)).sent == 5
    assert [r["json"]["kind"] for r in bridge.received] == kinds


def test_paused_vault_resuming_is_posted(people, clock, bridge):
    vault = hooked_vault(people, bridge.url)
    vs.pause(db.session, vault, PIN, clock() + timedelta(days=2))
    db.session.commit()
    vs.sweep(db.session, now=clock() + timedelta(days=2, minutes=1))
    assert [m.kind for m in messages()] == ["vault_resumed"]
    assert set(messages()[0].data) == {"due"}


def test_the_sweeper_and_the_cli_deliver(app, people, clock, bridge):
    hooked_vault(people, bridge.url)
    clock.advance(days=6, hours=1)
    settings = app.extensions["protect.settings"]
    sweeper.run_once(settings)
    assert [r["json"]["kind"] for r in bridge.received] == ["vault_reminder"]
    clock.advance(hours=22)  # the 2 h reminder
    result = app.test_cli_runner().invoke(args=["protect", "sweep"])
    assert result.exit_code == 0 and "vault webhooks: DeliveryResult(sent=1" in result.output
    assert [r["json"]["hours"] for r in bridge.received] == [24, 2]


def test_webhook_addresses_are_checked(app, people):
    vault = make_vault(people)
    owner = people["journalist"]
    for good in ("https://bridge.example.org/hooks/123?token=abc", "http://127.0.0.1:8080/x", "http://localhost/x",
                 "http://[::1]:9000/x", ""):
        vs.set_webhook(db.session, owner, vault, good)
        assert vault.webhook_url == (good or None)
    for bad in ("http://example.org/x", "ftp://example.org/x", "https://", "https://u:p@example.org/",
                "https://example.org:99999/", "javascript:alert(1)", "https://example.org/" + "a" * 500,
                "https://exa mple.org/", "https://example.org/\x00"):
        with pytest.raises(DomainError, match="starting with https://"):
            vs.set_webhook(db.session, owner, vault, bad)
    settings = app.extensions["protect.settings"]
    app.extensions["protect.settings"] = dataclasses.replace(settings, env="production")
    with pytest.raises(DomainError):
        vs.set_webhook(db.session, owner, vault, "http://127.0.0.1:8080/x")
    vs.set_webhook(db.session, owner, vault, "https://bridge.example.org/x")
    db.session.commit()
    assert vault.webhook_url.encode() not in vault.webhook_url_ct  # sealed


def test_the_settings_page_sets_the_bridge(app, client, make_account, bridge):
    journalist = make_account("journalist", enrol=False)
    token = sign_in(client, journalist)
    response = post(client, "/vault/new", token, title="Con puente")
    vault_id = response.location.rsplit("/", 1)[-1]
    response = post(client, f"/vault/{vault_id}/webhook", token, webhook_url=bridge.url)
    assert response.status_code == 302
    page = text(client.get(f"/vault/{vault_id}/settings"))
    assert "The messaging bridge was saved." in page and bridge.url in page
    assert "Messaging bridge set" in text(client.get(f"/vault/{vault_id}/timeline"))
    with app.app_context():
        assert db.session.get(Vault, vault_id).webhook_url == bridge.url


def test_a_bridge_inside_the_network_is_never_posted_to_in_production(app, people, clock, bridge):
    """The server must not be usable to reach its own neighbours (SSRF): in production a
    bridge whose name resolves to a loopback or private address fails its try."""
    vault = hooked_vault(people, bridge.url)
    vault.webhook_url = f"https://localhost:{bridge.server.server_port}/hook/abc123"
    db.session.commit()
    at = clock() + timedelta(days=6, hours=1)
    vs.sweep(db.session, now=at)
    settings = app.extensions["protect.settings"]
    app.extensions["protect.settings"] = dataclasses.replace(settings, env="production")
    try:
        assert webhooks.deliver(db.session, at).retrying == 1
    finally:
        app.extensions["protect.settings"] = settings
    assert messages()[0].last_error == "PrivateAddress" and bridge.received == []
