"""The journalist's side of a case: the request form, step by step, and following it.

Caseworkers and supervisors use the same five steps to file a request taken
by phone. Every step is saved to the draft when posted, so a dropped
connection loses at most the step being typed. No page needs JavaScript.

Object-level access comes from ``service.get_case``: an unknown id and a case
of somebody else look the same (404).
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import format_date, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.routing import BuildError
from wtforms import SelectChoice

from ..crypto import serverkeys
from ..crypto.blobs import BlobError
from ..crypto.downloads import decrypted_attachment
from ..crypto.uploads import EncryptedUpload, accepts_uploads
from ..deadlines import service as deadlines
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import db, utcnow
from ..web import REFUSED, attempt
from . import codes, service
from .intake_forms import (
    NONE,
    AppealForm,
    EvidenceForm,
    IncidentForm,
    MessageForm,
    SubmitForm,
    ThreatForm,
    WhoForm,
    WithdrawForm,
    WorkForm,
)
from .models import Case

log = logging.getLogger(__name__)
bp = Blueprint("intake", __name__)

STEPS = {
    1: _l("Who is at risk"),
    2: _l("Your work and where you are"),
    3: _l("What happened"),
    4: _l("Threats online"),
    5: _l("Review and send"),
}

# What comes next, in plain words (the legal terms are added with the deadlines).
NEXT_STEP = {
    "received": _l("Next, a caseworker decides whether your request is admitted, and whether it needs urgent measures."),
    "triage": _l("Next, the caseworker decides whether your request is admitted as urgent (extraordinary), as ordinary, or not admitted."),
    "urgent_measures": _l("Next, the urgent measures are put in place; then the team assesses the risk you face."),
    "risk_assessment": _l("Next, the team finishes the risk assessment (they may ask to talk with you); then the governing board decides on your measures."),
    "board_decision": _l("Next, the governing board decides which protection measures you get."),
    "implementation": _l("Next, the authorities put your measures in place. Tell us in a message if something is not done."),
    "active": _l("Next, a periodic review of your measures. Write to us if your situation changes."),
    "review": _l("Next, the team decides whether to keep, change or withdraw your measures."),
    "appeal": _l("Next, an independent study of your case, then a decision on your appeal."),
    "not_admitted": _l("If you disagree, you can appeal below and explain why."),
    "closed": _l("If you are in danger again, make a new request."),
    "withdrawn": _l("If you are in danger again, make a new request."),
}


def _evidence_recipients() -> list[str]:
    return [serverkeys.recipient(db.session, "evidence")]


# -- helpers ----------------------------------------------------------------

def _user():
    return current_user._get_current_object()


def _load(case_id: str) -> Case:
    """The case if the signed-in person may see it; otherwise 404, whatever the reason."""
    try:
        return service.get_case(db.session, _user(), case_id)
    except NotFound:
        abort(404)


def _step_url(case: Case, step: int | None = None) -> str:
    return url_for("intake.step", case_id=case.id, step=step or case.intake_step)


def _followed_url(case: Case) -> str:
    """Where a sent case is followed: the journalist's case page, or the staff's."""
    if current_user.role == "journalist":
        return url_for("intake.case", case_id=case.id)
    try:
        return url_for("cases.case", case_id=case.id)
    except BuildError:  # the staff case page is not there yet
        return url_for("cases.queue")


def _home_url() -> str:
    return url_for("intake.my_requests" if current_user.role == "journalist" else "cases.queue")


def _files(name: str = "files") -> list[EncryptedUpload]:
    """The files sent in field ``name``, already encrypted; an empty input gives none."""
    uploads: list[EncryptedUpload] = []
    for storage in request.files.getlist(name):
        upload = storage.stream
        if not isinstance(upload, EncryptedUpload) or not upload.size:
            continue  # no file chosen (or an empty one): nothing to keep
        uploads.append(upload)
    return uploads


def _discard(uploads) -> None:
    """After a rollback: blobs already published for rows that will not exist."""
    store = current_app.extensions["protect.blobs"]
    for upload in uploads:
        if upload.committed:
            _delete_blob(store, upload.blob_id)


def _delete_blob(store, blob_id: str) -> None:
    try:
        store.delete(blob_id)
    except BlobError as exc:  # the orphan sweep will find it
        log.warning("could not delete blob %s: %s", blob_id, type(exc).__name__)


def _version(form) -> int | None:
    raw = (form.version.data or "").strip()
    return int(raw) if raw.isdigit() else None


# -- the journalist's list -------------------------------------------------------

@bp.route("/my/requests")
def my_requests():
    user = _user()
    return render_template("intake/my_requests.html", cases=service.my_cases(db.session, user),
                           unread=service.unread_counts(db.session, user),
                           statuses=codes.STATUSES, explained=codes.STATUS_EXPLAINED)


@bp.route("/requests/new", methods=["POST"])
def new():
    user = _user()
    # A request started and left untouched is reused: a double tap makes one draft, not two.
    for case in service.my_cases(db.session, user):
        if (case.status == "draft" and case.filed_by_id == user.id and case.intake_step == 1
                and case.name_ct is None):
            return redirect(_step_url(case, 1))
    try:
        case = service.start_request(db.session, user)
    except PermissionDenied:
        abort(403)
    db.session.commit()
    return redirect(_step_url(case, 1))


# -- the five steps ---------------------------------------------------------------

@bp.route("/requests/<case_id>/step/<int:step>", methods=["GET", "POST"])
@accepts_uploads(recipients=_evidence_recipients)
def step(case_id: str, step: int):
    case = _load(case_id)
    if step not in STEPS:
        abort(404)
    if case.status != "draft":
        return redirect(_followed_url(case))
    if not service.can_edit_draft(_user(), case):
        abort(404)
    if step > case.intake_step:
        return redirect(_step_url(case))
    return STEP_VIEWS[step](case)


def _render_step(case: Case, step: int, form, **context):
    back = _step_url(case, step - 1) if step > 1 else _home_url()
    return render_template(f"intake/step{step}.html", case=case, step=step, steps=STEPS,
                           total=len(STEPS), form=form, back=back, codes=codes,
                           on_behalf=current_user.role != "journalist", **context)


def _step_who(case: Case):
    if request.method == "POST":
        form = WhoForm()
    else:
        form = WhoForm(data={
            "name": case.name, "pseudonymous": case.pseudonymous, "contact": case.contact,
            "beneficiary_type": case.beneficiary_type or "journalist", "gender": case.gender or "",
            "others_at_risk": case.others_at_risk})
    if form.validate_on_submit():
        real = form.real_identity.data
        if form.pseudonymous.data and not (real or "").strip() and case.real_identity_ct is not None:
            real = case.real_identity  # kept sealed as it was; never sent back to the page
        try:
            service.save_who(db.session, _user(), case, service.WhoAtRisk(
                name=form.name.data, pseudonymous=form.pseudonymous.data, real_identity=real,
                contact=form.contact.data, beneficiary_type=form.beneficiary_type.data,
                gender=form.gender.data or None, others_at_risk=form.others_at_risk.data))
        except DomainError as exc:
            db.session.rollback()
            form.form_errors.append(exc.message)
        else:
            db.session.commit()
            return redirect(_step_url(case, 2))
    return _render_step(case, 1, form, sealed_identity=case.real_identity_ct is not None)


def _step_work(case: Case):
    if request.method == "POST":
        form = WorkForm()
    else:
        form = WorkForm(data={"outlet": case.outlet, "journalism_kind": case.journalism_kind or "",
                              "state_code": case.state_code or "", "municipality": case.municipality})
    if form.validate_on_submit():
        try:
            service.save_work(db.session, _user(), case, outlet=form.outlet.data,
                              journalism_kind=form.journalism_kind.data or None,
                              state_code=form.state_code.data, municipality=form.municipality.data)
        except DomainError as exc:
            db.session.rollback()
            form.form_errors.append(exc.message)
        else:
            db.session.commit()
            return redirect(_step_url(case, 3))
    return _render_step(case, 2, form)


def _step_incidents(case: Case):
    form = IncidentForm()
    if form.validate_on_submit():
        uploads = _files()
        going_on = request.form.get("action") == "continue"
        if form.is_blank() and not uploads:
            if going_on and case.incidents:
                service.advance_intake(db.session, _user(), case, 4)
                db.session.commit()
                return redirect(_step_url(case, 4))
            form.form_errors.append(_("Tell us about at least one incident: what happened is what we need most to protect you.")
                                    if going_on else _("Fill in the incident before adding it."))
        else:
            def work():
                incident = service.add_incident(
                    db.session, _user(), case, occurred_on=form.occurred_on.data, kind=form.kind.data,
                    aggressor=form.aggressor.data, channel=form.channel.data, place=form.place.data,
                    narrative=form.narrative.data)
                for upload in uploads:
                    service.add_evidence(db.session, _user(), case, upload, incident_id=incident.id)

            done = _save_item(case, form, uploads, work, 4 if going_on else 3,
                              ngettext("The incident was added, with %(num)d file.",
                                       "The incident was added, with %(num)d files.", len(uploads))
                              if uploads else _("The incident was added."))
            if done:
                return done
    return _render_step(case, 3, form, today=utcnow().date().isoformat(),
                        evidence_of=_evidence_by(case, "incident_id"))


def _save_item(case: Case, form, uploads, work, next_step: int, message: str):
    """Add an incident or threat with its files, moving on to ``next_step``; on a
    refusal nothing is kept, not even the files already stored."""
    try:
        work()
        if next_step > case.intake_step:
            service.advance_intake(db.session, _user(), case, next_step)
    except DomainError as exc:
        db.session.rollback()
        _discard(uploads)
        form.form_errors.append(exc.message)
        return None
    db.session.commit()
    flash(message, "success")
    return redirect(_step_url(case, next_step))


def _step_threats(case: Case):
    form = ThreatForm()
    if form.validate_on_submit():
        uploads = _files()
        going_on = request.form.get("action") == "continue"
        if form.is_blank() and not uploads:
            if going_on:
                service.advance_intake(db.session, _user(), case, 5)
                db.session.commit()
                return redirect(_step_url(case, 5))
            form.form_errors.append(_("Fill in the platform and the link or account before adding it."))
        else:
            def work():
                threat = service.add_online_threat(db.session, _user(), case, platform=form.platform.data,
                                                   locator=form.locator.data)
                for upload in uploads:
                    service.add_evidence(db.session, _user(), case, upload, online_threat_id=threat.id)

            done = _save_item(case, form, uploads, work, 5 if going_on else 4,
                              _("The online threat was added."))
            if done:
                return done
    return _render_step(case, 4, form, evidence_of=_evidence_by(case, "online_threat_id"))


def _step_review(case: Case):
    form = SubmitForm()
    if form.validate_on_submit():
        if attempt(lambda: service.submit(db.session, _user(), case, immediate_danger=form.danger.data == "yes",
                                          consent=bool(form.consent.data)),
                   form=form, success=_("Your request was sent. Its reference is %(ref)s: keep it, it is "
                                        "how the team will recognise your case.", ref=case.reference)) is not REFUSED:
            return redirect(_followed_url(case))
    missing = [(label, n) for ok, label, n in (
        (case.name_ct is not None, _("who is at risk"), 1),
        (case.state_code is not None, _("the state"), 2),
        (bool(case.incidents), _("at least one incident"), 3),
    ) if not ok]
    return _render_step(case, 5, form, missing=missing,
                        incident_evidence=_evidence_by(case, "incident_id"),
                        threat_evidence=_evidence_by(case, "online_threat_id"))


STEP_VIEWS = {1: _step_who, 2: _step_work, 3: _step_incidents, 4: _step_threats, 5: _step_review}


def _evidence_by(case: Case, link: str) -> dict[str | None, list]:
    grouped: dict[str | None, list] = {}
    for evidence in case.evidence:
        grouped.setdefault(getattr(evidence, link), []).append(evidence)
    return grouped


@bp.route("/requests/<case_id>/items/<kind>/<item_id>/remove", methods=["POST"])
def remove_item(case_id: str, kind: str, item_id: str):
    case = _load(case_id)
    if case.status != "draft":
        if current_user.role == "journalist" and service.is_petitioner(_user(), case):
            flash(_("A request that was sent cannot be changed; write to the team instead."), "error")
            return redirect(_followed_url(case))
        abort(404)
    try:
        blob_ids = service.remove_draft_item(db.session, _user(), case, kind, item_id)
    except (NotFound, PermissionDenied):
        abort(404)
    db.session.commit()
    store = current_app.extensions["protect.blobs"]
    for blob_id in blob_ids:
        _delete_blob(store, blob_id)
    flash(_("Removed."), "success")
    back = request.form.get("step", type=int)
    back = back if back in STEPS else (4 if kind == "threat" else 3)
    return redirect(_step_url(case, min(back, case.intake_step)))


# -- following a sent case ----------------------------------------------------------

def _sent_case(case_id: str) -> Case:
    case = _load(case_id)
    if case.status == "draft":
        abort(redirect(_step_url(case)))
    return case


@bp.route("/requests/<case_id>")
def case(case_id: str):
    return _render_case(_sent_case(case_id))


def _incident_choices(case: Case):
    return [NONE] + [
        SelectChoice(i.id, f"{format_date(i.occurred_on, 'medium')} · {codes.INCIDENT_TYPES.get(i.kind, i.kind)}")
        for i in case.incidents]


def _render_case(case: Case, *, message_form=None, evidence_form=None, withdraw_form=None,
                 appeal_form=None):
    user = _user()
    thread = service.messages(db.session, case)
    new_ids = {m.id for m in thread if m.to_petitioner and m.read_at is None}
    evidence_form = evidence_form or EvidenceForm(formdata=None)
    evidence_form.incident.choices = _incident_choices(case)
    can_appeal = case.status == "not_admitted" or (case.status == "closed" and case.outcome_reason == "denied")
    page = render_template(
        "intake/case.html", case=case, codes=codes, statuses=codes.STATUSES, explained=codes.STATUS_EXPLAINED,
        next_step=NEXT_STEP.get(case.status), thread=thread, new_ids=new_ids,
        next_deadline=deadlines.next_deadline(db.session, case), stages=deadlines.STAGES,
        time_left=deadlines.time_left,
        incident_evidence=_evidence_by(case, "incident_id"),
        threat_evidence=_evidence_by(case, "online_threat_id"),
        message_form=message_form or MessageForm(formdata=None),
        evidence_form=evidence_form,
        withdraw_form=withdraw_form or WithdrawForm(formdata=None),
        appeal_form=appeal_form or AppealForm(formdata=None),
        can_withdraw=case.status in codes.OPEN_STATUSES, can_appeal=can_appeal)
    if new_ids:
        service.mark_messages_read(db.session, user, case)
        db.session.commit()
    return page


@bp.route("/requests/<case_id>/messages", methods=["POST"])
def message(case_id: str):
    case = _sent_case(case_id)
    form = MessageForm()
    if form.validate_on_submit():
        if attempt(lambda: service.send_message(db.session, _user(), case, form.body.data),
                   form=form, success=_("Your message was sent to the team.")) is not REFUSED:
            return redirect(url_for("intake.case", case_id=case.id) + "#messages")
    return _render_case(case, message_form=form)


@bp.route("/requests/<case_id>/evidence", methods=["POST"])
@accepts_uploads(recipients=_evidence_recipients)
def add_evidence(case_id: str):
    case = _sent_case(case_id)
    form = EvidenceForm()
    form.incident.choices = _incident_choices(case)
    if form.validate_on_submit():
        uploads = _files()
        if not uploads:
            form.form_errors.append(_("Choose at least one file to send."))
        else:
            try:
                for upload in uploads:
                    service.add_evidence(db.session, _user(), case, upload,
                                         incident_id=form.incident.data or None)
            except DomainError as exc:
                db.session.rollback()
                _discard(uploads)
                form.form_errors.append(exc.message)
            else:
                db.session.commit()
                flash(ngettext("%(num)d file was added to your case.",
                               "%(num)d files were added to your case.", len(uploads)), "success")
                return redirect(url_for("intake.case", case_id=case.id) + "#evidence")
    return _render_case(case, evidence_form=form)


@bp.route("/requests/<case_id>/withdraw", methods=["POST"])
def withdraw(case_id: str):
    case = _sent_case(case_id)
    form = WithdrawForm()
    if form.validate_on_submit():
        if not form.confirm.data:
            form.form_errors.append(_("Tick the box to confirm that you want to withdraw your request."))
        else:
            if attempt(lambda: service.withdraw(db.session, _user(), case, version=_version(form)),
                       form=form, success=_("Your request was withdrawn.")) is not REFUSED:
                return redirect(url_for("intake.case", case_id=case.id))
    return _render_case(case, withdraw_form=form)


@bp.route("/requests/<case_id>/appeal", methods=["POST"])
def appeal(case_id: str):
    case = _sent_case(case_id)
    form = AppealForm()
    if form.validate_on_submit():
        if attempt(lambda: service.file_appeal(db.session, _user(), case, grounds=form.grounds.data,
                                               version=_version(form)),
                   form=form, success=_("Your appeal was filed. An independent study of your case will "
                                        "be made.")) is not REFUSED:
            return redirect(url_for("intake.case", case_id=case.id))
    return _render_case(case, appeal_form=form)


@bp.route("/requests/<case_id>/evidence/<evidence_id>")
def evidence(case_id: str, evidence_id: str):
    case = _load(case_id)
    try:
        item = service.evidence_download(db.session, _user(), case, evidence_id)
    except NotFound:
        abort(404)
    return decrypted_attachment(item.blob_id, [serverkeys.identity(db.session, "evidence")],
                                item.filename or "file", item.size, before_first_byte=db.session.commit)
