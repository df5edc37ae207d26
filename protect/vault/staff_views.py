"""The staff's vault pages: the vaults of the journalists a caseworker follows
(every vault, for a supervisor), welfare checks, release requests, and the
two-supervisor incident trigger.

Staff see codes, states and times: never a vault's name, a deposit or a
recipient (``service.staff_overview``). Who may act on which vault is the
service's rule; a vault or journalist outside it is a 404.
"""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user

from ..deadlines.forms import EmptyForm
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import db
from ..web import REFUSED, attempt
from . import forms, service

bp = Blueprint("vault_staff", __name__, url_prefix="/staff/vault")

PER_PAGE = 50
STATES = {**service.SHOWN_STATES, "pending_release": _l("Release under way")}
CAUSES = {
    "missed_checkin": _l("missed check-in"),
    "duress": _l("duress PIN"),
    "incident": _l("confirmed incident"),
    "request": _l("release request"),
}


def _user():
    return current_user._get_current_object()


def _found(lookup):
    try:
        return lookup()
    except NotFound:
        abort(404)


def _shown(action):
    """Refusals of a rule about *who* (the same supervisor confirming their own
    report) are explained on the page, not answered 403: the person may see it."""
    def run():
        try:
            return action()
        except PermissionDenied as exc:
            raise DomainError(exc.message) from None
    return run


@bp.route("/")
def index():
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    rows, total = service.staff_overview(db.session, _user(), page=page, per_page=PER_PAGE)
    waiting = (len(service.pending_incidents(db.session, _user())) if current_user.role == "supervisor" else 0)
    return render_template("vault/staff_index.html", rows=rows, total=total, page=page, per_page=PER_PAGE,
                           states=STATES, causes=CAUSES, waiting=waiting)


def _render_journalist(journalist, status: int = 200, *, request_forms=None, incident_form=None):
    user = _user()
    rows, _total = service.staff_overview(db.session, user, journalist=journalist, per_page=None)
    incidents = (service.pending_incidents(db.session, user, journalist) if user.role == "supervisor" else [])
    return render_template(
        "vault/staff_journalist.html", journalist=journalist, rows=rows, states=STATES, causes=CAUSES,
        incidents=incidents, kinds=forms.INCIDENT_CHOICES, request_forms=request_forms or {},
        blank_reason=forms.ReasonForm(formdata=None),
        welfare_form=EmptyForm(formdata=None), incident_form=incident_form or forms.IncidentForm(formdata=None),
        reference=rows[0].reference if rows else None, case_id=rows[0].case_id if rows else None), status


@bp.route("/journalists/<journalist_id>")
def journalist(journalist_id: str):
    return _render_journalist(_found(lambda: service.staff_journalist(db.session, _user(), journalist_id)))


def _journalist_url(vault) -> str:
    return url_for("vault_staff.journalist", journalist_id=vault.owner_id) + f"#vault-{vault.id}"


@bp.route("/<vault_id>/welfare", methods=["POST"])
def confirm_welfare(vault_id: str):
    vault = _found(lambda: service.staff_vault(db.session, _user(), vault_id))
    if EmptyForm().validate_on_submit():
        attempt(lambda: service.confirm_welfare(db.session, _user(), vault),
                success=_("Welfare check confirmed: the vault is armed again, with a new check-in due."))
    return redirect(_journalist_url(vault))


@bp.route("/<vault_id>/request-release", methods=["POST"])
def request_release(vault_id: str):
    vault = _found(lambda: service.staff_vault(db.session, _user(), vault_id))
    form = forms.ReasonForm()
    if form.validate_on_submit():
        if attempt(lambda: service.request_release(db.session, _user(), vault, form.reason.data), form=form,
                   success=_("Release requested. The journalist is told and can refuse it with their PIN "
                             "within their veto window; if not, the vault is released.")) is not REFUSED:
            return redirect(_journalist_url(vault))
    journalist = service.staff_journalist(db.session, _user(), vault.owner_id)
    return _render_journalist(journalist, 422, request_forms={vault.id: form})


@bp.route("/journalists/<journalist_id>/incident", methods=["POST"])
def report_incident(journalist_id: str):
    journalist = _found(lambda: service.staff_journalist(db.session, _user(), journalist_id))
    form = forms.IncidentForm()
    if form.validate_on_submit():
        if attempt(lambda: service.report_incident(db.session, _user(), journalist, form.kind.data, form.reason.data),
                   form=form, success=_("The incident was recorded. A different supervisor must confirm it "
                                        "before anything is released.")) is not REFUSED:
            return redirect(url_for("vault_staff.journalist", journalist_id=journalist.id))
    return _render_journalist(journalist, 422, incident_form=form)


def _render_incidents(status: int = 200, forms_by_id=None):
    return render_template("vault/staff_incidents.html", incidents=service.pending_incidents(db.session, _user()),
                           kinds=forms.INCIDENT_CHOICES, confirm_forms=forms_by_id or {},
                           blank_reason=forms.ReasonForm(formdata=None)), status


@bp.route("/incidents")
def incidents():
    return _render_incidents()


@bp.route("/incidents/<incident_id>/confirm", methods=["POST"])
def confirm_incident(incident_id: str):
    incident = _found(lambda: service.get_incident(db.session, _user(), incident_id))
    form = forms.ReasonForm()
    if form.validate_on_submit():
        started = attempt(_shown(lambda: service.confirm_incident(db.session, _user(), incident, form.reason.data)),
                          form=form)
        if started is not REFUSED:
            flash(ngettext("The incident is confirmed: the release of %(num)d vault started.",
                           "The incident is confirmed: the release of %(num)d vaults started.", started), "success")
            return redirect(url_for("vault_staff.incidents"))
    return _render_incidents(422, {incident.id: form})
