from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectChoice, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..cases.codes import BENEFICIARY_TYPES, STATES
from .models import ROLES

ROLE_LABELS = {
    "journalist": _l("Journalist or defender"),
    "caseworker": _l("Caseworker"),
    "supervisor": _l("Supervisor"),
    "donor": _l("Donor"),
    "admin": _l("Administrator"),
}


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])


class CodeForm(FlaskForm):
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=32)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})


class PasswordChangeForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=256)],
                            render_kw={"autocomplete": "current-password"})
    new = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=256)],
                        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("New password, again"), validators=[DataRequired(), Length(max=256)],
                            render_kw={"autocomplete": "new-password"})


class ConfirmPasswordForm(FlaskForm):
    password = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=256)],
                             render_kw={"autocomplete": "current-password"})


class ReportScopeFields:
    """A donor's report scope: the states and kinds of beneficiary it sees (none ticked: all)."""

    scope_states = SelectMultipleField(_l("States"), choices=[SelectChoice(k, v) for k, v in STATES.items()],
                                       validate_choice=False, widget=ListWidget(prefix_label=False),
                                       option_widget=CheckboxInput())
    scope_beneficiaries = SelectMultipleField(_l("Kinds of beneficiary"), validate_choice=False,
                                              choices=[SelectChoice(k, v) for k, v in BENEFICIARY_TYPES.items()],
                                              widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())


class NewUserForm(ReportScopeFields, FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    name = StringField(_l("Name (optional)"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"), choices=[SelectChoice(r, ROLE_LABELS[r]) for r in ROLES])
    password = PasswordField(_l("Initial password"), validators=[DataRequired(), Length(max=256)],
                             render_kw={"autocomplete": "new-password"})


class EditUserForm(ReportScopeFields, FlaskForm):
    role = SelectField(_l("Role"), choices=[SelectChoice(r, ROLE_LABELS[r]) for r in ROLES])
    active = BooleanField(_l("Account enabled"))
