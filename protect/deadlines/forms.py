from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from .calendar import UNITS
from .service import STAGES

UNIT_LABELS = {"hours": _l("Hours"), "natural_days": _l("Natural days"), "business_days": _l("Business days")}
PROCEDURES = {"any": _l("Any procedure"), "ordinary": _l("Ordinary"), "extraordinary": _l("Extraordinary")}


class PolicyForm(FlaskForm):
    stage = SelectField(_l("Stage"), choices=[SelectChoice(k, v) for k, v in STAGES.items()])
    effective_from = DateField(_l("Takes effect on"), validators=[DataRequired()])
    start_events = StringField(_l("Start events"), validators=[DataRequired(), Length(max=300)])
    stop_event = StringField(_l("Stop event"), validators=[DataRequired(), Length(max=40)])
    duration = IntegerField(_l("Duration"), validators=[DataRequired(), NumberRange(1, 10000)])
    unit = SelectField(_l("Unit"), choices=[SelectChoice(u, UNIT_LABELS[u]) for u in UNITS])
    warn_percent = IntegerField(_l("Warn when this share of the term is left (%)"), default=25,
                                validators=[Optional(), NumberRange(0, 90)])
    procedure = SelectField(_l("Procedure"), choices=[SelectChoice(k, v) for k, v in PROCEDURES.items()])
    legal_basis = TextAreaField(_l("Legal basis"), validators=[DataRequired(), Length(max=2000)])


class ClosureForm(FlaskForm):
    day = DateField(_l("Day"), validators=[DataRequired()])
    label = StringField(_l("Label"), validators=[DataRequired(), Length(max=120)])


class PauseForm(FlaskForm):
    reason = StringField(_l("Why is it paused?"), validators=[DataRequired(), Length(max=1000)])


class EmptyForm(FlaskForm):
    """Only the CSRF token."""
