"""Forms of the journalist's side: the five steps of a request, and following a case.

The forms parse; the rules (what is required, how long, which codes) live in
``cases.service``, so refusals read the same from the web, the CLI and tests.
Choices are not re-checked here (``validate_choice=False``): the service says
which field is wrong, in words.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    MultipleFileField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Optional

from . import codes
from .service import MAX_SHORT, MAX_TEXT

CHOOSE = SelectChoice("", _l("Choose…"))
NONE = SelectChoice("", "—")


def _choices(mapping, *, blank=CHOOSE):
    return ([blank] if blank else []) + [SelectChoice(code, label) for code, label in mapping.items()]


class WhoForm(FlaskForm):
    name = StringField(_l("Name or pseudonym"), render_kw={"maxlength": MAX_SHORT, "autocomplete": "off"})
    pseudonymous = BooleanField(_l("I use a pseudonym"))
    real_identity = StringField(_l("Real name (only if you use a pseudonym)"),
                                render_kw={"maxlength": MAX_SHORT, "autocomplete": "off"})
    contact = StringField(_l("How can we reach you safely? (phone, Signal, e-mail)"),
                          render_kw={"maxlength": MAX_SHORT, "autocomplete": "off"})
    beneficiary_type = RadioField(_l("Who is at risk"), choices=_choices(codes.BENEFICIARY_TYPES, blank=None),
                                  validate_choice=False, default="journalist")
    gender = SelectField(_l("Gender (optional)"), choices=_choices(codes.GENDERS, blank=NONE),
                         validate_choice=False)
    others_at_risk = TextAreaField(_l("Relatives or colleagues also at risk (optional)"),
                                   render_kw={"maxlength": MAX_TEXT, "rows": 3})


class WorkForm(FlaskForm):
    outlet = StringField(_l("Outlet or organisation (optional)"),
                         render_kw={"maxlength": MAX_SHORT, "autocomplete": "off"})
    journalism_kind = SelectField(_l("Kind of work (optional)"),
                                  choices=_choices(codes.JOURNALISM_KINDS, blank=NONE),
                                  validate_choice=False)
    state_code = SelectField(_l("State"), choices=_choices(codes.STATES), validate_choice=False)
    municipality = StringField(_l("Municipality (optional)"),
                               render_kw={"maxlength": MAX_SHORT, "autocomplete": "off"})


class IncidentForm(FlaskForm):
    occurred_on = DateField(_l("Date"), validators=[Optional()], render_kw={"min": "1990-01-01"})
    kind = SelectField(_l("What happened"), choices=_choices(codes.INCIDENT_TYPES), validate_choice=False)
    aggressor = SelectField(_l("Who did it"), choices=_choices(codes.AGGRESSOR_TYPES), validate_choice=False)
    channel = SelectField(_l("How"), choices=_choices(codes.CHANNELS), validate_choice=False)
    place = StringField(_l("Place (optional)"), render_kw={"maxlength": MAX_SHORT, "autocomplete": "off"})
    narrative = TextAreaField(_l("What happened, in your words"), render_kw={"maxlength": MAX_TEXT, "rows": 6})
    files = MultipleFileField(_l("Photos, recordings or documents (optional)"))

    def is_blank(self) -> bool:
        return not any((self.occurred_on.raw_data and self.occurred_on.raw_data[0],
                        self.kind.data, self.aggressor.data, self.channel.data,
                        (self.place.data or "").strip(), (self.narrative.data or "").strip()))


class ThreatForm(FlaskForm):
    platform = SelectField(_l("Platform"), choices=_choices(codes.PLATFORMS), validate_choice=False)
    locator = StringField(_l("Link to the post, or the account's name"),
                          render_kw={"maxlength": 2000, "autocomplete": "off"})
    files = MultipleFileField(_l("Screenshots (optional)"))

    def is_blank(self) -> bool:
        return not (self.platform.data or (self.locator.data or "").strip())


class SubmitForm(FlaskForm):
    danger = RadioField(
        _l("Is your life or physical integrity, or that of your family, in danger right now?"),
        choices=[SelectChoice("yes", _l("Yes")), SelectChoice("no", _l("No"))], validate_choice=False,
        validators=[InputRequired(message=_l("Please answer whether you are in danger right now."))])
    consent = BooleanField(_l("I agree that the protection team uses what I wrote here, and the files I sent, "
                              "to assess my risk and protect me. It is kept encrypted and shared only "
                              "with the people and authorities who must act to protect me."))


class MessageForm(FlaskForm):
    body = TextAreaField(_l("Your message"), render_kw={"maxlength": 5000, "rows": 4})


class EvidenceForm(FlaskForm):
    incident = SelectField(_l("About which incident? (optional)"), validate_choice=False,
                           choices=[NONE])
    files = MultipleFileField(_l("Files"))


class WithdrawForm(FlaskForm):
    confirm = BooleanField(_l("Yes, I want to withdraw my request. I understand the team will stop working on it."))
    version = HiddenField()


class AppealForm(FlaskForm):
    grounds = TextAreaField(_l("Why you disagree with the decision"), render_kw={"maxlength": MAX_TEXT, "rows": 5})
    version = HiddenField()
