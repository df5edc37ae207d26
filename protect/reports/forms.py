"""The report's period and filters: a GET form, so it works without JavaScript and links keep it."""
from __future__ import annotations

import re
from datetime import date

from flask_babel import lazy_gettext as _l
from wtforms import SelectChoice, SelectField

from ..cases import codes
from ..cases.forms import PlainForm
from ..errors import DomainError
from . import service

MONTH = re.compile(r"^(\d{4})-(\d{2})$")
EARLIEST = date(2012, 6, 1)  # the Law's publication: no mechanism case is older


def _month(value: str | None) -> date | None:
    match = MONTH.match(value or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        return None
    return date(int(match.group(1)), int(match.group(2)), 1)


class ReportForm(PlainForm):
    start = SelectField(_l("From"), choices=[], validate_choice=False)
    end = SelectField(_l("To"), choices=[], validate_choice=False)
    state = SelectField(_l("State"), choices=[], validate_choice=False)
    beneficiary = SelectField(_l("Beneficiary"), choices=[], validate_choice=False)
    gender = SelectField(_l("Gender"), choices=[], validate_choice=False)

    def offer(self, viewer) -> None:
        """Choices within what ``viewer`` may see (a donor's scope; complete months only for donors)."""
        latest = service.latest_month(viewer.role)
        months: list[SelectChoice] = []
        month = latest
        while month >= EARLIEST and len(months) < 120:
            months.append(SelectChoice(month.strftime("%Y-%m"), month.strftime("%Y-%m")))
            month = service.previous_month(month)
        self.start.choices = self.end.choices = months
        default = service.default_period(viewer.role)
        self.start.data = self.start.data or default.first.strftime("%Y-%m")
        self.end.data = self.end.data or default.last.strftime("%Y-%m")
        scope = service.scope_of(viewer)
        states = scope.states or tuple(codes.STATES)
        beneficiaries = scope.beneficiaries or tuple(codes.BENEFICIARY_TYPES)
        self.state.choices = [SelectChoice("", _l("Every state") if not scope.states else _l("Every state of yours"))] + [
            SelectChoice(s, codes.STATES[s]) for s in states]
        self.beneficiary.choices = [SelectChoice("", _l("Everyone"))] + [
            SelectChoice(b, codes.BENEFICIARY_TYPES[b]) for b in beneficiaries]
        self.gender.choices = [SelectChoice("", _l("Any"))] + [
            SelectChoice(g, label) for g, label in service.GENDERS.items()]

    def ask(self, viewer) -> tuple[service.Period, service.Filters]:
        """The period and filters chosen, or a DomainError saying what is wrong."""
        first, last = _month(self.start.data), _month(self.end.data)
        if first is None or last is None or first < EARLIEST:
            raise DomainError(_l("Choose the months from the lists."))
        period = service.check_period(viewer, service.Period(first, last))
        filters = service.narrow(viewer, state=self.state.data or None, beneficiary=self.beneficiary.data or None,
                                 gender=self.gender.data or None)
        return period, filters

    def query(self) -> dict[str, str]:
        """The chosen values, for links that keep them (exports, drill-down)."""
        return {name: self[name].data for name in ("start", "end", "state", "beneficiary", "gender")
                if self[name].data}
