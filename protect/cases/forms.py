"""Forms of the staff side of a case.

Every POST is checked against CSRF app-wide by ``CSRFProtect``; the case
forms carry the plain ``csrf_token`` field (see templates/cases/_macros.html)
instead of a per-form one, so the many small forms on a case page, each with
its own prefix, share the one token.

Every form that changes a case carries the ``version`` of the case the person
was looking at: the service refuses it if the case changed meanwhile.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, Regexp

from ..localtime import MEXICO
from . import codes

LONG = 20_000
# datetime-local inputs are read and shown in the mechanism's time zone.
LOCAL_FORMAT = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


def _choices(mapping, *, blank=None) -> list[SelectChoice]:
    items = [SelectChoice(code, label) for code, label in mapping.items()]
    return ([SelectChoice("", blank)] if blank is not None else []) + items


class PlainForm(FlaskForm):
    class Meta:
        csrf = False  # CSRFProtect checks every POST of the app


class CaseForm(PlainForm):
    """A form that changes the case itself, so it says which version it was made on."""

    version = HiddenField(validators=[
        InputRequired(message=_l("This form is out of date: reload the page.")),
        Regexp(r"^\d{1,9}$", message=_l("This form is out of date: reload the page."))])

    @property
    def version_number(self) -> int | None:
        try:
            return int(self.version.data)
        except (TypeError, ValueError):
            return None


# -- the queue --------------------------------------------------------------

STAGE_GROUPS = {
    "open": _l("Open cases"),
    "queue": _l("New requests waiting for a caseworker"),
    "closed": _l("Closed cases"),
    "all": _l("All cases"),
}

SORTS = {
    "priority": _l("Immediate danger first, then oldest"),
    "oldest": _l("Oldest first"),
    "newest": _l("Newest first"),
    "updated": _l("Recently updated"),
}

DANGER_CHOICES = {"yes": _l("Only in immediate danger"), "no": _l("Only not in immediate danger")}


class QueueFilterForm(PlainForm):
    """The queue's filters: a GET form, so it works without JavaScript and links keep them."""

    stage = SelectField(_l("Stage"), choices=_choices(STAGE_GROUPS), default="open",
                        validate_choice=False)
    status = SelectField(_l("Status"), validate_choice=False,
                         choices=_choices({k: v for k, v in codes.STATUSES.items() if k != "draft"},
                                          blank=_l("Any status")))
    assignee = SelectField(_l("Assigned to"), choices=[], validate_choice=False)
    risk = SelectField(_l("Risk level"), choices=_choices(codes.RISK_LEVELS, blank=_l("Any level")),
                       validate_choice=False)
    danger = SelectField(_l("Immediate danger"), choices=_choices(DANGER_CHOICES, blank=_l("Any")),
                         validate_choice=False)
    reference = StringField(_l("Reference"), validators=[Optional(), Length(max=20)],
                            render_kw={"placeholder": "PRT-XXXX-XXXX", "autocomplete": "off",
                                       "spellcheck": "false"})
    sort = SelectField(_l("Sort"), choices=_choices(SORTS), default="priority", validate_choice=False)

    def value(self, name: str, allowed) -> str | None:
        """The submitted value of ``name`` if it is one of ``allowed``, else None."""
        data = self[name].data
        return data if data in allowed else None


# -- workflow steps (one per action of /cases/<id>/act/<action>) -------------

class TriageForm(CaseForm):
    decision = RadioField(_l("How is the request handled?"), choices=[
        SelectChoice("extraordinary", _l("Admit: extraordinary procedure (urgent measures within hours)")),
        SelectChoice("ordinary", _l("Admit: ordinary procedure (risk assessment)")),
        SelectChoice("not_admitted", _l("Not admitted")),
    ], validators=[InputRequired(message=_l("Choose how the request is handled."))])
    reason = SelectField(_l("Reason, if not admitted"), validate_choice=False,
                         choices=_choices(codes.NOT_ADMITTED_REASONS, blank=_l("Choose a reason")))


class MeasurePicker:
    """Mixin for forms choosing measures from the catalogue: one checkbox and
    one implementing-authority select per measure type (fields added by
    ``with_measures``)."""

    measure_codes: tuple[str, ...] = ()

    if TYPE_CHECKING:  # the form it is mixed into looks fields up by name
        def __getitem__(self, name: str) -> Any: ...

    def picked(self) -> list[tuple[str, str]]:
        return [(code, self[f"a_{code}"].data or "") for code in self.measure_codes
                if self[f"m_{code}"].data]

    def measure_rows(self):
        return [(self[f"m_{code}"], self[f"a_{code}"]) for code in self.measure_codes]


def with_measures(base: type[CaseForm], types, name_of) -> type[CaseForm]:
    """A subclass of ``base`` with a checkbox and an authority select per measure type."""
    fields = {"measure_codes": tuple(t.code for t in types)}
    for t in types:
        fields[f"m_{t.code}"] = BooleanField(name_of(t))
        fields[f"a_{t.code}"] = SelectField(
            _l("Implementing authority"), validate_choice=False,
            choices=_choices(codes.AUTHORITIES, blank=_l("Choose the authority")))
    form_meta: type = type(base)  # WTForms' FormMeta, which collects the new fields
    return form_meta(base.__name__, (MeasurePicker, base), fields)


class UrgentMeasuresForm(CaseForm):
    pass


class ConfirmForm(CaseForm):
    """A step with nothing to fill in but the button."""


class AssessmentForm(CaseForm):
    level = SelectField(_l("Risk level"), validators=[DataRequired(message=_l("Choose the risk level."))],
                        choices=_choices(codes.RISK_LEVELS, blank=_l("Choose the level")),
                        validate_choice=False)
    factors = TextAreaField(_l("Risk factors"), validators=[
        DataRequired(message=_l("Describe the risk factors.")), Length(max=LONG)],
        render_kw={"rows": 5})
    recommendation = TextAreaField(_l("Recommendation"), validators=[
        DataRequired(message=_l("Write the recommendation.")), Length(max=LONG)],
        render_kw={"rows": 4})


class DecisionForm(CaseForm):
    outcome = SelectField(_l("Decision"), validate_choice=False,
                          choices=_choices(codes.DECISION_OUTCOMES, blank=_l("Choose the decision")),
                          validators=[DataRequired(message=_l("Choose the decision."))])
    reason = SelectField(_l("Reason"), validate_choice=False,
                         choices=_choices(codes.DECISION_REASONS, blank=_l("Choose a reason")),
                         validators=[DataRequired(message=_l("Choose a reason."))])
    decided_on = DateField(_l("Date of the decision"), validators=[
        InputRequired(message=_l("Give the date of the decision."))])


class ReviewForm(CaseForm):
    outcome = SelectField(_l("Outcome"), validate_choice=False,
                          choices=_choices(codes.REVIEW_OUTCOMES, blank=_l("Choose the outcome")),
                          validators=[DataRequired(message=_l("Choose the outcome."))])
    notes = TextAreaField(_l("Notes"), validators=[Optional(), Length(max=LONG)], render_kw={"rows": 4})


class ResolveAppealForm(CaseForm):
    outcome = SelectField(_l("Outcome"), validate_choice=False,
                          choices=_choices(codes.APPEAL_OUTCOMES, blank=_l("Choose the outcome")),
                          validators=[DataRequired(message=_l("Choose the outcome."))])


class CloseForm(CaseForm):
    reason = SelectField(_l("Reason for closing"), validate_choice=False,
                         choices=_choices(codes.CLOSURE_REASONS, blank=_l("Choose a reason")),
                         validators=[DataRequired(message=_l("Choose a reason."))])


# -- everything else on the case page -----------------------------------------

class AssignForm(CaseForm):
    assignee = SelectField(_l("Assign to"), choices=[], validate_choice=False)


class MeasureForm(CaseForm):
    to = SelectField(_l("Move to"), choices=[], validate_choice=False,
                     validators=[DataRequired(message=_l("Choose the new stage of the measure."))])


class PlatformReportForm(PlainForm):
    reported_at = DateTimeLocalField(_l("Reported to the platform on"), tz=MEXICO, format=LOCAL_FORMAT,
                                     validators=[InputRequired(
                                         message=_l("Give the date and time of the report."))])
    report_id = StringField(_l("Platform's report number"), validators=[Optional(), Length(max=64)])
    outcome = SelectField(_l("Outcome"), validate_choice=False,
                          choices=_choices(codes.PLATFORM_OUTCOMES, blank=_l("Not known yet")))
    responded_at = DateTimeLocalField(_l("The platform answered on"), tz=MEXICO, format=LOCAL_FORMAT,
                                      validators=[Optional()])
    removed_at = DateTimeLocalField(_l("Removed on"), tz=MEXICO, format=LOCAL_FORMAT,
                                    validators=[Optional()])


class NoteForm(PlainForm):
    body = TextAreaField(_l("Note (staff only)"), validators=[
        DataRequired(message=_l("Write the note.")), Length(max=LONG)], render_kw={"rows": 4})


class MessageForm(PlainForm):
    body = TextAreaField(_l("Message to the petitioner"), validators=[
        DataRequired(message=_l("Write the message.")), Length(max=5000)], render_kw={"rows": 4})


class EvidenceForm(PlainForm):
    files = MultipleFileField(_l("Files"))
    incident = SelectField(_l("Incident"), choices=[], validate_choice=False)
    threat = SelectField(_l("Online threat"), choices=[], validate_choice=False)


class RevealForm(PlainForm):
    reason = TextAreaField(_l("Why must the real identity be revealed?"), validators=[
        DataRequired(message=_l("Write the reason.")), Length(max=1000)], render_kw={"rows": 3})
