"""The staff side of a case: queue, case page, workflow steps."""
from __future__ import annotations

from flask import Blueprint, render_template

from . import service  # noqa: F401

bp = Blueprint("cases", __name__)


@bp.route("/queue")
def queue():
    return render_template("cases/queue.html", cases=[])
