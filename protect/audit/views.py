from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from flask import Blueprint, render_template, request

from ..extensions import db
from . import service

bp = Blueprint("audit", __name__, url_prefix="/admin/audit")


def _date(name: str):
    try:
        day = datetime.strptime(request.args.get(name, ""), "%Y-%m-%d").date()
    except ValueError:
        return None
    return day if day.year < 9999 else None  # the day after must exist


@bp.route("/")
def index():
    actions = service.actions(db.session)
    action = request.args.get("action") if request.args.get("action") in actions else None
    actor = (request.args.get("actor") or "").strip()[:32] or None
    since, until = _date("since"), _date("until")
    page = max(1, min(request.args.get("page", 1, type=int) or 1, 100000))
    rows, total = service.entries(
        db.session, action=action, actor_id=actor,
        since=datetime.combine(since, time(), UTC) if since else None,
        until=datetime.combine(until, time(), UTC) + timedelta(days=1) if until else None,
        page=page)
    return render_template("audit/index.html", rows=rows, total=total, page=page, actions=actions,
                           filters={"action": action, "actor": actor, "since": since, "until": until})
