"""Logs: one line per request with a request id, as text or JSON (PROTECT_LOG_FORMAT).

A request line holds the method, the endpoint *name*, the status and the
duration. Never the path or query string (paths carry tokens, as in
``/release/<token>``, and ids), never an address, an account or a form
field: nothing that leads to a person. The request id comes from a sane
``X-Request-ID`` (nginx sets one) or is made here; every line logged while
the request runs carries it, and the response echoes it.
"""
from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, g, has_request_context, request, request_finished, request_started
from pythonjsonlogger.json import JsonFormatter

HEADER = "X-Request-ID"
# What nginx's $request_id looks like (32 hex), with room for other proxies' ids;
# the charset leaves no room for an e-mail address or a sentence.
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Load balancers ask every few seconds: their lines only at DEBUG.
PROBES = {"ops.healthz", "ops.readyz"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

log = logging.getLogger("protect.request")


def request_id() -> str | None:
    """This request's id (None outside a request)."""
    if not has_request_context():
        return None
    rid = g.get("request_id")
    if rid is None:
        given = request.headers.get(HEADER, "")
        rid = g.request_id = given if _SANE_ID.fullmatch(given) else secrets.token_hex(16)
    return rid


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id()
        return True


def configure(log_format: str) -> None:
    """Send protect's loggers to stderr (gunicorn and systemd collect it), in ``log_format``.

    Replaces the handler a previous app of this process installed (tests make many).
    """
    logger = logging.getLogger("protect")
    for old in [h for h in logger.handlers if getattr(h, "protect_ops", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler()
    handler.protect_ops = True  # type: ignore[attr-defined]
    if log_format == "json":
        handler.setFormatter(JsonFormatter(
            "{levelname}{name}{message}{request_id}", style="{", timestamp="time",
            rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_RequestIdFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _started(sender: Flask, **_extra) -> None:
    g.request_started = time.perf_counter()
    request_id()


def _finished(sender: Flask, response, **_extra) -> None:
    started = g.get("request_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
    response.headers[HEADER] = request_id()
    method = request.method if request.method in _METHODS else "OTHER"
    endpoint = request.endpoint or "-"  # "-": no route matched (a 404 or 405)
    level = logging.DEBUG if endpoint in PROBES else logging.INFO
    log.log(level, "%s %s %s %s ms", method, endpoint, response.status_code, duration_ms,
            extra={"method": method, "endpoint": endpoint, "status": response.status_code,
                   "duration_ms": duration_ms})


def install(app: Flask) -> None:
    configure(app.extensions["protect.settings"].log_format)
    # Signals, not before/after_request: request_started comes before every
    # before_request function (an access check may answer first), and
    # request_finished also follows error pages.
    request_started.connect(_started, app)
    request_finished.connect(_finished, app)
