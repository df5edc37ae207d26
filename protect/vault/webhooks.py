"""The vault's messaging-bridge channel: the owner's notices, also posted as JSON.

A journalist may give a webhook URL (a bridge to Signal, Matrix, ntfy …), so
one lost mailbox is not a release. It works as the e-mail outbox does
(protect/notify/mail.py): ``enqueue`` writes a ``WebhookMessage`` in the
transaction that writes the owner's notification, with the same key (so a
repeated sweep adds nothing), and ``deliver`` — run after each sweep — claims
due rows with one UPDATE … RETURNING (SKIP LOCKED on PostgreSQL), commits the
claim, posts them, and marks them sent, or pending again with the e-mail
backoff, or failed after ``MAX_ATTEMPTS``. A row whose sender died stays
``sending`` until its lease ends and is then posted again; the payload's
``id`` is the same every time, so the bridge can drop the repeat.

The payload holds codes, times and the check-in address: never a title, a
name or an e-mail. The URL is opened from the vault (sealed) at send time and
never logged; redirects are not followed.
"""
from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import Row, Table, select, update

from ..extensions import Session, utcnow
from ..notify.bulk import insert_new
from ..notify.mail import DeliveryResult, backoff, claim_due
from .models import Vault, WebhookMessage

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 24
BATCH = 20
# What of a notice's data goes out: times and counts, nothing that names anyone.
PAYLOAD_FIELDS = ("hours", "due", "grace_until", "hold_until", "release_after", "cause")


def check_in_url(vault_id: str) -> str:
    """The check-in page's full address (outside a request too: for the sweep)."""
    path = current_app.url_map.bind("localhost").build("vault.check_in", {"vault_id": vault_id})
    return current_app.extensions["protect.settings"].public_url.rstrip("/") + path


def enqueue(db: Session, notes: list[dict], now: datetime | None = None) -> int:
    """Queue the vault owner's notices (``notify_many`` rows whose ``data`` names the
    vault) for the vaults that have a webhook; returns how many were new."""
    if not notes:
        return 0
    now = now or utcnow()
    ids = sorted({note["data"]["vault"] for note in notes})
    hooked: set[str] = set()
    for start in range(0, len(ids), 500):
        hooked.update(db.execute(select(Vault.id).where(Vault.id.in_(ids[start:start + 500]),
                                                        Vault.webhook_url_ct.is_not(None))).scalars())
    rows = [{"key": note["key"], "vault_id": note["data"]["vault"], "kind": note["kind"],
             "data": {k: v for k, v in note["data"].items() if k in PAYLOAD_FIELDS}}
            for note in notes if note["data"]["vault"] in hooked]
    return insert_new(db, cast(Table, WebhookMessage.__table__), rows,
                      {"state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now},
                      keys=False)


def payload(row) -> dict:
    return {"id": hashlib.sha256(row.key.encode()).hexdigest()[:40], "kind": row.kind,
            "vault": row.vault_id, **row.data, "check_in_url": check_in_url(row.vault_id)}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would turn the POST into a GET elsewhere; a 3xx is a failed try.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class PrivateAddress(OSError):
    """The bridge's name resolves to an address inside a network (loopback, private,
    link-local…): the server must not be used to reach its own neighbours."""


def _check_public(url: str) -> None:
    if current_app.extensions["protect.settings"].env in ("development", "test"):
        return  # bridges on this machine are how development and the tests work
    parts = urlsplit(url)
    for *_, address in socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP):
        if not ipaddress.ip_address(address[0]).is_global:
            raise PrivateAddress()


def _post(opener, url: str, body: bytes) -> None:
    _check_public(url)
    # The scheme is https (or http to loopback outside production): service.valid_webhook_url.
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310
        "Content-Type": "application/json", "User-Agent": "protect-vault-webhook"})
    with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
        response.read(4096)


def _error(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    reason = getattr(exc, "reason", None)  # URLError wraps the socket error
    return type(reason if isinstance(reason, Exception) else exc).__name__


def _claim(session: Session, now: datetime, limit: int) -> Sequence[Row]:
    return claim_due(session, WebhookMessage, now, limit, WebhookMessage.id, WebhookMessage.key,
                     WebhookMessage.vault_id, WebhookMessage.kind, WebhookMessage.data, WebhookMessage.attempts)


def deliver(session: Session, now: datetime | None = None, *, limit: int = 200) -> DeliveryResult:
    """Post up to ``limit`` due messages, ``BATCH`` claimed (and marked) at a time."""
    result = DeliveryResult()
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        while result.sent + result.retrying + result.failed < limit:
            at = now or utcnow()
            rows = _claim(session, at, min(BATCH, limit - result.sent - result.retrying - result.failed))
            if not rows:
                break
            _send_batch(session, opener, rows, at, result)
    finally:
        session.rollback()
    return result


def _send_batch(session: Session, opener, rows, now: datetime, result: DeliveryResult) -> None:
    urls = {vault.id: vault.webhook_url for vault in session.execute(
        select(Vault).where(Vault.id.in_(sorted({row.vault_id for row in rows})))).scalars()}
    session.rollback()  # nothing is held while talking to the bridges
    sent: list[int] = []
    errors: dict[int, str] = {}
    try:
        for row in rows:
            url = urls.get(row.vault_id)
            if not url:
                errors[row.id] = "NoWebhook"  # removed since the message was queued
                continue
            try:
                _post(opener, url, json.dumps(payload(row), separators=(",", ":")).encode())
                sent.append(row.id)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                errors[row.id] = _error(exc)
    finally:
        _finish(session, rows, sent, errors, now, result)


def _finish(session: Session, rows, sent: list[int], errors: dict[int, str], now: datetime,
            result: DeliveryResult) -> None:
    claimed = WebhookMessage.state == "sending"
    options = {"synchronize_session": False}
    if sent:
        session.execute(update(WebhookMessage).where(WebhookMessage.id.in_(sent), claimed)
                        .values(state="sent", sent_at=now, last_error=None), execution_options=options)
        result.sent += len(sent)
    for row in rows:
        error = errors.get(row.id)
        if error is None:
            continue  # sent, or never reached (left to its lease)
        if error == "NoWebhook" or row.attempts >= MAX_ATTEMPTS:
            values: dict[str, Any] = {"state": "failed", "last_error": error}
            result.failed += 1
            log.error("webhook message %s failed for good after %d attempt(s) (%s)", row.id, row.attempts, error)
        else:
            values = {"state": "pending", "next_attempt_at": now + backoff(row.attempts), "last_error": error}
            result.retrying += 1
            log.warning("webhook message %s: attempt %d failed (%s)", row.id, row.attempts, error)
        session.execute(update(WebhookMessage).where(WebhookMessage.id == row.id, claimed).values(**values),
                        execution_options=options)
    session.commit()
