from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..accounts.models import User
from ..cases import service as cases
from ..errors import NotFound
from ..extensions import db
from ..web import REFUSED, attempt
from . import service
from .forms import PROCEDURES, UNIT_LABELS, ClosureForm, EmptyForm, PauseForm, PolicyForm
from .models import Clock

bp = Blueprint("deadlines", __name__)


@bp.route("/deadlines")
def mine():
    return render_template("deadlines/mine.html", rows=service.my_deadlines(db.session, current_user),
                           time_left=service.time_left, stages=service.STAGES, states=service.STATES)


@bp.route("/overview")
def overview():
    data = service.overview(db.session)
    names = {u.id: u.email for u in db.session.query(User).filter(
        User.id.in_([row[0] for row in data["by_assignee"] if row[0]]))}
    return render_template("deadlines/overview.html", data=data, names=names, time_left=service.time_left,
                           stages=service.STAGES)


def _clock(case_id: str, clock_id: str):
    try:
        case = cases.get_case(db.session, current_user, case_id)
    except NotFound:
        abort(404)
    clock = db.session.get(Clock, clock_id)
    if clock is None or clock.case_id != case.id:
        abort(404)
    return case, clock


@bp.route("/cases/<case_id>/clocks/<clock_id>/pause", methods=["POST"])
def pause(case_id: str, clock_id: str):
    case, clock = _clock(case_id, clock_id)
    form = PauseForm(prefix="pause")
    if not form.validate_on_submit():
        flash(_("Say why the deadline is paused (for example, waiting on the petitioner)."), "error")
        return redirect(url_for("cases.case", case_id=case.id))
    attempt(lambda: service.pause(db.session, current_user, case, clock, form.reason.data),
            success=_("The deadline is paused; the time it stays paused is not counted."))
    return redirect(url_for("cases.case", case_id=case.id))


@bp.route("/cases/<case_id>/clocks/<clock_id>/resume", methods=["POST"])
def resume(case_id: str, clock_id: str):
    case, clock = _clock(case_id, clock_id)
    if EmptyForm(prefix="resume").validate_on_submit():
        attempt(lambda: service.resume(db.session, current_user, case, clock),
                success=_("The deadline is running again."))
    return redirect(url_for("cases.case", case_id=case.id))


@bp.route("/admin/deadlines", methods=["GET", "POST"])
def policies():
    form = PolicyForm()
    if form.validate_on_submit():
        if attempt(lambda: service.add_policy_version(
                db.session, current_user, stage=form.stage.data, effective_from=form.effective_from.data,
                start_events=form.start_events.data, stop_event=form.stop_event.data.strip(),
                duration=form.duration.data, unit=form.unit.data,
                warn_percent=25 if form.warn_percent.data is None else form.warn_percent.data,
                procedure=form.procedure.data, legal_basis=form.legal_basis.data),
                form=form, success=_("New version saved. Deadlines already running keep the version "
                                     "they started under.")) is not REFUSED:
            return redirect(url_for(".policies"))
    status = 400 if form.errors or form.form_errors else 200
    return render_template("deadlines/policies.html", form=form, policies=service.all_policies(db.session),
                           stages=service.STAGES, units=UNIT_LABELS, procedures=PROCEDURES), status


@bp.route("/admin/closures", methods=["GET", "POST"])
def closures():
    form = ClosureForm()
    if form.validate_on_submit():
        if attempt(lambda: service.add_closure(db.session, current_user, form.day.data, form.label.data),
                   form=form, success=_("Closure added. New business-day deadlines skip it.")) is not REFUSED:
            return redirect(url_for(".closures"))
    status = 400 if form.errors or form.form_errors else 200
    return render_template("deadlines/closures.html", form=form, closures=service.closures(db.session),
                           remove_form=EmptyForm()), status


@bp.route("/admin/closures/<day>/remove", methods=["POST"])
def remove_closure(day: str):
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        abort(404)
    if EmptyForm().validate_on_submit():
        service.remove_closure(db.session, current_user, parsed)
        db.session.commit()
        flash(_("Closure removed."), "success")
    return redirect(url_for(".closures"))
