from __future__ import annotations

import hashlib
import time

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..audit import service as audit
from ..errors import DomainError, NotFound
from ..extensions import db, limiter
from ..main import safe_local_path
from ..reports import service as reports
from ..security import sessions, totp
from ..security.access import home_endpoint
from ..security.passwords import MIN_LENGTH
from ..web import REFUSED, attempt
from . import service
from .forms import ROLE_LABELS, CodeForm, ConfirmPasswordForm, EditUserForm, LoginForm, NewUserForm, PasswordChangeForm
from .models import ROLES, User

bp = Blueprint("accounts", __name__)

# Between the password and the second factor, at most this long.
PENDING_SECONDS = 300
FAILED = 401


def _settings():
    return current_app.extensions["protect.settings"]


def _account_key() -> str:
    # Hashed, so limiter storage (maybe Redis) holds no e-mail address.
    email = request.form.get("email", "").strip().lower()
    return "acct:" + hashlib.sha256((_settings().secret_key + email).encode()).hexdigest()


def _pending_key() -> str:
    return "pending:" + str(session.get("pending", {}).get("uid"))


def _failed(response) -> bool:
    return response.status_code == FAILED


def _pending_user() -> User | None:
    pending = session.get("pending")
    if not pending or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        session.pop("pending", None)
        return None
    user = db.session.get(User, pending.get("uid"))
    return user if user is not None and user.active else None


def _finish_login(user: User, method: str):
    target = safe_local_path(session.get("pending", {}).get("next"))
    service.complete_login(db.session, user, method)
    sessions.start(user)
    db.session.commit()
    return redirect(target or url_for(home_endpoint(user)))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: _settings().login_limit_per_account, key_func=_account_key,
               methods=["POST"], deduct_when=_failed)
@limiter.limit(lambda: _settings().login_limit_per_address, methods=["POST"], deduct_when=_failed)
def login():
    if current_user.is_authenticated:
        return redirect(url_for(home_endpoint(current_user)))
    form = LoginForm()
    if session.pop("expired", None):
        flash(_("Your session ended after a period of inactivity. Please sign in again."), "info")
    if form.validate_on_submit():
        user = service.authenticate(db.session, form.email.data, form.password.data)
        if user is None:
            form.form_errors.append(_("The e-mail address or password is not right."))
            return render_template("accounts/login.html", form=form), FAILED
        db.session.commit()  # a rehashed password
        next_path = safe_local_path(request.args.get("next"))
        if user.totp_enabled or user.needs_totp:
            session.clear()
            session["pending"] = {"uid": user.id, "at": time.time(), "next": next_path}
            return redirect(url_for(".second_factor" if user.totp_enabled else ".enrol_totp"))
        session["pending"] = {"next": next_path}
        return _finish_login(user, "password")
    status = 400 if request.method == "POST" else 200
    return render_template("accounts/login.html", form=form), status


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit("5 per minute", key_func=_pending_key, methods=["POST"], deduct_when=_failed)
def second_factor():
    user = _pending_user()
    if user is None or not user.totp_enabled:
        return redirect(url_for(".login"))
    form = CodeForm()
    if form.validate_on_submit():
        method = service.check_second_factor(db.session, user, form.code.data)
        if method:
            return _finish_login(user, method)
        form.code.errors.append(_("That code is not right, or was already used."))
        return render_template("accounts/second_factor.html", form=form), FAILED
    return render_template("accounts/second_factor.html", form=form)


@bp.route("/account/two-step", methods=["GET", "POST"])
def enrol_totp():
    """Enrolment: forced for staff between password and first login, optional
    for journalists and donors from their security page."""
    pending = _pending_user() if not current_user.is_authenticated else None
    user = current_user if current_user.is_authenticated else pending
    if user is None:
        return redirect(url_for(".login"))
    if pending is not None and pending.totp_enabled:
        return redirect(url_for(".second_factor"))
    form = CodeForm()
    secret = service.start_totp_enrolment(db.session, user)
    if form.validate_on_submit():
        try:
            codes = service.confirm_totp_enrolment(db.session, user, form.code.data)
        except DomainError as exc:
            form.code.errors.append(exc.message)
        else:
            if pending is not None:
                _finish_login(user, "totp-enrolment")
            else:
                db.session.commit()
            return render_template("accounts/recovery_codes.html", codes=codes)
    uri = totp.provisioning_uri(secret, f"{ROLE_LABELS[user.role]}")
    return render_template("accounts/enrol_totp.html", form=form, secret=secret,
                           qr=totp.qr_svg(uri), forced=pending is not None)


@bp.route("/logout", methods=["POST"])
def logout():
    service.record_logout(db.session, current_user._get_current_object())
    sessions.end()
    db.session.commit()
    flash(_("You have signed out."), "info")
    return redirect(url_for(".login"))


@bp.route("/account")
def security():
    return render_template(
        "accounts/security.html",
        codes_left=service.recovery_codes_left(db.session, current_user),
        disable_form=ConfirmPasswordForm(), codes_form=ConfirmPasswordForm())


@bp.route("/account/password", methods=["GET", "POST"])
def change_password():
    form = PasswordChangeForm()
    if form.validate_on_submit():
        def change():
            service.change_password(db.session, current_user, form.current.data,
                                    form.new.data, form.confirm.data)
            sessions.end_other_sessions(current_user)

        if attempt(change, form=form, success=_(
                "Your password was changed. Every other session of yours has been ended.")) is not REFUSED:
            return redirect(url_for(".security"))
    return render_template("accounts/change_password.html", form=form, min_length=MIN_LENGTH)


@bp.route("/account/recovery-codes", methods=["POST"])
def new_recovery_codes():
    form = ConfirmPasswordForm()
    if form.validate_on_submit():
        codes = attempt(lambda: service.new_recovery_codes(db.session, current_user, form.password.data))
        if codes is not REFUSED:
            return render_template("accounts/recovery_codes.html", codes=codes)
    return redirect(url_for(".security"))


@bp.route("/account/two-step/off", methods=["POST"])
def disable_totp():
    form = ConfirmPasswordForm()
    if form.validate_on_submit():
        attempt(lambda: service.disable_totp(db.session, current_user, form.password.data),
                success=_("Two-step verification is off."))
    return redirect(url_for(".security"))


def _page() -> int:
    return max(1, min(request.args.get("page", 1, type=int) or 1, 100000))


@bp.route("/admin/users")
def users():
    role = request.args.get("role") if request.args.get("role") in ROLES else None
    page = _page()
    rows, total = service.list_users(db.session, role=role, page=page)
    audit.record(db.session, "users.listed", actor=current_user, page=page, role=role)  # e-mail addresses shown
    db.session.commit()
    return render_template("accounts/users.html", users=rows, total=total, page=page,
                           role=role, roles=ROLE_LABELS)


@bp.route("/admin/users/new", methods=["GET", "POST"])
def new_user():
    form = NewUserForm()
    if form.validate_on_submit():
        def create():
            made = service.create_user(db.session, current_user, email=form.email.data, role=form.role.data,
                                       password=form.password.data, name=form.name.data)
            reports.set_scope(db.session, current_user, made[0], states=form.scope_states.data,
                              beneficiaries=form.scope_beneficiaries.data)
            return made

        created = attempt(create, form=form, success=_(
            "Account created. Caseworkers, supervisors and administrators set up two-step "
            "verification at their first sign-in."))
        if created is not REFUSED:
            return redirect(url_for(".edit_user", user_id=created[0].id))
    return render_template("accounts/new_user.html", form=form)


@bp.route("/admin/users/<user_id>", methods=["GET", "POST"])
def edit_user(user_id: str):
    try:
        user = service.get_user(db.session, user_id)
    except NotFound:
        abort(404)
    if request.method == "GET":
        audit.record(db.session, "user.viewed", actor=current_user, target=user.id)
        db.session.commit()
    form = EditUserForm(obj=user)
    if request.method == "GET":
        scope = user.report_scope or {}
        form.scope_states.data, form.scope_beneficiaries.data = scope.get("states"), scope.get("beneficiaries")
    if form.validate_on_submit():
        def save():
            service.update_user(db.session, current_user, user, role=form.role.data, active=form.active.data)
            reports.set_scope(db.session, current_user, user, states=form.scope_states.data,
                              beneficiaries=form.scope_beneficiaries.data)

        if attempt(save, form=form, success=_("Account updated.")) is not REFUSED:
            return redirect(url_for(".edit_user", user_id=user.id))
    return render_template("accounts/edit_user.html", form=form, user=user, roles=ROLE_LABELS)
