"""The staff side of a case: queue, case page, workflow steps.

Thin views: parse the form, call ``service``, commit, redirect. What the
service refuses comes back as the case page again with the message and with
what the person typed still in the form: 409 when someone else changed the
case meanwhile, 422 when a rule refused it, 404 when the case (or one of its
parts) is not theirs to see, 403 when they may see it but not do that.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask import session as browser_session
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup, escape
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.routing import BuildError
from wtforms import SelectChoice

from ..accounts.models import User
from ..crypto import serverkeys
from ..crypto.downloads import decrypted_attachment
from ..crypto.uploads import accepts_uploads
from ..deadlines import service as deadlines
from ..deadlines.forms import EmptyForm, PauseForm
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import db, utcnow
from ..kept import Kept
from ..localtime import MEXICO, format_day
from ..localtime import day as local_date
from ..localtime import moment as local
from ..main import navigation
from . import codes, forms, service
from .models import Case, Measure, OnlineThreat

log = logging.getLogger(__name__)
bp = Blueprint("cases", __name__)

PER_PAGE = 50


# -- workflow steps ----------------------------------------------------------

@dataclass(frozen=True)
class Step:
    title: object
    button: object
    form: type[forms.CaseForm]
    transitions: tuple[str, ...]            # service.TRANSITIONS keys this step may take
    run: Callable                            # (session, actor, case, form, version) -> None
    measures: bool = False                   # the form picks measures from the catalogue
    ready: Callable | None = None            # (case, record) -> bool: more than the state
    final: bool = False                      # closes the case: shown apart


def _open_appeal(record: service.CaseRecord):
    open_ = [a for a in record.appeals if a.resolved_at is None]
    return open_[-1] if open_ else None


def _undelivered_decision(case: Case, record: service.CaseRecord) -> bool:
    last = record.decisions[-1] if record.decisions else None
    return last is not None and last.outcome != "denied" and last.communicated_at is None


STEPS: dict[str, Step] = {
    "triage": Step(
        _l("Triage"), _l("Record the triage"), forms.TriageForm,
        ("admit_extraordinary", "admit_ordinary", "not_admit"),
        lambda s, u, c, f, v: service.triage(s, u, c, decision=f.decision.data,
                                             reason=f.reason.data or None, version=v)),
    "urgent_measures": Step(
        _l("Issue urgent measures"), _l("Record the urgent measures issued"),
        forms.UrgentMeasuresForm, ("issue_urgent_measures",),
        lambda s, u, c, f, v: service.issue_urgent_measures(s, u, c, f.picked(), version=v),
        measures=True),
    "urgent_implemented": Step(
        _l("Urgent measures implemented"), _l("Record that the urgent measures are implemented"),
        forms.ConfirmForm, ("implement_urgent_measures",),
        lambda s, u, c, f, v: service.implement_urgent_measures(s, u, c, version=v),
        ready=lambda c, r: any(m.urgent for m in c.measures)),
    "assessment": Step(
        _l("Risk assessment"), _l("Record the risk assessment"), forms.AssessmentForm, ("assess",),
        lambda s, u, c, f, v: service.record_assessment(
            s, u, c, level=f.level.data, factors=f.factors.data,
            recommendation=f.recommendation.data, version=v)),
    "decision": Step(
        _l("Board decision"), _l("Record the board's decision"), forms.DecisionForm,
        ("decide_grant", "decide_deny"),
        lambda s, u, c, f, v: service.record_decision(
            s, u, c, outcome=f.outcome.data, reason=f.reason.data, decided_on=f.decided_on.data,
            measures=f.picked(), version=v),
        measures=True),
    "communicate": Step(
        _l("Communicate the decision"), _l("Record that the decision was sent to the authorities"),
        forms.ConfirmForm, ("communicate_decision",),
        lambda s, u, c, f, v: service.communicate_decision(s, u, c, version=v),
        ready=_undelivered_decision),
    "start_review": Step(
        _l("Periodic review"), _l("Start the review"), forms.ConfirmForm, ("start_review",),
        lambda s, u, c, f, v: service.start_review(s, u, c, version=v)),
    "review": Step(
        _l("Review"), _l("Record the review"), forms.ReviewForm, ("review_keep", "review_withdraw"),
        lambda s, u, c, f, v: service.record_review(s, u, c, outcome=f.outcome.data,
                                                    notes=f.notes.data, version=v)),
    "receive_study": Step(
        _l("Independent study"), _l("Record that the independent study was received"),
        forms.ConfirmForm, ("receive_study",),
        lambda s, u, c, f, v: service.receive_study(s, u, c, version=v),
        ready=lambda c, r: (a := _open_appeal(r)) is not None and a.study_received_at is None),
    "resolve_appeal": Step(
        _l("Resolve the appeal"), _l("Record the resolution"), forms.ResolveAppealForm,
        ("appeal_upheld", "appeal_rejected"),
        lambda s, u, c, f, v: service.resolve_appeal(s, u, c, outcome=f.outcome.data, version=v),
        ready=lambda c, r: (a := _open_appeal(r)) is not None and a.study_received_at is not None),
    "close": Step(
        _l("Close the case"), _l("Close the case"), forms.CloseForm, ("close",),
        lambda s, u, c, f, v: service.close(s, u, c, reason=f.reason.data, version=v), final=True),
    "withdraw": Step(
        _l("Withdraw the request"), _l("Record that the petitioner withdrew the request"),
        forms.ConfirmForm, ("withdraw",),
        lambda s, u, c, f, v: service.withdraw(s, u, c, version=v), final=True),
}


def available_steps(user, case: Case, record: service.CaseRecord) -> list[str]:
    """The steps ``user`` may take on ``case`` now: by state (TRANSITIONS) and permission."""
    if not service.can_work(user, case):
        return []
    names = []
    for name, step in STEPS.items():
        if not any(case.status in service.TRANSITIONS[t][0] for t in step.transitions):
            continue
        if step.ready is not None and not step.ready(case, record):
            continue
        names.append(name)
    return names


# -- helpers -----------------------------------------------------------------

def _me() -> User:
    return current_user._get_current_object()


def _get(case_id: str, *, audit_view: bool = False) -> Case:
    try:
        return service.get_case(db.session, _me(), case_id, audit_view=audit_view)
    except NotFound:
        abort(404)


def _is_english() -> bool:
    return str(get_locale() or "es").startswith("en")


@bp.record_once
def _keep_catalogues(state) -> None:
    state.app.extensions["protect.case_pages"] = Kept(64)


def _kept(what: tuple, make: Callable):
    """``make()``, kept in this process while the cases edition (staff accounts and measure
    types raise it too) is the one this request found."""
    kept: Kept = current_app.extensions["protect.case_pages"]
    key = (*what, navigation().cases)
    found = kept.get(key)
    return found if found is not None else kept.put(key, make())


def _directory() -> dict[str, service.StaffMember]:
    return _kept(("staff",), lambda: service.staff_directory(db.session))


def _catalogue() -> list[service.MeasureKind]:
    """Active measure types, urgent first."""
    return _kept(("catalogue",), lambda: service.measure_types(db.session))


def _type_name(t) -> str:
    return t.name_en if _is_english() else t.name_es


def _step_form_class(step: Step):
    """The step's form; with the catalogue's checkboxes, a class made once per language."""
    if not step.measures:
        return step.form
    return _kept(("form", step.form, str(get_locale())),
                 lambda: forms.with_measures(step.form, _catalogue(), _type_name))


def person(user: service.StaffMember | None) -> str:
    if user is None:
        return _("someone no longer on staff")
    return user.name or user.email


def who(user_id: str | None, case: Case, names: dict) -> str:
    """Who did something: staff by name, the petitioner as such, never a journalist's account name."""
    if user_id is None:
        return _("The system")
    if user_id == case.petitioner_id:
        return _("The petitioner")
    if user_id in names:
        return person(names[user_id])
    return _("Someone else")


def lines(text: str | None) -> Markup:
    """Text as typed, its line breaks kept."""
    return Markup("<br>").join(escape(line) for line in (text or "").splitlines())


def days_waiting(case, now: datetime | None = None) -> int | None:
    """Whole days from submission to closing (or ``now``): of a Case or a list row."""
    if case.submitted_at is None:
        return None
    return max(0, ((case.closed_at or now or utcnow()) - case.submitted_at).days)


@bp.context_processor
def _case_helpers():
    return {"local": local, "local_date": local_date, "days_waiting": days_waiting,
            "person": person, "who": who, "lines": lines, "codes": codes, "PROCEDURES": codes.PROCEDURES,
            "EVENT_LABELS": codes.EVENT_LABELS, "MEASURE_CATEGORIES": codes.MEASURE_CATEGORIES}


def _blank(cls, prefix: str, **data):
    """A form for the page, not filled from this request's body."""
    return cls(formdata=None, prefix=prefix, **data)


def _measure_choices(measure: Measure):
    flow = codes.MEASURE_FLOW
    return [SelectChoice(s, codes.MEASURE_STATUSES[s]) for s in flow[flow.index(measure.status) + 1:]]


def _assign_choices(staff: list[service.StaffMember], blank) -> list[SelectChoice]:
    return [SelectChoice("", blank)] + [
        SelectChoice(u.id, f"{person(u)} · {_('Supervisor') if u.role == 'supervisor' else _('Caseworker')}")
        for u in sorted(staff, key=lambda u: (u.role, person(u).lower()))]


def _evidence_choices(form, case: Case):
    form.incident.choices = [SelectChoice("", _("Not linked to an incident"))] + [
        SelectChoice(i.id, f"{local_date(i.occurred_on)} · {codes.INCIDENT_TYPES.get(i.kind, i.kind)}")
        for i in case.incidents]
    form.threat.choices = [SelectChoice("", _("Not linked to an online threat"))] + [
        SelectChoice(t.id, str(codes.PLATFORMS.get(t.platform, t.platform))) for t in case.online_threats]


def _threat_form(threat: OnlineThreat):
    return _blank(forms.PlatformReportForm, f"r-{threat.id}", reported_at=threat.reported_at,
                  report_id=threat.platform_report_id, outcome=threat.outcome or "",
                  responded_at=threat.responded_at, removed_at=threat.removed_at)


def _render_case(case: Case, *, status: int = 200, failed: str | None = None, form=None,
                 error=None, revealed: str | None = None):
    """The case page. ``failed``/``form``: the form just refused, shown again as sent."""
    me = _me()
    session = db.session
    record = service.case_record(session, case)
    types = _catalogue()
    can_work = service.can_work(me, case)
    supervisor = me.role == "supervisor"
    overrides = {failed: form} if failed else {}

    steps = available_steps(me, case, record)
    step_forms = []
    failed_step = failed[4:] if failed and failed.startswith("act:") else None
    for name in steps + ([failed_step] if failed_step and failed_step not in steps else []):
        step = STEPS[name]
        f = overrides.get(f"act:{name}") or _blank(
            _step_form_class(step), name, version=str(case.version),
            **({"decided_on": utcnow().astimezone(MEXICO).date()} if name == "decision" else {}))
        step_forms.append((name, step, f, name in steps))

    page_forms = {}
    if can_work:
        page_forms["message"] = overrides.get("message") or _blank(forms.MessageForm, "message")
        ev = overrides.get("evidence") or _blank(forms.EvidenceForm, "evidence")
        _evidence_choices(ev, case)
        page_forms["evidence"] = ev
    if can_work or (me.role == "caseworker" and service.can_view(me, case)):
        page_forms["note"] = overrides.get("note") or _blank(forms.NoteForm, "note")
    directory = _directory()
    if supervisor:
        af = overrides.get("assign") or _blank(forms.AssignForm, "assign", version=str(case.version),
                                               assignee=case.assignee_id or "")
        af.assignee.choices = _assign_choices(service.assignable(directory), _("Choose a person"))
        page_forms["assign"] = af
    elif case.assignee_id is None and case.status in ("received", "triage"):
        page_forms["take"] = overrides.get("assign") or _blank(forms.AssignForm, "assign",
                                                               version=str(case.version))
    if supervisor and case.pseudonymous and case.real_identity_ct and revealed is None:
        page_forms["reveal"] = overrides.get("reveal") or _blank(forms.RevealForm, "reveal")

    measure_forms, threat_forms = {}, {}
    if can_work:
        for m in case.measures:
            if m.status != codes.MEASURE_FLOW[-1]:
                key = f"measure:{m.id}"
                mf = overrides.get(key) or _blank(forms.MeasureForm, f"m-{m.id}", version=str(case.version))
                mf.to.choices = _measure_choices(m)
                measure_forms[m.id] = mf
        for t in case.online_threats:
            threat_forms[t.id] = overrides.get(f"report:{t.id}") or _threat_form(t)

    events = service.timeline(session, case)
    messages = service.messages(session, case)
    notes = service.notes(session, case) if "note" in page_forms or can_work else []
    html = render_template(
        "cases/case.html", case=case, record=record, open_appeal=_open_appeal(record),
        can_work=can_work, supervisor=supervisor, step_forms=step_forms, failed=failed,
        page_forms=page_forms, measure_forms=measure_forms, threat_forms=threat_forms,
        events=events, messages=messages, notes=notes, names=directory, error=error,
        revealed=revealed, type_names={t.code: _type_name(t) for t in types},
        clocks=deadlines.case_clocks(session, case), clock_stages=deadlines.STAGES,
        clock_states=deadlines.STATES, time_left=deadlines.time_left,
        pause_form=PauseForm(prefix="pause"), resume_form=EmptyForm(prefix="resume"),
        type_info={t.code: (_type_name(t), codes.MEASURE_CATEGORIES.get(t.category, t.category)) for t in types})
    session.commit()  # the audit row of this view
    return html, status


def _refused(case_id: str, key: str, form, exc) -> tuple[str, int]:
    """After a refused change: the case page again, with the message and the form as sent."""
    db.session.rollback()
    if isinstance(exc, NotFound):
        abort(404)
    if isinstance(exc, PermissionDenied):
        abort(403)
    case = _get(case_id, audit_view=True)
    if isinstance(exc, (service.StaleCase, StaleDataError)):
        if hasattr(form, "version"):
            form.version.data = str(case.version)  # sending it again now applies it to this state
        return _render_case(case, status=409, failed=key, form=form, error=service.StaleCase().message)
    return _render_case(case, status=422, failed=key, form=form, error=exc.message)


def _invalid(case: Case, key: str, form):
    db.session.rollback()
    case = _get(case.id, audit_view=True)
    version = getattr(form, "version", None)
    if version is not None and version.errors:
        version.data = str(case.version)
        error = version.errors[0]
    else:
        error = _("Some answers are missing or not valid: see the form below.")
    return _render_case(case, status=422, failed=key, form=form, error=error)


def _apply(case: Case, key: str, form, change: Callable[[], object], done, anchor: str = ""):
    """Run ``change`` and commit; on refusal show the page again (see ``_refused``)."""
    case_id = case.id
    try:
        change()
        db.session.commit()
    except (DomainError, StaleDataError) as exc:
        return _refused(case_id, key, form, exc)
    flash(done, "success")
    return redirect(url_for(".case", case_id=case_id) + anchor)


# -- the queue ---------------------------------------------------------------

def _page_number() -> int:
    return max(1, min(request.args.get("page", 1, type=int) or 1, 100000))


@bp.route("/queue")
def queue():
    me = _me()
    listings: Listings = current_app.extensions["protect.listings"]
    now = utcnow()
    page_key = _page_key(me)
    if page_key is not None and (kept := listings.fresh(page_key, now)) is not None:
        return kept.html
    supervisor = me.role == "supervisor"
    form = forms.QueueFilterForm(request.args)
    _plain_labels(form, str(get_locale()))
    staff = service.assignable(_directory()) if supervisor else []
    form.assignee.choices = _assign_choices(staff, _("Anyone"))
    stage = form.value("stage", forms.STAGE_GROUPS) or "open"
    danger = {"yes": True, "no": False}.get(form.danger.data)
    reference = (form.reference.data or "").strip()[:20] or None
    filters = service.CaseFilter(
        stage_group=None if stage == "all" else stage,
        status=form.value("status", codes.STATUSES),
        assignee_id=form.value("assignee", {u.id for u in staff}) if supervisor else None,
        risk_level=form.value("risk", codes.RISK_LEVELS),
        immediate_danger=danger, reference=reference,
        sort=form.value("sort", forms.SORTS) or "priority",
        page=_page_number(), per_page=PER_PAGE)
    try:
        phone_intake = url_for("intake.new")
    except BuildError:  # the intake blueprint not there (yet): no button
        phone_intake = None
    filtered = any(request.args.get(k) for k in ("status", "assignee", "risk", "danger", "reference")) \
        or stage != "open"
    listing = _listing(me, filters, now, filtered=filtered, reference=reference)
    html = render_template("cases/queue.html", form=form, stage=stage, supervisor=supervisor,
                           filtered=filtered, phone_intake=phone_intake, listing=listing.html)
    if page_key is not None:
        listings.put(page_key, Listing(Markup(html), listing.fresh_until))  # noqa: S704 - autoescaped
    return html


def _page_key(me: User) -> tuple | None:
    """What the whole queue page is made of besides its list: the navigation bar's figures (the
    overdue count follows both editions) and this session's form token. None while a notice waits
    to be shown once."""
    if "_flashes" in browser_session:
        return None
    seen = navigation()
    return ("page", me.id, str(get_locale()), request.query_string, seen.cases, seen.clocks, seen.unread,
            browser_session.get("csrf_token"))


@dataclass(frozen=True)
class Listing:
    html: Markup
    fresh_until: datetime  # when a row's "days waiting" goes up


class Listings(Kept):
    """Rendered case lists and queue pages of this process, each kept while the editions it was
    rendered at are current and its day counts hold: a caseworker's queue, looked at all day
    long, is rendered again only when something it shows changed. Keyed by the reader (and a
    page by their session), so nobody is ever served a list rendered for someone else; kept in
    memory only, up to 16 MiB."""

    def __init__(self, max_bytes: int = 16 * 2**20):
        super().__init__(max_bytes, size=lambda listing: len(listing.html))

    def fresh(self, key: tuple, now: datetime) -> Listing | None:
        listing = self.get(key)
        return listing if listing is not None and now < listing.fresh_until else None


@bp.record_once
def _keep_listings(state) -> None:
    state.app.extensions["protect.listings"] = Listings()


def _listing(me: User, filters: service.CaseFilter, now: datetime, *, filtered: bool,
             reference: str | None) -> Listing:
    """The queue's list (count, rows, pager): as rendered before when nothing it shows changed."""
    listings: Listings = current_app.extensions["protect.listings"]
    key = (me.id, str(get_locale()), request.query_string, navigation().cases)
    if (kept := listings.fresh(key, now)) is not None:
        return kept
    rows, total = service.list_cases(db.session, me, filters)
    html = Markup(render_template(  # noqa: S704 - an autoescaped template's output
        "cases/_queue_list.html", rows=_queue_rows(rows, _directory(), now), total=total, page=filters.page,
        per_page=PER_PAGE, filtered=filtered, reference=reference))
    return listings.put(key, Listing(html, _days_change(rows, now)))


def _days_change(rows, now: datetime) -> datetime:
    """When the first of ``rows``' "days waiting" (``days_waiting``) goes up."""
    return min((r.submitted_at + timedelta(days=max(0, (now - r.submitted_at).days) + 1)
                for r in rows if r.submitted_at and not r.closed_at), default=datetime.max.replace(tzinfo=UTC))


# The queue filters' labels and choices as plain text, per language: read on every
# page, a lazy label costs a Babel lookup each time (the catalogues never change).
_FILTER_LABELS: dict[str, dict[str, tuple[str, list[SelectChoice]]]] = {}


def _plain_labels(form: forms.QueueFilterForm, locale: str) -> None:
    labels = _FILTER_LABELS.get(locale)
    if labels is None:
        labels = _FILTER_LABELS[locale] = {
            f.name: (str(f.label.text), [SelectChoice(c.value, str(c.label)) for c in getattr(f, "choices", ())])
            for f in form}
    for f in form:
        f.label.text, choices = labels[f.name]
        if choices:
            f.choices = choices


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One line of the queue as shown, every label already in the reader's language."""
    url: str
    reference: str
    danger: bool
    status: str
    procedure: str
    state: str
    submitted: str
    days: int | str
    assignee: str | None  # None: nobody yet


def _queue_rows(rows, names: dict[str, service.StaffMember], now: datetime) -> list[QueueRow]:
    """The page's rows with each label and name resolved once per distinct value, not
    once per row (lazy labels cost a Babel lookup each time they are read)."""
    locale = str(get_locale())
    statuses = {s: str(codes.STATUSES.get(s, s)) for s in {r.status for r in rows}}
    procedures = {p: str(codes.PROCEDURES.get(p) or "—") for p in {r.procedure for r in rows}}
    people = {i: person(names.get(i)) for i in {r.assignee_id for r in rows} if i}
    # One URL built, the others derived from it: case ids are hex (new_row_id), nothing to quote.
    case_url = url_for("cases.case", case_id="0")[:-1]
    out = []
    for r in rows:
        submitted = r.submitted_at
        out.append(QueueRow(
            url=case_url + r.id, reference=r.reference, danger=r.immediate_danger,
            status=statuses[r.status], procedure=procedures[r.procedure],
            state=codes.STATES.get(r.state_code, "—"),
            submitted=format_day(submitted.astimezone(MEXICO).date(), "medium", locale) if submitted else "",
            days=days if (days := days_waiting(r, now)) is not None else "—",
            assignee=people[r.assignee_id] if r.assignee_id else None))
    return out


# -- the case page -------------------------------------------------------------

@bp.route("/cases/<case_id>")
def case(case_id: str):
    return _render_case(_get(case_id, audit_view=True))


@bp.route("/cases/<case_id>/act/<action>", methods=["POST"])
def act(case_id: str, action: str):
    step = STEPS.get(action)
    if step is None:
        abort(404)
    case = _get(case_id)
    if not service.can_work(_me(), case):
        abort(403)
    key = f"act:{action}"
    cls = _step_form_class(step)
    form = cls(prefix=action)
    if not form.validate_on_submit():
        return _invalid(case, key, form)
    me = _me()
    return _apply(case, key, form,
                  lambda: step.run(db.session, me, case, form, form.version_number),
                  _("Done: %(step)s.", step=step.title), "#status")


@bp.route("/cases/<case_id>/assign", methods=["POST"])
def assign(case_id: str):
    case = _get(case_id)
    me = _me()
    form = forms.AssignForm(prefix="assign")
    supervisor = me.role == "supervisor"
    if supervisor:
        form.assignee.choices = _assign_choices(service.assignable(_directory()), _("Choose a person"))
    if not form.validate_on_submit():
        return _invalid(case, "assign", form)
    if supervisor:
        assignee = db.session.get(User, form.assignee.data) if form.assignee.data else None
        if assignee is None:
            return _refused(case.id, "assign", form,
                            DomainError(_l("Choose the caseworker or supervisor to assign.")))
    else:
        assignee = me  # a caseworker takes a new request for themself
    return _apply(case, "assign", form,
                  lambda: service.assign(db.session, me, case, assignee, version=form.version_number),
                  _("Assigned to %(name)s.", name=person(assignee)), "#assignment")


@bp.route("/cases/<case_id>/measures/<measure_id>", methods=["POST"])
def measure(case_id: str, measure_id: str):
    case = _get(case_id)
    if not service.can_work(_me(), case):
        abort(403)
    item = db.session.get(Measure, measure_id) if len(measure_id) == 32 else None
    if item is None or item.case_id != case.id:
        abort(404)
    key = f"measure:{item.id}"
    form = forms.MeasureForm(prefix=f"m-{item.id}")
    form.to.choices = _measure_choices(item) if item.status in codes.MEASURE_FLOW[:-1] else []
    if not form.validate_on_submit():
        return _invalid(case, key, form)
    me = _me()
    return _apply(case, key, form,
                  lambda: service.advance_measure(db.session, me, case, item, form.to.data,
                                                  version=form.version_number),
                  _("The measure was updated."), "#measures")


@bp.route("/cases/<case_id>/threats/<threat_id>/report", methods=["POST"])
def platform_report(case_id: str, threat_id: str):
    case = _get(case_id)
    if not service.can_work(_me(), case):
        abort(403)
    threat = db.session.get(OnlineThreat, threat_id) if len(threat_id) == 32 else None
    if threat is None or threat.case_id != case.id:
        abort(404)
    key = f"report:{threat.id}"
    form = forms.PlatformReportForm(prefix=f"r-{threat.id}")
    if not form.validate_on_submit():
        return _invalid(case, key, form)
    utc = lambda value: value.astimezone(UTC) if value else None  # noqa: E731
    me = _me()
    return _apply(case, key, form,
                  lambda: service.record_platform_report(
                      db.session, me, case, threat, reported_at=utc(form.reported_at.data),
                      report_id=form.report_id.data, outcome=form.outcome.data or None,
                      responded_at=utc(form.responded_at.data), removed_at=utc(form.removed_at.data)),
                  _("The report to the platform was saved."), "#threats")


@bp.route("/cases/<case_id>/notes", methods=["POST"])
def note(case_id: str):
    case = _get(case_id)
    form = forms.NoteForm(prefix="note")
    if not form.validate_on_submit():
        return _invalid(case, "note", form)
    me = _me()
    return _apply(case, "note", form, lambda: service.add_note(db.session, me, case, form.body.data),
                  _("The note was added."), "#notes")


@bp.route("/cases/<case_id>/messages", methods=["POST"])
def message(case_id: str):
    case = _get(case_id)
    if not service.can_work(_me(), case):
        abort(403)
    form = forms.MessageForm(prefix="message")
    if not form.validate_on_submit():
        return _invalid(case, "message", form)
    me = _me()
    return _apply(case, "message", form,
                  lambda: service.send_message(db.session, me, case, form.body.data),
                  _("The message was sent to the petitioner."), "#messages")


@bp.route("/cases/<case_id>/reveal", methods=["POST"])
def reveal(case_id: str):
    case = _get(case_id)
    form = forms.RevealForm(prefix="reveal")
    if not form.validate_on_submit():
        return _invalid(case, "reveal", form)
    try:
        name = service.reveal_identity(db.session, _me(), case, form.reason.data)
    except DomainError as exc:
        return _refused(case.id, "reveal", form, exc)
    # Shown once, on this response: nothing keeps it, a reload asks (and audits) again.
    case = _get(case.id, audit_view=True)
    return _render_case(case, revealed=name)


# -- evidence ------------------------------------------------------------------

def _evidence_recipients() -> list[str]:
    return [serverkeys.recipient(db.session, "evidence")]


@bp.route("/cases/<case_id>/evidence", methods=["POST"])
@accepts_uploads(recipients=_evidence_recipients)
def add_evidence(case_id: str):
    case = _get(case_id)
    if not service.can_work(_me(), case):
        abort(403)
    form = forms.EvidenceForm(prefix="evidence")
    _evidence_choices(form, case)
    if not form.validate_on_submit():
        return _invalid(case, "evidence", form)
    uploads = [f.stream for f in request.files.getlist("evidence-files")
               if f.filename or getattr(f.stream, "size", 0) > 0]
    me = _me()

    def keep():
        if not uploads:
            raise DomainError(_l("Choose at least one file."))
        for upload in uploads:
            service.add_evidence(db.session, me, case, upload, incident_id=form.incident.data or None,
                                 online_threat_id=form.threat.data or None)

    return _apply(case, "evidence", form, keep,
                  ngettext("%(num)d file added, encrypted.", "%(num)d files added, encrypted.",
                           len(uploads)), "#evidence")


@bp.route("/cases/<case_id>/evidence/<evidence_id>")
def evidence(case_id: str, evidence_id: str):
    case = _get(case_id)
    try:
        item = service.evidence_download(db.session, _me(), case, evidence_id)
    except NotFound:
        abort(404)
    return decrypted_attachment(item.blob_id, [serverkeys.identity(db.session, "evidence")],
                                item.filename or "file", item.size, before_first_byte=db.session.commit)
