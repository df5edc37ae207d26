from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("cases", __name__)


@bp.route("/my/requests")
def my_requests():
    return render_template("cases/my_requests.html", cases=[])


@bp.route("/queue")
def queue():
    return render_template("cases/queue.html", cases=[])
