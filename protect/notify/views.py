from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from ..deadlines.service import STAGES
from ..extensions import db
from . import service

bp = Blueprint("notify", __name__)


@bp.route("/notifications")
def index():
    rows = service.for_user(db.session, current_user.id)
    unread = {n.id for n in rows if n.read_at is None}
    service.mark_read(db.session, current_user.id)
    db.session.commit()
    return render_template("notify/index.html", rows=rows, unread=unread, stages=STAGES)
