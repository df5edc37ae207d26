"""The journalist's side of a case: the request form, step by step, and following it."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from ..extensions import db
from . import service

bp = Blueprint("intake", __name__)


@bp.route("/my/requests")
def my_requests():
    return render_template("intake/my_requests.html", cases=service.my_cases(db.session, current_user))
