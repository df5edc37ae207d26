from __future__ import annotations

from flask import Blueprint, render_template

from . import service  # noqa: F401

bp = Blueprint("deadlines", __name__)


@bp.route("/overview")
def overview():
    return render_template("deadlines/overview.html", overdue=[])
