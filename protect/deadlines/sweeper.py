"""The embedded sweeper: one background thread in the web process.

For the single-machine default. Multi-host deployments turn it off
(``PROTECT_SWEEP_INTERVAL_SECONDS=0``) and run ``flask protect sweep`` from a
timer on any number of hosts instead. After each sweep (committed) the thread
sends the outbox's due e-mail, so it also retries e-mail that failed before.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import timedelta

from flask import Flask
from sqlalchemy import text

from ..extensions import db
from ..notify import mail
from ..reports import service as reports
from ..vault import service as vaults
from ..vault import webhooks
from . import service

log = logging.getLogger(__name__)
GARBAGE_EVERY_SECONDS = 3600


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
        last_collection = 0.0
        while not stop.wait(settings.sweep_interval_seconds):
            # Garbage collection lists the whole blob store: hourly, not every minute.
            collect = time.monotonic() - last_collection >= GARBAGE_EVERY_SECONDS
            with app.app_context():
                run_once(settings, collect_garbage=collect)
            if collect:
                last_collection = time.monotonic()

    thread = threading.Thread(target=run, name="protect-sweeper", daemon=True)
    thread.start()
    app.extensions["protect.sweeper"] = stop
    return thread


def _refresh_statistics() -> None:
    # PostgreSQL's autovacuum keeps statistics; SQLite's planner needs asking.
    if db.engine.dialect.name == "sqlite":
        db.session.execute(text("PRAGMA optimize"))


def run_once(settings, *, collect_garbage: bool = False) -> None:
    """Deadlines, then vaults and their webhooks, then (when asked) blob garbage, then
    the outbox's due e-mail; each in its own transaction, failing alone; in an app context."""
    jobs = [("deadline sweep", lambda: service.sweep(
                db.session, escalate_after=timedelta(minutes=settings.escalate_after_minutes),
                workers=settings.sweep_workers)),
            ("vault sweep", lambda: vaults.sweep(db.session)),
            ("vault webhooks", lambda: webhooks.deliver(db.session)),
            ("delay reports made again", lambda: reports.refresh(db.session))]
    if collect_garbage:
        jobs.append(("blob garbage collection", lambda: vaults.collect_garbage(db.session)))
        jobs.append(("planner statistics", _refresh_statistics))
    if settings.mail_server:
        jobs.append(("mail", lambda: mail.deliver(db.session)))
    for name, job in jobs:
        try:
            result = job()
            counts = (dataclasses.asdict(result).values()
                      if dataclasses.is_dataclass(result) and not isinstance(result, type) else [result])
            if any(counts):  # quiet when nothing happened
                log.info("%s: %s", name, result)
        except Exception:
            db.session.rollback()
            log.exception("%s failed; trying again at the next interval", name)
        finally:
            db.session.remove()
