"""The app as gunicorn serves it in the fault tests, with one optional stall.

Settings come from PROTECT_* variables as in production. With
FAULT_STALL_PATH set, a request whose path contains it stops right after its
audit row is flushed to the database, before the commit, touches the file
FAULT_STALL_MARKER and sleeps: the moment to kill the server "in the middle
of a decision" (the decision's rows are in the database's open transaction).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from flask import has_request_context, request

from protect import create_app
from protect.audit import service as audit


def _stall_after_audit(path_part: str, marker: Path):
    record = audit.record

    def stalling(session, action, **kwargs):
        entry = record(session, action, **kwargs)
        if has_request_context() and path_part in request.path:
            session.flush()
            marker.touch()
            time.sleep(120)
        return entry

    audit.record = stalling


def wsgi():
    if os.environ.get("FAULT_STALL_PATH"):
        _stall_after_audit(os.environ["FAULT_STALL_PATH"], Path(os.environ["FAULT_STALL_MARKER"]))
    return create_app()
