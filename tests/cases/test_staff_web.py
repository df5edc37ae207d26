"""The staff side of a case through its HTTP forms: queue, case page, workflow steps.

Cases are made quickly through the service (as a journalist would submit
them); everything the staff do then goes through the real pages and forms.
"""
from __future__ import annotations

import io
import re
from datetime import date, datetime, timedelta, timezone

import pytest
from babel.dates import format_date
from sqlalchemy import event, select
from sqlalchemy.orm.exc import StaleDataError

from protect.accounts.models import User
from protect.audit.models import AuditEntry
from protect.cases import editions, service
from protect.cases.forms import MEXICO
from protect.cases.models import Case, Measure, OnlineThreat
from protect.crypto.downloads import attachment_header
from protect.extensions import db
from tests.conftest import csrf_token, login

REAL_NAME = "Lucía Hernández Ruiz"
PSEUDONYM = "Lucía"


# -- helpers ------------------------------------------------------------------

def new_case(app, journalist, *, danger=False, days_ago=None, threat=False) -> tuple[str, str]:
    """A submitted request by ``journalist``; returns (id, reference)."""
    with app.app_context():
        j = db.session.get(User, journalist.id)
        case = service.start_request(db.session, j)
        service.save_who(db.session, j, case, service.WhoAtRisk(
            name=PSEUDONYM, pseudonymous=True, real_identity=REAL_NAME, contact="+52 55 0000 0000",
            beneficiary_type="journalist", gender="woman", others_at_risk="Her brother"))
        service.save_work(db.session, j, case, outlet="Diario del Sur", journalism_kind="print",
                          state_code="GRO", municipality="Chilpancingo")
        service.add_incident(db.session, j, case, occurred_on=date.today() - timedelta(days=3),
                             kind="threat", aggressor="criminal_group", channel="messaging",
                             place="Home", narrative="They sent a photo of my house.")
        if threat:
            service.add_online_threat(db.session, j, case, platform="x", locator="@amenazas123")
        service.submit(db.session, j, case, immediate_danger=danger, consent=True)
        if days_ago is not None:
            case.submitted_at = datetime.now(timezone.utc) - timedelta(days=days_ago)
        db.session.commit()
        return case.id, case.reference


def with_case(app, case_id, change):
    """Run ``change(session, case)`` as someone else would, and commit."""
    with app.app_context():
        case = db.session.get(Case, case_id)
        result = change(db.session, case)
        db.session.commit()
        return result


def user(account) -> User:
    return db.session.get(User, account.id)


def sign_in(client, account) -> str:
    """Sign in through the forms, switch to English; returns the CSRF token of the session."""
    assert login(client, account).status_code == 302
    token = csrf_token(client, "/account")
    client.post("/language", data={"language": "en", "csrf_token": token, "next": "/account"})
    return token


def text(response) -> str:
    return response.get_data(as_text=True)


def version_in(html: str, prefix: str) -> str:
    match = re.search(rf'name="{re.escape(prefix)}-version" type="hidden" value="(\d+)"', html)
    assert match, f"no {prefix} form on the page"
    return match.group(1)


def act(client, token, case_id, action, **fields):
    """Fill the form of ``action`` on the case page and send it, as a browser would."""
    page = text(client.get(f"/cases/{case_id}"))
    data = {f"{action}-{k}": v for k, v in fields.items()}
    data.update({"csrf_token": token, f"{action}-version": version_in(page, action)})
    return client.post(f"/cases/{case_id}/act/{action}", data=data)


def status_of(app, case_id) -> str:
    with app.app_context():
        return db.session.get(Case, case_id).status


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())


@pytest.fixture
def journalist(make_account):
    return make_account("journalist")


# -- the whole path -------------------------------------------------------------

def test_caseworker_takes_a_request_to_active_protection_through_the_forms(app, client, make_account,
                                                                           journalist):
    case_id, reference = new_case(app, journalist, danger=True)
    cw = make_account("caseworker")
    token = sign_in(client, cw)

    queue = text(client.get("/queue"))
    assert reference in queue and "Immediate danger" in queue
    assert PSEUDONYM not in queue and REAL_NAME not in queue  # no personal data in lists

    page = text(client.get(f"/cases/{case_id}"))
    assert "Take this request" in page and "They sent a photo of my house." in page
    assert REAL_NAME not in page
    response = client.post(f"/cases/{case_id}/assign",
                           data={"csrf_token": token, "assign-version": version_in(page, "assign")})
    assert response.status_code == 302
    assert status_of(app, case_id) == "triage"

    assert act(client, token, case_id, "triage", decision="extraordinary").status_code == 302
    assert status_of(app, case_id) == "urgent_measures"
    response = act(client, token, case_id, "urgent_measures", m_escort="y", a_escort="federal",
                   m_relocation="y", a_relocation="state")
    assert response.status_code == 302, text(response)
    assert act(client, token, case_id, "urgent_implemented").status_code == 302
    assert status_of(app, case_id) == "risk_assessment"
    response = act(client, token, case_id, "assessment", level="high",
                   factors="Threats by a criminal group", recommendation="Cameras and a phone")
    assert response.status_code == 302
    assert status_of(app, case_id) == "board_decision"
    response = act(client, token, case_id, "decision", outcome="granted", reason="risk_confirmed",
                   decided_on=date.today().isoformat(), m_cameras="y", a_cameras="state",
                   m_phone="y", a_phone="federal")
    assert response.status_code == 302, text(response)
    assert status_of(app, case_id) == "implementation"
    assert act(client, token, case_id, "communicate").status_code == 302

    with app.app_context():
        decided = [m.id for m in db.session.execute(
            select(Measure).where(Measure.case_id == case_id, Measure.urgent.is_(False))).scalars()]
    assert len(decided) == 2
    for measure_id in decided:
        page = text(client.get(f"/cases/{case_id}"))
        prefix = f"m-{measure_id}"
        response = client.post(f"/cases/{case_id}/measures/{measure_id}", data={
            "csrf_token": token, f"{prefix}-version": version_in(page, prefix), f"{prefix}-to": "implemented"})
        assert response.status_code == 302
    assert status_of(app, case_id) == "active"

    assert client.post(f"/cases/{case_id}/notes", data={
        "csrf_token": token, "note-body": "Called her; she is safe tonight."}).status_code == 302
    assert client.post(f"/cases/{case_id}/messages", data={
        "csrf_token": token, "message-body": "Your cameras are installed."}).status_code == 302

    page = text(client.get(f"/cases/{case_id}"))
    for expected in ("Protected", "Called her; she is safe tonight.", "Your cameras are installed.",
                     "Security cameras", "Mobile or satellite phone", "Escort", "Threats by a criminal group",
                     "Board decision recorded", "Every measure implemented: protection in place",
                     "Urgent measures issued", "Start the review"):
        assert expected in page, expected
    # Only the steps of the current state are offered.
    assert 'id="step-triage"' not in page and 'id="step-decision"' not in page
    with app.app_context():
        events = [e.kind for e in service.timeline(db.session, db.session.get(Case, case_id))]
    assert events[:3] == ["submitted", "assigned", "triaged"]
    assert events.count("measure_implemented") == 2 and "measures_implemented" in events
    assert "note_added" in events and "message_sent" in events
    assert "case.viewed" in audit_actions(app)


def test_not_admitted_needs_a_reason_and_closes_the_request(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist)
    cw = make_account("caseworker")
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    token = sign_in(client, cw)
    response = act(client, token, case_id, "triage", decision="not_admitted")
    assert response.status_code == 422
    assert "Choose a valid option for: Reason" in text(response)
    response = act(client, token, case_id, "triage", decision="not_admitted", reason="unrelated_to_work")
    assert response.status_code == 302
    assert status_of(app, case_id) == "not_admitted"
    page = text(client.get(f"/cases/{case_id}"))
    assert "Risk not related to journalistic or defence work" in page
    assert "No workflow step is possible in this state." in page


# -- the queue --------------------------------------------------------------------

def refs_in_order(html: str, refs) -> list[str]:
    return sorted(refs, key=lambda r: html.index(r) if r in html else 10**9)


def test_queue_puts_immediate_danger_first_then_oldest_and_sorts(app, client, make_account, journalist):
    old, old_ref = new_case(app, journalist, days_ago=9)
    danger, danger_ref = new_case(app, journalist, danger=True, days_ago=2)
    new, new_ref = new_case(app, journalist, days_ago=1)
    token = sign_in(client, make_account("caseworker"))
    refs = [old_ref, danger_ref, new_ref]
    html = text(client.get("/queue"))
    assert refs_in_order(html, refs) == [danger_ref, old_ref, new_ref]
    assert "9</td>" in html  # days waiting
    assert refs_in_order(text(client.get("/queue?sort=oldest")), refs) == [old_ref, danger_ref, new_ref]
    assert refs_in_order(text(client.get("/queue?sort=newest")), refs) == [new_ref, danger_ref, old_ref]
    with_case(app, old, lambda s, c: setattr(c, "updated_at", datetime.now(timezone.utc)))
    assert refs_in_order(text(client.get("/queue?sort=updated")), refs)[0] == old_ref
    assert token


def test_queue_filters_and_reference_search(app, client, make_account, journalist):
    a, a_ref = new_case(app, journalist, days_ago=5)
    b, b_ref = new_case(app, journalist, danger=True, days_ago=4)
    c, c_ref = new_case(app, journalist, days_ago=3)
    cw1, cw2 = make_account("caseworker"), make_account("caseworker")
    with_case(app, a, lambda s, case: service.assign(s, user(cw1), case, user(cw1)))
    with_case(app, b, lambda s, case: service.assign(s, user(cw2), case, user(cw2)))
    def high(s, case):
        case.risk_level = "high"
    with_case(app, a, high)
    sign_in(client, make_account("supervisor"))

    def shown(query):
        html = text(client.get("/queue?" + query))
        return {r for r in (a_ref, b_ref, c_ref) if r in html}

    assert shown("") == {a_ref, b_ref, c_ref}
    assert shown("danger=yes") == {b_ref}
    assert shown("danger=no") == {a_ref, c_ref}
    assert shown(f"reference={a_ref.lower()}") == {a_ref}
    assert shown("reference=PRT-0000-0000") == set()
    assert "No case you can see has the reference" in text(client.get("/queue?reference=PRT-0000-0000"))
    assert shown("status=received") == {c_ref}
    assert shown("stage=queue") == {c_ref}
    assert shown("risk=high") == {a_ref}
    assert shown(f"assignee={cw1.id}") == {a_ref}
    assert shown("stage=closed") == set()
    assert "No case matches these filters." in text(client.get("/queue?stage=closed"))
    assert shown("sort=bogus&status=nonsense&stage=x") == {a_ref, b_ref, c_ref}  # bad values ignored
    html = text(client.get("/queue"))
    assert "caseworker" in html  # the assignee's name (their e-mail: they have no name)

    # A caseworker sees their own cases and the unassigned queue, never a colleague's case.
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    sign_in(client, cw1)
    assert shown("") == {a_ref, c_ref}
    assert shown(f"assignee={cw2.id}") == {a_ref, c_ref}  # the assignee filter is for supervisors


def test_queue_empty_states(app, client, make_account):
    sign_in(client, make_account("caseworker"))
    html = text(client.get("/queue"))
    assert "No request is waiting for triage." in html
    assert "No case matches these filters." in text(client.get("/queue?danger=yes"))
    assert "past the end of the list" not in html


def test_queue_pages(app, client, make_account, journalist, monkeypatch):
    from protect.cases import views
    monkeypatch.setattr(views, "PER_PAGE", 2)
    refs = [new_case(app, journalist, days_ago=10 - i)[1] for i in range(3)]
    sign_in(client, make_account("caseworker"))
    first, second = text(client.get("/queue")), text(client.get("/queue?page=2"))
    assert refs[0] in first and refs[1] in first and refs[2] not in first
    assert refs[2] in second and "Page 2 of 2" in second
    assert "past the end of the list" in text(client.get("/queue?page=9"))


def test_queue_words_and_dates_follow_the_readers_language(app, client, make_account, journalist):
    # The queue resolves its labels once per language and formats each day once:
    # switching language must switch every one of them, both ways.
    case_id, reference = new_case(app, journalist, danger=True, days_ago=40)
    with app.app_context():
        submitted = db.session.get(Case, case_id).submitted_at.astimezone(MEXICO).date()
    token = sign_in(client, make_account("caseworker"))  # in English
    words = {"en": ["Any status", "Open cases", "Received", "Immediate danger", "Nobody yet", "40</td>",
                    format_date(submitted, "medium", locale="en")],
             "es": ["Cualquier estado", "Casos abiertos", "Recibida", "Peligro inminente", "Nadie todavía",
                    "40</td>", format_date(submitted, "medium", locale="es")]}
    for language in ("en", "es", "en"):
        client.post("/language", data={"language": language, "csrf_token": token, "next": "/queue"})
        html = text(client.get("/queue"))
        assert reference in html
        assert all(word in html for word in words[language]), language
        other = "es" if language == "en" else "en"
        assert not any(word in html for word in words[other][:5]), language


def test_supervisor_queue_names_an_assignee_no_longer_active(app, client, make_account, journalist):
    case_id, reference = new_case(app, journalist)
    cw = make_account("caseworker")
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    with app.app_context():
        user(cw).active = False
        db.session.commit()
    sign_in(client, make_account("supervisor"))
    html = text(client.get("/queue"))
    assert reference in html and f"<td>{cw.email}</td>" in html


def test_queue_issues_the_same_number_of_queries_for_5_and_40_cases(app, client, make_account, journalist):
    caseworkers = [make_account("caseworker") for _ in range(3)]
    supervisor = make_account("supervisor")

    def add(n):
        for i in range(n):
            case_id, _ = new_case(app, journalist, danger=i % 3 == 0)
            cw = caseworkers[i % 3]
            with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))

    with app.app_context():
        engine = db.engine
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def queries_for(path):
        client.get(path)  # warm: session touch, first-use work
        app.extensions["protect.listings"].clear()  # the list made afresh, not as kept
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            response = client.get(path)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert response.status_code == 200
        return len(statements), text(response)

    sign_in(client, supervisor)
    add(5)
    few, html = queries_for("/queue")
    assert html.count("/cases/") == 5
    add(35)
    many, html = queries_for("/queue")
    assert html.count("/cases/") == 40
    assert few == many, f"{few} queries for 5 cases, {many} for 40"
    assert many <= 10


def _queue_rows_of(html: str) -> list[str]:
    return re.findall(r"<tr>.*?</tr>", html.split("<tbody>")[1], re.S) if "<tbody>" in html else []


def test_queue_list_is_kept_until_something_it_shows_changes(app, client, make_account, journalist):
    """The rendered list is served again (no list statements) while the list edition holds; any
    change to a case, or to a staff account, makes the next look render it afresh."""
    cw, sup = make_account("caseworker"), make_account("supervisor")
    _, reference = new_case(app, journalist)
    with app.app_context():
        engine = db.engine
    statements = []

    def look() -> tuple[str, list[str]]:
        statements.clear()
        listen = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
        event.listen(engine, "before_cursor_execute", listen)
        try:
            html = text(client.get("/queue"))
        finally:
            event.remove(engine, "before_cursor_execute", listen)
        return html, [s for s in statements if "FROM cases" in s]

    sign_in(client, cw)
    first, listed = look()
    assert reference in first and len(listed) == 2  # the count and the page
    again, listed = look()
    assert listed == [] and _queue_rows_of(again) == _queue_rows_of(first)

    # A supervisor takes the case on for the caseworker: the list shows it assigned.
    case_id = first.split('href="/cases/')[1].split('"')[0]
    with_case(app, case_id, lambda s, c: service.assign(s, user(sup), c, user(cw)))
    changed, listed = look()
    assert len(listed) == 2 and f"<td>{cw.email}</td>" in changed
    # A staff account changing (a name the list shows) renders it afresh too.
    with app.app_context():
        edition = editions.current(db.session)
        user(cw).name = "Rosa Analista"
        db.session.commit()
        assert editions.current(db.session) == edition + 1
    renamed, listed = look()
    assert len(listed) == 2 and "<td>Rosa Analista</td>" in renamed


def test_whole_queue_page_is_kept_per_session_until_its_navigation_bar_changes(app, client, make_account,
                                                                               journalist):
    """A second look at the queue renders nothing and runs only the session's and the navigation
    bar's statements; a new notice, a message to flash or another session of the same person gets
    a page made for it."""
    from flask import template_rendered

    from protect.notify.service import notify_many

    cw = make_account("caseworker")
    case_id, reference = new_case(app, journalist)
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    with app.app_context():
        engine = db.engine
    statements, rendered = [], []

    def look(c):
        statements.clear()
        rendered.clear()
        listen = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
        event.listen(engine, "before_cursor_execute", listen)
        try:
            with template_rendered.connected_to(lambda sender, template, context: rendered.append(template.name),
                                                app):
                return text(c.get("/queue"))
        finally:
            event.remove(engine, "before_cursor_execute", listen)

    def token_works(c, html) -> bool:
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        response = c.post("/language", data={"csrf_token": token, "language": "en", "next": "/queue"})
        return response.status_code == 302

    sign_in(client, cw)
    first = look(client)
    assert rendered == ["cases/_queue_list.html", "cases/queue.html"] and reference in first
    again = look(client)
    assert again == first and rendered == []
    assert len(statements) == 2 and "login_sessions" in statements[0] and "notifications" in statements[1]
    assert token_works(client, again)

    # A notice for the caseworker: the bar's count is new, so is the page (its list still kept).
    with app.app_context():
        notify_many(db.session, [{"key": "test:1", "user_id": cw.id, "kind": "deadline_due_soon",
                                  "case_id": case_id, "data": {"reference": reference}}])
        db.session.commit()
    noticed = look(client)
    assert rendered == ["cases/queue.html"] and '<span class="count">1</span>' in noticed

    # A message waiting to be shown appears once, on a page made for it.
    with client.session_transaction() as browser:
        browser["_flashes"] = [("success", "Mensaje de prueba")]
    assert "Mensaje de prueba" in look(client) and rendered == ["cases/queue.html"]
    after = look(client)
    assert rendered == [] and after == noticed

    # The same person signed in elsewhere: a page with that session's own form token.
    other = app.test_client()
    assert login(other, cw, code_offset=1).status_code == 302  # a code is taken once
    theirs = look(other)
    assert "cases/queue.html" in rendered and token_works(other, theirs)


def test_queue_list_kept_is_the_readers_own_and_its_days_stay_true(app, client, make_account, journalist):
    cw, other = make_account("caseworker"), make_account("caseworker")
    case_id, reference = new_case(app, journalist)

    def two_days_waiting_almost_three(s, c):
        service.assign(s, user(cw), c, user(cw))
        c.submitted_at = datetime.now(timezone.utc) - timedelta(days=3) + timedelta(minutes=10)
    with_case(app, case_id, two_days_waiting_almost_three)
    sign_in(client, cw)
    html = text(client.get("/queue"))
    assert reference in html and "<td>2</td>" in html
    # Another caseworker, same address, same language: their own list, without the case.
    other_client = app.test_client()
    sign_in(other_client, other)
    assert reference not in text(other_client.get("/queue"))
    # Minutes later the kept list would still say 2 days: it is rendered again and says 3.
    app.extensions["protect.now"].advance(minutes=11)
    html = text(client.get("/queue"))
    assert reference in html and "<td>3</td>" in html and "<td>2</td>" not in html


# -- conflicts and refusals -------------------------------------------------------

def _in_assessment(app, journalist, cw):
    case_id, _ = new_case(app, journalist)
    def to_assessment(s, c):
        service.assign(s, user(cw), c, user(cw))
        service.triage(s, user(cw), c, decision="ordinary")
    with_case(app, case_id, to_assessment)
    return case_id


def test_stale_version_gives_409_keeps_what_was_typed_and_shows_the_current_state(
        app, client, make_account, journalist):
    cw, sup = make_account("caseworker"), make_account("supervisor")
    case_id = _in_assessment(app, journalist, cw)
    token = sign_in(client, cw)
    page = text(client.get(f"/cases/{case_id}"))
    seen = version_in(page, "assessment")
    # Meanwhile a supervisor changes the case.
    with_case(app, case_id, lambda s, c: service.assign(s, user(sup), c, user(cw)))
    response = client.post(f"/cases/{case_id}/act/assessment", data={
        "csrf_token": token, "assessment-version": seen, "assessment-level": "high",
        "assessment-factors": "Typed while someone else worked", "assessment-recommendation": "Escort now"})
    assert response.status_code == 409
    html = text(response)
    assert "changed by someone else meanwhile" in html
    assert "Typed while someone else worked" in html and "Escort now" in html
    assert "Current status: Risk assessment." in html
    assert status_of(app, case_id) == "risk_assessment"
    # The form now carries the current version: sending it again works.
    fresh = version_in(html, "assessment")
    assert fresh != seen
    response = client.post(f"/cases/{case_id}/act/assessment", data={
        "csrf_token": token, "assessment-version": fresh, "assessment-level": "high",
        "assessment-factors": "Typed while someone else worked", "assessment-recommendation": "Escort now"})
    assert response.status_code == 302
    assert status_of(app, case_id) == "board_decision"


def test_stale_version_when_the_step_is_no_longer_possible_keeps_the_text(app, client, make_account,
                                                                          journalist):
    cw, sup = make_account("caseworker"), make_account("supervisor")
    case_id = _in_assessment(app, journalist, cw)
    token = sign_in(client, cw)
    seen = version_in(text(client.get(f"/cases/{case_id}")), "assessment")
    with_case(app, case_id, lambda s, c: service.record_assessment(
        s, user(sup), c, level="ordinary", factors="f", recommendation="r"))
    response = client.post(f"/cases/{case_id}/act/assessment", data={
        "csrf_token": token, "assessment-version": seen, "assessment-level": "high",
        "assessment-factors": "My long analysis", "assessment-recommendation": "Mine"})
    assert response.status_code == 409
    html = text(response)
    assert "My long analysis" in html and "not possible in the case’s current state" in html
    assert "Current status: Awaiting the board" in html


def test_concurrent_flush_is_reported_as_a_conflict(app, client, make_account, journalist, monkeypatch):
    cw = make_account("caseworker")
    case_id = _in_assessment(app, journalist, cw)
    token = sign_in(client, cw)

    def lost_race(*args, **kwargs):
        raise StaleDataError("UPDATE statement on table 'cases' expected to update 1 row(s); 0 were matched.")
    monkeypatch.setattr(service, "record_assessment", lost_race)
    response = act(client, token, case_id, "assessment", level="high", factors="Kept text",
                   recommendation="r")
    assert response.status_code == 409
    assert "changed by someone else meanwhile" in text(response) and "Kept text" in text(response)


def test_invalid_transition_and_rule_refusals_show_a_clear_message(app, client, make_account, journalist):
    cw = make_account("caseworker")
    case_id = _in_assessment(app, journalist, cw)
    token = sign_in(client, cw)
    version = version_in(text(client.get(f"/cases/{case_id}")), "assessment")
    response = client.post(f"/cases/{case_id}/act/triage", data={
        "csrf_token": token, "triage-version": version, "triage-decision": "ordinary"})
    assert response.status_code == 422
    assert "This step is not possible while the case is “Risk assessment”." in text(response)
    assert status_of(app, case_id) == "risk_assessment"

    response = act(client, token, case_id, "assessment", level="high", factors="", recommendation="x")
    assert response.status_code == 422 and "Describe the risk factors." in text(response)

    assert act(client, token, case_id, "assessment", level="high", factors="f",
               recommendation="r").status_code == 302
    response = act(client, token, case_id, "decision", outcome="denied", reason="risk_not_confirmed",
                   decided_on=date.today().isoformat(), m_cameras="y", a_cameras="state")
    assert response.status_code == 422 and "A denied request has no measures." in text(response)
    response = act(client, token, case_id, "decision", outcome="granted", reason="risk_confirmed",
                   decided_on=(date.today() + timedelta(days=30)).isoformat(), m_cameras="y",
                   a_cameras="state")
    assert response.status_code == 422 and "cannot be in the future" in text(response)
    response = act(client, token, case_id, "decision", outcome="granted", reason="risk_confirmed",
                   decided_on=date.today().isoformat(), m_cameras="y", a_cameras="<script>")
    assert response.status_code == 422 and "<script>" not in text(response).split("</header>")[1].replace(
        "&lt;script&gt;", "")

    # Unknown action, unknown measure, unknown case.
    assert client.post(f"/cases/{case_id}/act/explode", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/cases/{case_id}/measures/{'0' * 32}", data={"csrf_token": token}).status_code == 404
    assert client.get(f"/cases/{'0' * 32}").status_code == 404
    assert client.get("/cases/not-an-id").status_code == 404


def test_measures_only_move_forward_through_the_form(app, client, make_account, journalist):
    cw = make_account("caseworker")
    case_id = _in_assessment(app, journalist, cw)
    def decide(s, c):
        service.record_assessment(s, user(cw), c, level="high", factors="f", recommendation="r")
        service.record_decision(s, user(cw), c, outcome="granted", reason="risk_confirmed",
                                decided_on=date.today(), measures=[("training", "private")])
        return c.measures[0].id
    measure_id = with_case(app, case_id, decide)
    token = sign_in(client, cw)
    prefix = f"m-{measure_id}"
    page = text(client.get(f"/cases/{case_id}"))
    response = client.post(f"/cases/{case_id}/measures/{measure_id}", data={
        "csrf_token": token, f"{prefix}-version": version_in(page, prefix), f"{prefix}-to": "active"})
    assert response.status_code == 302
    page = text(client.get(f"/cases/{case_id}"))
    response = client.post(f"/cases/{case_id}/measures/{measure_id}", data={
        "csrf_token": token, f"{prefix}-version": version_in(page, prefix), f"{prefix}-to": "requested"})
    assert response.status_code == 422 and "A measure moves forward only" in text(response)


# -- who may do what ----------------------------------------------------------------

def test_other_caseworker_gets_404_and_queue_caseworker_cannot_act(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist)
    cw, other = make_account("caseworker"), make_account("caseworker")
    token = sign_in(client, other)
    # Unassigned: any caseworker sees it (the queue) but cannot record steps.
    page = text(client.get(f"/cases/{case_id}"))
    assert "Take this request" in page and 'id="step-triage"' not in page
    response = client.post(f"/cases/{case_id}/act/triage", data={
        "csrf_token": token, "triage-version": "1", "triage-decision": "ordinary"})
    assert response.status_code == 403
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    for method, path in (("get", f"/cases/{case_id}"), ("post", f"/cases/{case_id}/act/triage"),
                         ("post", f"/cases/{case_id}/notes"), ("post", f"/cases/{case_id}/assign"),
                         ("post", f"/cases/{case_id}/messages")):
        response = getattr(client, method)(path, data={"csrf_token": token} if method == "post" else None)
        assert response.status_code == 404, (method, path, response.status_code)
    assert status_of(app, case_id) == "triage"


@pytest.mark.parametrize("role", ["donor", "admin", "journalist"])
def test_non_staff_are_refused_every_staff_url(app, client, make_account, journalist, role):
    case_id, _ = new_case(app, journalist, threat=True)
    with app.app_context():
        threat_id = db.session.execute(select(OnlineThreat.id)).scalar_one()
    # The case's own petitioner is refused the staff side too.
    account = journalist if role == "journalist" else make_account(role)
    token = sign_in(client, account)
    for path in ("/queue", f"/cases/{case_id}", f"/cases/{case_id}/evidence/{'0' * 32}"):
        assert client.get(path).status_code == 403, path
    for path in (f"/cases/{case_id}/act/triage", f"/cases/{case_id}/notes", f"/cases/{case_id}/messages",
                 f"/cases/{case_id}/assign", f"/cases/{case_id}/reveal", f"/cases/{case_id}/evidence",
                 f"/cases/{case_id}/threats/{threat_id}/report", f"/cases/{case_id}/measures/{'0' * 32}"):
        assert client.post(path, data={"csrf_token": token}).status_code == 403, path


def test_supervisor_reveals_identity_with_a_reason_once_and_audited(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist)
    sup = make_account("supervisor")
    token = sign_in(client, sup)
    page = text(client.get(f"/cases/{case_id}"))
    assert REAL_NAME not in page and "Reveal the real identity" in page
    response = client.post(f"/cases/{case_id}/reveal", data={"csrf_token": token, "reveal-reason": "short"})
    assert response.status_code == 422 and REAL_NAME not in text(response)
    assert "Explain in a sentence" in text(response)
    response = client.post(f"/cases/{case_id}/reveal", data={
        "csrf_token": token, "reveal-reason": "The state police need it to assign escorts."})
    assert response.status_code == 200
    assert REAL_NAME in text(response)
    assert "case.identity_revealed" in audit_actions(app)
    assert REAL_NAME not in text(client.get(f"/cases/{case_id}"))  # shown once


def test_caseworker_cannot_reveal(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist)
    cw = make_account("caseworker")
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    token = sign_in(client, cw)
    assert "Reveal the real identity" not in text(client.get(f"/cases/{case_id}"))
    response = client.post(f"/cases/{case_id}/reveal", data={
        "csrf_token": token, "reveal-reason": "I would like to know who she is."})
    assert response.status_code == 403
    assert REAL_NAME not in text(response)
    assert "case.identity_revealed" not in audit_actions(app)


def test_supervisor_assigns_and_reassigns(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist)
    cw1, cw2 = make_account("caseworker"), make_account("caseworker")
    token = sign_in(client, make_account("supervisor"))
    for target in (cw1, cw2):
        page = text(client.get(f"/cases/{case_id}"))
        response = client.post(f"/cases/{case_id}/assign", data={
            "csrf_token": token, "assign-version": version_in(page, "assign"), "assign-assignee": target.id})
        assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Case, case_id).assignee_id == cw2.id
    page = text(client.get(f"/cases/{case_id}"))
    response = client.post(f"/cases/{case_id}/assign", data={
        "csrf_token": token, "assign-version": version_in(page, "assign"), "assign-assignee": "nobody"})
    assert response.status_code == 422


# -- online threats and evidence ------------------------------------------------------

def test_platform_report_times_are_mexico_city_time_stored_as_utc(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist, threat=True)
    cw = make_account("caseworker")
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    with app.app_context():
        threat_id = db.session.execute(select(OnlineThreat.id)).scalar_one()
    token = sign_in(client, cw)
    prefix = f"r-{threat_id}"
    url = f"/cases/{case_id}/threats/{threat_id}/report"
    response = client.post(url, data={
        "csrf_token": token, f"{prefix}-reported_at": "2025-01-10T10:30", f"{prefix}-report_id": "X-123",
        f"{prefix}-outcome": "removed", f"{prefix}-responded_at": "2025-01-12T09:00",
        f"{prefix}-removed_at": "2025-01-12T09:05"})
    assert response.status_code == 302
    with app.app_context():
        threat = db.session.get(OnlineThreat, threat_id)
        assert threat.reported_at == datetime(2025, 1, 10, 16, 30, tzinfo=timezone.utc)
        assert threat.removed_at == datetime(2025, 1, 12, 15, 5, tzinfo=timezone.utc)
        assert threat.platform_report_id == "X-123" and threat.outcome == "removed"
    page = text(client.get(f"/cases/{case_id}"))
    assert 'value="2025-01-10T10:30"' in page  # shown back in Mexico City time
    response = client.post(url, data={
        "csrf_token": token, f"{prefix}-reported_at": "2025-01-10T10:30",
        f"{prefix}-responded_at": "2025-01-01T09:00"})
    assert response.status_code == 422 and "cannot answer before it was told" in text(response)
    response = client.post(url, data={"csrf_token": token, f"{prefix}-reported_at": "not a date"})
    assert response.status_code == 422


def test_evidence_upload_and_audited_download(app, client, make_account, journalist):
    case_id, _ = new_case(app, journalist)
    cw = make_account("caseworker")
    with_case(app, case_id, lambda s, c: service.assign(s, user(cw), c, user(cw)))
    token = sign_in(client, cw)
    content = b"%PDF-1.4 threat letter " * 5000
    response = client.post(f"/cases/{case_id}/evidence", data={
        "csrf_token": token, "evidence-files": [(io.BytesIO(content), 'carta amenaza ñ.pdf'),
                                                (io.BytesIO(b"second"), "b.txt")]},
        content_type="multipart/form-data")
    assert response.status_code == 302, text(response)
    page = text(client.get(f"/cases/{case_id}"))
    links = re.findall(rf'href="(/cases/{case_id}/evidence/[0-9a-f]{{32}})"', page)
    assert len(links) == 2
    download = client.get(links[0])
    assert download.status_code == 200
    assert download.data == content
    assert download.mimetype == "application/octet-stream"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert "filename*=UTF-8''carta%20amenaza%20%C3%B1.pdf" in disposition
    assert 'filename="carta_amenaza_n.pdf"' in disposition
    assert download.headers["Cache-Control"] == "no-store"
    assert "case.evidence_downloaded" in audit_actions(app)
    # Stored encrypted: the blob is not the file.
    with app.app_context():
        from protect.cases.models import Evidence
        from protect.crypto.uploads import blob_store
        blob_id = db.session.execute(select(Evidence.blob_id).where(Evidence.size == len(content))).scalar_one()
        with blob_store().open(blob_id) as raw:
            assert b"threat letter" not in raw.read()

    response = client.post(f"/cases/{case_id}/evidence", data={"csrf_token": token},
                           content_type="multipart/form-data")
    assert response.status_code == 422 and "Choose at least one file." in text(response)
    assert client.get(f"/cases/{case_id}/evidence/{'0' * 32}").status_code == 404


def test_attachment_header_is_safe_for_hostile_names():
    header = attachment_header('..\\../etc/"passwd"\r\nX-Evil: 1.pdf')
    assert "\r" not in header and "\n" not in header
    fallback = re.search(r'filename="([^"]*)"', header).group(1)
    assert re.fullmatch(r"[A-Za-z0-9._()-]+", fallback) and "/" not in fallback
    assert "filename*=UTF-8''" in header and "%2F" not in header  # separators dropped, not encoded
    assert 'filename="file"' in attachment_header("...")
    assert "filename*=UTF-8''%E5%A8%81%E8%83%81.txt" in attachment_header("威胁.txt")
    assert 'filename="txt"' in attachment_header("威胁.txt")


def test_pages_render_in_spanish_by_default(app, client, make_account, journalist):
    case_id, reference = new_case(app, journalist, danger=True, threat=True)
    assert login(client, make_account("supervisor")).status_code == 302
    for path in ("/queue", f"/cases/{case_id}"):
        response = client.get(path)
        assert response.status_code == 200, path
        html = text(response)
        assert '<html lang="es">' in html and reference in html and "⚠" in html


def test_stale_or_missing_version_field_asks_to_reload(app, client, make_account, journalist):
    cw = make_account("caseworker")
    case_id = _in_assessment(app, journalist, cw)
    token = sign_in(client, cw)
    response = client.post(f"/cases/{case_id}/act/assessment", data={
        "csrf_token": token, "assessment-level": "high", "assessment-factors": "Kept",
        "assessment-recommendation": "r"})
    assert response.status_code == 422
    assert "This form is out of date: reload the page." in text(response) and "Kept" in text(response)
