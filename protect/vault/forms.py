"""Forms of the vault pages (the journalist's and the staff's).

They parse; the rules (bounds, lengths, which PIN) live in ``vault.service``,
so a refusal reads the same from the web, the CLI and tests. Several forms
share a page, so they are ``PlainForm``s: the app-wide CSRF check covers every
POST and each form carries the one ``csrf_token`` input (templates/vault/_macros.html).
"""
from __future__ import annotations

from datetime import UTC, datetime

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    FileField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, ValidationError

from ..cases.forms import LOCAL_FORMAT, MEXICO, PlainForm
from ..main import LANGUAGES
from .models import INCIDENT_KINDS
from .service import MAX_NOTE_CHARS, MAX_REASON, PIN_MAX, Schedule

AFTER_GRACE_CHOICES = {
    "release": _l("Release to the recipients at once"),
    "welfare_hold": _l("Hold it first while my caseworker checks on me, then release"),
}
DURESS_CHOICES = {
    "alert": _l("Alert the supervisors, silently"),
    "alert_and_release": _l("Alert the supervisors and start the release, silently"),
}
INCIDENT_CHOICES = {
    "disappearance": _l("Disappearance"),
    "killing": _l("Killing"),
    "detention": _l("Detention"),
}
if set(INCIDENT_CHOICES) != set(INCIDENT_KINDS):
    raise RuntimeError("every incident kind needs a label")


def _choices(mapping) -> list[SelectChoice]:
    return [SelectChoice(code, label) for code, label in mapping.items()]


def _parsed(field_class, message):
    """``field_class`` whose parse error is ``message`` (translated with the rest of ours)."""
    class Field(field_class):
        def process_formdata(self, valuelist):
            try:
                super().process_formdata(valuelist)
            except ValueError:
                raise ValueError(message) from None
    Field.__name__ = field_class.__name__
    return Field


WholeNumber = _parsed(IntegerField, _l("Write a whole number."))
LocalDateTime = _parsed(DateTimeLocalField, _l("Choose a date and a time."))


def _pin_field(label, **render_kw):
    return PasswordField(label, validators=[InputRequired(message=_l("Enter the PIN."))],
                         render_kw={"autocomplete": "off", "maxlength": PIN_MAX, **render_kw})


# -- the journalist's pages --------------------------------------------------

class NewVaultForm(PlainForm):
    title = StringField(_l("Name of the vault (only you see it)"),
                        render_kw={"maxlength": 200, "autocomplete": "off"})
    recipients_only = BooleanField(_l("Recipients only: the server cannot read this vault"))


class RenameForm(PlainForm):
    title = StringField(_l("Name of the vault (only you see it)"),
                        render_kw={"maxlength": 200, "autocomplete": "off"})


class SettingsForm(PlainForm):
    interval_days = WholeNumber(_l("Check in every (days, 1 to 90)"),
                                render_kw={"min": 1, "max": 90, "inputmode": "numeric"})
    reminder_hours = StringField(_l("Remind me this many hours before (e.g. 24, 2)"),
                                 render_kw={"maxlength": 40, "autocomplete": "off"})
    grace_hours = WholeNumber(_l("Grace period after a missed check-in (hours)"),
                              render_kw={"min": 1, "inputmode": "numeric"})
    after_grace = RadioField(_l("After the grace period"), choices=_choices(AFTER_GRACE_CHOICES),
                             validate_choice=False)
    welfare_hold_hours = WholeNumber(_l("Longest hold for the welfare check (hours)"),
                                     render_kw={"min": 1, "inputmode": "numeric"})
    max_pause_hours = WholeNumber(_l("Longest pause (hours; 720 is 30 days)"),
                                  render_kw={"min": 1, "inputmode": "numeric"})
    veto_hours = WholeNumber(_l("Time to refuse a release request (hours)"),
                             render_kw={"min": 24, "inputmode": "numeric"})
    coerced_deletion_protection = BooleanField(
        _l("Protect against coerced deletion: deleting only takes effect after a delay, and my "
           "caseworker is told"))
    deletion_delay_hours = WholeNumber(_l("Deletion delay (hours)"), render_kw={"min": 24, "inputmode": "numeric"})
    downloads_per_file = WholeNumber(_l("Downloads of each file allowed to each recipient (1 to 10)"),
                                     render_kw={"min": 1, "max": 10, "inputmode": "numeric"})

    @classmethod
    def of(cls, schedule: Schedule) -> SettingsForm:
        return cls(formdata=None, data={
            "interval_days": schedule.interval_hours // 24, "reminder_hours": ", ".join(map(str, schedule.reminder_hours)),
            "grace_hours": schedule.grace_hours, "after_grace": schedule.after_grace,
            "welfare_hold_hours": schedule.welfare_hold_hours, "max_pause_hours": schedule.max_pause_hours,
            "veto_hours": schedule.veto_hours, "coerced_deletion_protection": schedule.coerced_deletion_protection,
            "deletion_delay_hours": schedule.deletion_delay_hours,
            "downloads_per_file": schedule.downloads_per_file})

    def validate_reminder_hours(self, field):
        try:
            self.reminders = tuple(int(part) for part in (field.data or "").replace(";", ",").split(",")
                                   if part.strip())
        except ValueError:
            raise ValidationError(_l("Write whole numbers of hours separated by commas, e.g. 24, 2.")) from None

    def schedule(self, current: Schedule) -> Schedule:
        """``current`` with this form's values (the service checks the bounds)."""
        days = self.interval_days.data
        return Schedule(
            interval_hours=days * 24 if isinstance(days, int) else days, reminder_hours=self.reminders,
            grace_hours=self.grace_hours.data, after_grace=self.after_grace.data,
            welfare_hold_hours=self.welfare_hold_hours.data, max_pause_hours=self.max_pause_hours.data,
            veto_hours=self.veto_hours.data, duress_action=current.duress_action,
            coerced_deletion_protection=bool(self.coerced_deletion_protection.data),
            deletion_delay_hours=self.deletion_delay_hours.data, downloads_per_file=self.downloads_per_file.data)


class WebhookForm(PlainForm):
    webhook_url = StringField(_l("Messaging bridge address (webhook, https://…; empty for none)"),
                              render_kw={"maxlength": 500, "autocomplete": "off", "inputmode": "url",
                                         "spellcheck": "false"})


class PinsForm(PlainForm):
    current_pin = PasswordField(_l("Current PIN"), render_kw={"autocomplete": "off", "maxlength": PIN_MAX})
    pin = PasswordField(_l("New PIN (6 to 32 digits or characters)"),
                        render_kw={"autocomplete": "new-password", "maxlength": PIN_MAX})
    pin_confirm = PasswordField(_l("New PIN again"), render_kw={"autocomplete": "new-password", "maxlength": PIN_MAX})
    duress_pin = PasswordField(_l("New duress PIN (different from the PIN)"),
                               render_kw={"autocomplete": "new-password", "maxlength": PIN_MAX})
    duress_pin_confirm = PasswordField(_l("New duress PIN again"),
                                       render_kw={"autocomplete": "new-password", "maxlength": PIN_MAX})

    def validate_pin_confirm(self, field):
        if field.data != self.pin.data:
            raise ValidationError(_l("The two PINs you typed differ."))

    def validate_duress_pin_confirm(self, field):
        if field.data != self.duress_pin.data:
            raise ValidationError(_l("The two duress PINs you typed differ."))


class DuressActionForm(PlainForm):
    duress_action = RadioField(_l("When the duress PIN is used"), choices=_choices(DURESS_CHOICES),
                               validate_choice=False)


class RecipientForm(PlainForm):
    name = StringField(_l("Name"), render_kw={"maxlength": 200, "autocomplete": "off"})
    email = StringField(_l("E-mail address"), render_kw={"maxlength": 254, "autocomplete": "off",
                                                         "inputmode": "email", "spellcheck": "false"})
    language = SelectField(_l("Language of their e-mail"), choices=_choices(LANGUAGES), default="es",
                           validate_choice=False)
    age_recipient = StringField(_l("Their age public key, if they have one (starts with age1)"),
                                render_kw={"maxlength": 100, "autocomplete": "off", "spellcheck": "false"})
    access_code = PasswordField(_l("Access code, if they have no key (8 or more characters; give it to them yourself, not by e-mail)"),
                                render_kw={"autocomplete": "new-password", "maxlength": 128})


class CodepositorForm(PlainForm):
    email = StringField(_l("E-mail address of their journalist account here"),
                        render_kw={"maxlength": 254, "autocomplete": "off", "inputmode": "email",
                                   "spellcheck": "false"})


class FileForm(PlainForm):
    file = FileField(_l("File (any size; it is encrypted as it arrives)"))


class NoteForm(PlainForm):
    text = TextAreaField(_l("Note"), render_kw={"maxlength": MAX_NOTE_CHARS, "rows": 6})


class PinForm(PlainForm):
    pin = _pin_field(_l("PIN"), autofocus=True)


class PauseForm(PlainForm):
    pin = _pin_field(_l("PIN"))
    until = LocalDateTime(_l("Pause until (Mexico City time)"), format=LOCAL_FORMAT,
                               validators=[InputRequired(message=_l("Choose when the pause ends."))])

    def until_utc(self) -> datetime:
        return self.until.data.replace(tzinfo=MEXICO).astimezone(UTC)


class DeleteVaultForm(PlainForm):
    confirm = BooleanField(_l("Yes, delete this vault and everything in it"))


# -- staff --------------------------------------------------------------------

class ReasonForm(PlainForm):
    reason = TextAreaField(_l("Reason"), render_kw={"maxlength": MAX_REASON, "rows": 3})


class IncidentForm(PlainForm):
    kind = SelectField(_l("What happened"), choices=[SelectChoice("", _l("Choose…"))] + _choices(INCIDENT_CHOICES),
                       validate_choice=False)
    reason = TextAreaField(_l("Reason and source"), render_kw={"maxlength": MAX_REASON, "rows": 3})
