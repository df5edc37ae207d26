"""Probes for load balancers and orchestrators; public, and free of personal data.

``/healthz``: the process answers (no database call, so a database outage
does not get every host restarted). ``/readyz``: the database answers a
trivial query and the blob store is reachable; else 503 with reason codes.
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app

from .health import blob_store_problem, database_problem

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)


@bp.route("/healthz")
def healthz():
    return {"status": "ok"}


@bp.route("/readyz")
def readyz():
    reasons = []
    for reason, problem in (("database", database_problem),
                            ("blob_store", lambda: blob_store_problem(current_app.extensions["protect.blobs"]))):
        found = problem()
        if found:
            log.warning("not ready: %s: %s", reason, found)
            reasons.append(reason)
    if reasons:
        return {"status": "unavailable", "reasons": reasons}, 503
    return {"status": "ready"}
