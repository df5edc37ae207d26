"""The journalist's vault pages: vaults, deposits, settings, PINs, recipients,
co-depositors, and the one-tap check-in.

Thin views: parse the form, call ``service``, commit (``protect.web.attempt``)
and redirect, or show the page again with the refusal. Only the owner gets a
vault's pages (anyone else: 404); a co-depositor gets only the page to add a
deposit. What the owner is shown of the state comes from ``service.owner_view``
alone, so a concealed release (duress, incident) never shows; the duress PIN
gets exactly the response the PIN gets.
"""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.exceptions import BadRequest

from ..accounts.models import User
from ..crypto.uploads import accepts_uploads, uploaded
from ..deadlines.forms import EmptyForm
from ..errors import DomainError, NotFound
from ..extensions import db
from ..localtime import moment
from ..web import REFUSED, attempt
from . import forms, service
from .models import Vault

bp = Blueprint("vault", __name__, url_prefix="/vault")

# Investigations can be large (video, leaked archives); the bound only keeps one
# request from filling the store (a full store is refused cleanly anyway).
MAX_DEPOSIT_BYTES = 64 * 1024**3

STATE_EXPLAINED = {
    "draft": _l("Not armed yet: nothing happens until you arm it. Set your PINs, add a recipient, then arm it."),
    "armed": _l("Check in with your PIN before the date below. If you do not, your recipients get what is "
                "inside once the grace period ends."),
    "reminded": _l("Your check-in is due soon. Check in now."),
    "grace": _l("You missed your check-in. Check in now: when the grace period ends, the vault goes to your "
                "recipients (or, if you chose so, your caseworker first checks on you)."),
    "welfare_hold": _l("You missed your check-in and the grace period. Your caseworker is checking on you; "
                       "check in now to stop the release."),
    "pending_release": _l("The vault is being released to its recipients."),
    "released": _l("The vault was released to its recipients."),
    "paused": _l("Paused: no check-in is due until the pause ends. Then the vault re-arms itself."),
    "disarmed": _l("Disarmed: nothing will be released. Arm it again with your PIN."),
}
REQUESTED = _l("Someone asked for this vault to be released. Refuse with your PIN before the time below, "
               "or it goes to your recipients.")

EVENT_LABELS = {
    "created": _l("Vault created"),
    "settings_changed": _l("Schedule and protections changed"),
    "pins_set": _l("PINs set"),
    "webhook_set": _l("Messaging bridge set"),
    "webhook_removed": _l("Messaging bridge removed"),
    "recipient_added": _l("Recipient added"),
    "recipient_removed": _l("Recipient removed"),
    "codepositor_added": _l("Co-depositor invited"),
    "codepositor_removed": _l("Co-depositor removed"),
    "deposit_added": _l("Deposit added"),
    "deposit_deletion_scheduled": _l("Deposit deletion scheduled"),
    "deposit_deleted": _l("Deposit deleted"),
    "deletion_scheduled": _l("Vault deletion scheduled"),
    "deletion_cancelled": _l("Deletion cancelled"),
    "armed": _l("Armed"),
    "checked_in": _l("Checked in"),
    "reminded": _l("Reminder sent"),
    "paused": _l("Paused"),
    "resumed": _l("Pause ended: armed again"),
    "disarmed": _l("Disarmed"),
    "grace": _l("Check-in missed: grace period started"),
    "welfare_hold": _l("Held for a welfare check"),
    "welfare_confirmed": _l("Welfare check confirmed: armed again"),
    "release_started": _l("Release started"),
    "release_refused": _l("Release request refused"),
    "released": _l("Released"),
}


# -- helpers -------------------------------------------------------------------

def _user():
    return current_user._get_current_object()


def _own(vault_id: str) -> Vault:
    """The vault if the signed-in journalist owns it; otherwise 404, whatever the reason."""
    try:
        return service.get_vault(db.session, _user(), vault_id)
    except NotFound:
        abort(404)


def _for_deposit(vault_id: str) -> Vault:
    """The vault for its owner or a co-depositor (who may only add)."""
    try:
        return service.get_vault_for_deposit(db.session, _user(), vault_id)
    except NotFound:
        abort(404)


def _found(lookup):
    try:
        return lookup()
    except NotFound:
        abort(404)


def _vault_url(vault: Vault, anchor: str = "") -> str:
    return url_for("vault.vault", vault_id=vault.id) + anchor


def _pin_attempt(form, action):
    """``attempt`` for a PIN action: (outcome or REFUSED, status). A refusal (a
    wrong PIN among them) is the form again with the message, 422; while PIN
    entry is throttled, 429."""
    status = 422

    def run():
        nonlocal status
        try:
            return action()
        except service.PinThrottled:
            status = 429
            raise
    return attempt(run, form=form), status


def _outcome_message(outcome: service.PinOutcome) -> str:
    if outcome.state == "paused":
        return _("Paused until %(until)s. Your next check-in is due by %(due)s.",
                 until=moment(outcome.paused_until), due=moment(outcome.next_due_at))
    if outcome.state == "disarmed":
        return _("The vault is disarmed. Nothing will be released until you arm it again.")
    if outcome.action == "release_refused":
        return _("You refused the release. Your next check-in is due by %(due)s.", due=moment(outcome.next_due_at))
    if outcome.action == "armed":
        return _("The vault is armed. Your first check-in is due by %(due)s.", due=moment(outcome.next_due_at))
    return _("Checked in. Your next check-in is due by %(due)s.", due=moment(outcome.next_due_at))


def _page_context(vault: Vault) -> dict:
    view = service.owner_view(vault)
    explained = (REQUESTED if view.state == "pending_release" and view.release_after is not None
                 else STATE_EXPLAINED[view.state])
    return {"vault": vault, "view": view, "states": service.SHOWN_STATES, "explained": explained}


# -- my vaults -------------------------------------------------------------------

@bp.route("/")
def index():
    user = _user()
    mine = [(vault, service.owner_view(vault)) for vault in service.list_vaults(db.session, user)]
    shared = [(vault, db.session.get(User, vault.owner_id))
              for vault in service.codeposit_vaults(db.session, user)]
    return render_template("vault/index.html", vaults=mine, shared=shared, states=service.SHOWN_STATES)


@bp.route("/new", methods=["GET", "POST"])
def new():
    form = forms.NewVaultForm()
    if form.validate_on_submit():
        vault = attempt(lambda: service.create_vault(db.session, _user(), form.title.data,
                                                     recipients_only=form.recipients_only.data),
                        form=form, success=_("Your vault was created. Next: set its PINs and add a recipient."))
        if vault is not REFUSED:
            return redirect(_vault_url(vault))
    return render_template("vault/new.html", form=form), 422 if request.method == "POST" else 200


# -- one vault --------------------------------------------------------------------

def _render_vault(vault: Vault, status: int = 200, **given):
    page_forms = {"file_form": forms.FileForm(formdata=None), "note_form": forms.NoteForm(formdata=None),
                  "arm_form": forms.PinForm(formdata=None, prefix="arm"),
                  "pause_form": forms.PauseForm(formdata=None, prefix="pause"),
                  "disarm_form": forms.PinForm(formdata=None, prefix="disarm"),
                  "delete_form": forms.DeleteVaultForm(formdata=None), **given}
    context = _page_context(vault)
    return render_template("vault/vault.html", deposits=service.deposits(db.session, _user(), vault),
                           can_deposit=_can_deposit(vault, context["view"]), **context, **page_forms), status


def _can_deposit(vault: Vault, view: service.OwnerView) -> bool:
    """Whether the deposit forms make sense (the service has the last word)."""
    return view.state != "released" and (not vault.recipients_only or any(r.age_recipient for r in vault.recipients))


@bp.route("/<vault_id>")
def vault(vault_id: str):
    return _render_vault(_own(vault_id))


@bp.route("/<vault_id>/add")
def add(vault_id: str):
    """The page to add a deposit: all a co-depositor gets of someone else's vault."""
    vault = _for_deposit(vault_id)
    if service.is_owner(_user(), vault):
        return redirect(_vault_url(vault, "#deposit"))
    return _render_add(vault)


def _render_add(vault: Vault, status: int = 200, **given):
    page_forms = {"file_form": forms.FileForm(formdata=None), "note_form": forms.NoteForm(formdata=None), **given}
    return render_template("vault/add.html", vault=vault, can_deposit=_can_deposit(vault, service.owner_view(vault)),
                           **page_forms), status


def _deposited(vault: Vault):
    """Back where the person added from: the owner's vault page, or the co-depositor's."""
    if service.is_owner(_user(), vault):
        return redirect(_vault_url(vault, "#deposits"))
    return redirect(url_for("vault.add", vault_id=vault.id))


def _deposit_refused(vault: Vault, form_name: str, form):
    render = _render_vault if service.is_owner(_user(), vault) else _render_add
    return render(vault, 422, **{form_name: form})


def _upload_recipients() -> list[str]:
    """Who an arriving file is encrypted to: asked while the body is parsed."""
    vault_id = (request.view_args or {}).get("vault_id")
    if not isinstance(vault_id, str):  # (only routes with a vault take uploads)
        abort(404)
    vault = _for_deposit(vault_id)
    try:
        return service.deposit_recipients(vault)
    except DomainError:
        raise BadRequest() from None  # the page offers no upload to such a vault


@bp.route("/<vault_id>/files", methods=["POST"])
@accepts_uploads(recipients=_upload_recipients, max_bytes=lambda: MAX_DEPOSIT_BYTES)
def add_file(vault_id: str):
    vault = _for_deposit(vault_id)
    form = forms.FileForm()
    if form.validate_on_submit():
        upload = uploaded("file")
        if upload is None or not upload.size:
            form.file.errors = [_("Choose a file to deposit (an empty file is not kept).")]
        elif attempt(lambda: service.add_file_deposit(db.session, _user(), vault, upload), form=form,
                     success=_("The file was encrypted and deposited.")) is not REFUSED:
            return _deposited(vault)
    return _deposit_refused(vault, "file_form", form)


@bp.route("/<vault_id>/notes", methods=["POST"])
def add_note(vault_id: str):
    vault = _for_deposit(vault_id)
    form = forms.NoteForm()
    if form.validate_on_submit():
        if attempt(lambda: service.add_note(db.session, _user(), vault, form.text.data), form=form,
                   success=_("The note was encrypted and deposited.")) is not REFUSED:
            return _deposited(vault)
    return _deposit_refused(vault, "note_form", form)


@bp.route("/<vault_id>/deposits/<deposit_id>/delete", methods=["POST"])
def delete_deposit(vault_id: str, deposit_id: str):
    vault = _own(vault_id)
    deposit = _found(lambda: service.deposit_of(db.session, vault, deposit_id))
    if EmptyForm().validate_on_submit():
        done = attempt(lambda: service.delete_deposit(db.session, _user(), vault, deposit))
        if done == "deleted":
            flash(_("The deposit was deleted: its key and its encrypted file are gone."), "success")
        elif done == "scheduled":
            flash(_("The deposit will be deleted on %(when)s. Until then you can cancel.",
                    when=moment(deposit.delete_after)), "success")
    return redirect(_vault_url(vault, "#deposits"))


@bp.route("/<vault_id>/deposits/<deposit_id>/cancel-deletion", methods=["POST"])
def cancel_deposit_deletion(vault_id: str, deposit_id: str):
    vault = _own(vault_id)
    deposit = _found(lambda: service.deposit_of(db.session, vault, deposit_id))
    if EmptyForm().validate_on_submit():
        attempt(lambda: service.cancel_deletion(db.session, _user(), vault, deposit),
                success=_("The deletion was cancelled."))
    return redirect(_vault_url(vault, "#deposits"))


# -- PIN actions ---------------------------------------------------------------------

def _vault_pin_action(vault_id: str, form_name: str, form, act):
    """Arm, pause or disarm from the vault page: the same answer for either PIN."""
    vault = _own(vault_id)
    if form.validate_on_submit():
        outcome, status = _pin_attempt(form, lambda: act(vault, form))
        if outcome is not REFUSED:
            flash(_outcome_message(outcome), "success")
            return redirect(_vault_url(vault))
        return _render_vault(vault, status, **{form_name: form})
    return _render_vault(vault, 422, **{form_name: form})


@bp.route("/<vault_id>/arm", methods=["POST"])
def arm(vault_id: str):
    return _vault_pin_action(vault_id, "arm_form", forms.PinForm(prefix="arm"),
                             lambda vault, form: service.arm(db.session, vault, form.pin.data, actor=_user()))


@bp.route("/<vault_id>/pause", methods=["POST"])
def pause(vault_id: str):
    return _vault_pin_action(vault_id, "pause_form", forms.PauseForm(prefix="pause"),
                             lambda vault, form: service.pause(db.session, vault, form.pin.data, form.until_utc(),
                                                               actor=_user()))


@bp.route("/<vault_id>/disarm", methods=["POST"])
def disarm(vault_id: str):
    return _vault_pin_action(vault_id, "disarm_form", forms.PinForm(prefix="disarm"),
                             lambda vault, form: service.disarm(db.session, vault, form.pin.data, actor=_user()))


def _one_tap(vault_id: str, template: str, act):
    """The check-in and refuse-release pages: a PIN and a button. A GET changes
    nothing (mail scanners open links); the answer to a POST is the same page,
    rendered from what the owner may see, so the duress PIN's is identical."""
    vault = _own(vault_id)
    form = forms.PinForm()
    outcome, status = None, 200
    if form.validate_on_submit():
        outcome, status = _pin_attempt(form, lambda: act(vault, form.pin.data))
        if outcome is REFUSED:
            outcome = None
        else:
            form, status = forms.PinForm(formdata=None), 200
    elif request.method == "POST":
        status = 422
    return render_template(template, form=form, done=_outcome_message(outcome) if outcome else None,
                           **_page_context(vault)), status


@bp.route("/<vault_id>/check-in", methods=["GET", "POST"])
def check_in(vault_id: str):
    return _one_tap(vault_id, "vault/check_in.html",
                    lambda vault, pin: service.check_in(db.session, vault, pin, actor=_user()))


@bp.route("/<vault_id>/refuse-release", methods=["GET", "POST"])
def refuse_release(vault_id: str):
    return _one_tap(vault_id, "vault/refuse_release.html",
                    lambda vault, pin: service.refuse_release(db.session, vault, pin, actor=_user()))


# -- settings, PINs ------------------------------------------------------------------------

def _render_settings(vault: Vault, status: int = 200, **given):
    page_forms = {"rename_form": forms.RenameForm(formdata=None, data={"title": vault.title}),
                  "settings_form": forms.SettingsForm.of(service.Schedule.of(vault)),
                  "webhook_form": forms.WebhookForm(formdata=None, data={"webhook_url": vault.webhook_url}),
                  **given}
    return render_template("vault/settings.html", **_page_context(vault), **page_forms), status


def _saved(form, change, success: str, page: str, vault: Vault, render):
    """A page's form: saved and back to ``page``, or ``render(form)`` again with its errors (422)."""
    if form.validate_on_submit():
        if attempt(lambda: change(form), form=form, success=success) is not REFUSED:
            return redirect(url_for(page, vault_id=vault.id))
    return render(form)


def _settings_change(vault: Vault, form_name: str, form, change, success: str):
    """One of the settings page's three forms."""
    return _saved(form, change, success, "vault.settings", vault,
                  lambda form: _render_settings(vault, 422, **{form_name: form}))


@bp.route("/<vault_id>/settings", methods=["GET", "POST"])
def settings(vault_id: str):
    vault = _own(vault_id)
    if request.method == "GET":
        return _render_settings(vault)
    return _settings_change(
        vault, "settings_form", forms.SettingsForm(),
        lambda form: service.update_settings(db.session, _user(), vault, form.schedule(service.Schedule.of(vault))),
        _("The schedule and protections were saved."))


@bp.route("/<vault_id>/rename", methods=["POST"])
def rename(vault_id: str):
    vault = _own(vault_id)
    return _settings_change(vault, "rename_form", forms.RenameForm(),
                            lambda form: service.rename(db.session, _user(), vault, form.title.data),
                            _("The vault was renamed."))


@bp.route("/<vault_id>/webhook", methods=["POST"])
def webhook(vault_id: str):
    vault = _own(vault_id)
    return _settings_change(vault, "webhook_form", forms.WebhookForm(),
                            lambda form: service.set_webhook(db.session, _user(), vault, form.webhook_url.data),
                            _("The messaging bridge was saved."))


def _render_pins(vault: Vault, status: int = 200, **given):
    page_forms = {"pins_form": forms.PinsForm(formdata=None),
                  "duress_form": forms.DuressActionForm(formdata=None, data={"duress_action": vault.duress_action}),
                  **given}
    return render_template("vault/pins.html", has_pins=vault.pin_hash is not None, **_page_context(vault),
                           **page_forms), status


@bp.route("/<vault_id>/pins", methods=["GET", "POST"])
def pins(vault_id: str):
    vault = _own(vault_id)
    if request.method == "GET":
        return _render_pins(vault)
    form = forms.PinsForm()
    status = 422
    if form.validate_on_submit():
        result, status = _pin_attempt(form, lambda: service.set_pins(
            db.session, _user(), vault, pin=form.pin.data, duress_pin=form.duress_pin.data,
            current_pin=form.current_pin.data))
        if result is not REFUSED:
            flash(_("Your PINs were saved. Keep them in your head, not on your phone."), "success")
            return redirect(url_for("vault.pins", vault_id=vault.id))
    return _render_pins(vault, status, pins_form=form)


@bp.route("/<vault_id>/duress-action", methods=["POST"])
def duress_action(vault_id: str):
    vault = _own(vault_id)

    def change(form):
        schedule = service.Schedule.of(vault)
        schedule.duress_action = form.duress_action.data
        service.update_settings(db.session, _user(), vault, schedule)

    return _saved(forms.DuressActionForm(), change, _("Saved."), "vault.pins", vault,
                  lambda form: _render_pins(vault, 422, duress_form=form))


# -- recipients, co-depositors ----------------------------------------------------------

def _render_recipients(vault: Vault, status: int = 200, form=None):
    return render_template("vault/recipients.html", form=form or forms.RecipientForm(formdata=None),
                           remove_form=EmptyForm(formdata=None), **_page_context(vault)), status


@bp.route("/<vault_id>/recipients", methods=["GET", "POST"])
def recipients(vault_id: str):
    vault = _own(vault_id)
    if request.method == "GET":
        return _render_recipients(vault)
    return _saved(forms.RecipientForm(), lambda form: service.add_recipient(
        db.session, _user(), vault, name=form.name.data, email=form.email.data,
        age_recipient=form.age_recipient.data, access_code=form.access_code.data, language=form.language.data),
        _("The recipient was added."), "vault.recipients", vault, lambda form: _render_recipients(vault, 422, form))


@bp.route("/<vault_id>/recipients/<recipient_id>/remove", methods=["POST"])
def remove_recipient(vault_id: str, recipient_id: str):
    vault = _own(vault_id)
    recipient = _found(lambda: service.recipient_of(vault, recipient_id))
    if EmptyForm().validate_on_submit():
        attempt(lambda: service.remove_recipient(db.session, _user(), vault, recipient),
                success=_("The recipient was removed."))
    return redirect(url_for("vault.recipients", vault_id=vault.id))


def _render_codepositors(vault: Vault, status: int = 200, form=None):
    return render_template("vault/codepositors.html", form=form or forms.CodepositorForm(formdata=None),
                           people=service.codepositors(db.session, _user(), vault),
                           remove_form=EmptyForm(formdata=None), **_page_context(vault)), status


@bp.route("/<vault_id>/codepositors", methods=["GET", "POST"])
def codepositors(vault_id: str):
    vault = _own(vault_id)
    if request.method == "GET":
        return _render_codepositors(vault)
    # The same words whether or not the address names an account.
    return _saved(forms.CodepositorForm(),
                  lambda form: service.invite_codepositor(db.session, _user(), vault, form.email.data),
                  _("If that address belongs to a journalist's account here, they can now add "
                    "deposits to this vault (never read them)."),
                  "vault.codepositors", vault, lambda form: _render_codepositors(vault, 422, form))


@bp.route("/<vault_id>/codepositors/<user_id>/remove", methods=["POST"])
def remove_codepositor(vault_id: str, user_id: str):
    vault = _own(vault_id)
    if EmptyForm().validate_on_submit():
        attempt(lambda: service.remove_codepositor(db.session, _user(), vault, user_id),
                success=_("The co-depositor was removed."))
    return redirect(url_for("vault.codepositors", vault_id=vault.id))


# -- deleting, the timeline -----------------------------------------------------------------

@bp.route("/<vault_id>/delete", methods=["POST"])
def delete(vault_id: str):
    vault = _own(vault_id)
    form = forms.DeleteVaultForm()
    if form.validate_on_submit():
        if not form.confirm.data:
            form.form_errors.append(_("Tick the box to confirm that you want to delete this vault."))
        else:
            done = attempt(lambda: service.delete_vault(db.session, _user(), vault), form=form)
            if done == "deleted":
                flash(_("The vault was deleted. Its keys are destroyed: nothing in it can be recovered."),
                      "success")
                return redirect(url_for("vault.index"))
            if done == "scheduled":
                flash(_("The vault will be deleted on %(when)s. Until then you can cancel.",
                        when=moment(vault.delete_after)), "success")
                return redirect(_vault_url(vault))
    return _render_vault(vault, 422, delete_form=form)


@bp.route("/<vault_id>/cancel-deletion", methods=["POST"])
def cancel_deletion(vault_id: str):
    vault = _own(vault_id)
    if EmptyForm().validate_on_submit():
        attempt(lambda: service.cancel_deletion(db.session, _user(), vault), success=_("The deletion was cancelled."))
    return redirect(_vault_url(vault))


@bp.route("/<vault_id>/timeline")
def timeline(vault_id: str):
    vault = _own(vault_id)
    return render_template("vault/timeline.html", events=service.timeline(db.session, _user(), vault),
                           labels=EVENT_LABELS, **_page_context(vault))
