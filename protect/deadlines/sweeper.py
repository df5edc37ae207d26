"""The embedded sweeper: one background thread in the web process.

For the single-machine default. Multi-host deployments turn it off
(``PROTECT_SWEEP_INTERVAL_SECONDS=0``) and run ``flask protect sweep`` from a
timer on any number of hosts instead. After each sweep (committed) the thread
sends the outbox's due e-mail, so it also retries e-mail that failed before.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from flask import Flask

from ..extensions import db
from ..notify import mail
from . import service

log = logging.getLogger(__name__)


def install(app: Flask) -> None:
    """Start the thread with the first request, so CLI commands never run one."""
    settings = app.extensions["protect.settings"]
    if settings.sweep_interval_seconds <= 0 or settings.testing:
        return
    lock = threading.Lock()

    def ensure_started():
        if "protect.sweeper" not in app.extensions:
            with lock:
                if "protect.sweeper" not in app.extensions:
                    start(app)

    app.before_request(ensure_started)


def start(app: Flask) -> threading.Thread:
    settings = app.extensions["protect.settings"]
    stop = threading.Event()

    def run():
        while not stop.wait(settings.sweep_interval_seconds):
            with app.app_context():
                run_once(settings)

    thread = threading.Thread(target=run, name="protect-sweeper", daemon=True)
    thread.start()
    app.extensions["protect.sweeper"] = stop
    return thread


def run_once(settings) -> None:
    """One sweep, then the outbox's due e-mail (each failing alone); in an app context."""
    try:
        result = service.sweep(db.session, escalate_after=timedelta(minutes=settings.escalate_after_minutes))
        if result.notifications:
            log.info("sweep: %s", result)
    except Exception:
        db.session.rollback()
        log.exception("sweep failed; trying again at the next interval")
    finally:
        db.session.remove()
    if not settings.mail_server:
        return
    try:
        delivered = mail.deliver(db.session)
        if delivered:
            log.info("mail: %s", delivered)
    except Exception:
        db.session.rollback()
        log.exception("sending e-mail failed; trying again at the next interval")
    finally:
        db.session.remove()
