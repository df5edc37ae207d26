"""Where people see deadlines: my deadlines, the overview, the nav count, admin pages."""
from datetime import date, timedelta

import pytest

from protect.accounts.models import User
from protect.cases import service as cases
from protect.deadlines import service as deadlines
from protect.deadlines.calendar import TZ
from protect.deadlines.models import Closure, DeadlinePolicy
from protect.extensions import db, utcnow
from tests.conftest import csrf_token, login


def _case(app, journalist_id, caseworker_id=None, *, overdue=False, danger=False):
    with app.app_context():
        j = db.session.get(User, journalist_id)
        case = cases.start_request(db.session, j)
        cases.save_who(db.session, j, case, cases.WhoAtRisk("Ana", False, None, "x", "journalist", None, None))
        cases.save_work(db.session, j, case, outlet=None, journalism_kind=None, state_code="OAX", municipality=None)
        cases.add_incident(db.session, j, case, occurred_on=date.today(), kind="threat",
                           aggressor="unknown", channel="phone", place=None, narrative="Call")
        cases.submit(db.session, j, case, immediate_danger=danger, consent=True)
        if caseworker_id:
            cw = db.session.get(User, caseworker_id)
            cases.assign(db.session, cw, case, cw)
        db.session.commit()
        if overdue:  # as if the request had come in four hours ago
            for clock in deadlines.case_clocks(db.session, case):
                clock.started_at -= timedelta(hours=4)
                clock.warn_at -= timedelta(hours=4)
                clock.due_at -= timedelta(hours=4)
            db.session.commit()
            deadlines.sweep(db.session)
        return case.id, case.reference


def test_my_deadlines_and_nav_count(app, client, make_account):
    j, cw = make_account("journalist"), make_account("caseworker")
    _, late_ref = _case(app, j.id, cw.id, overdue=True)
    _, fresh_ref = _case(app, j.id, cw.id)
    login(client, cw)
    page = client.get("/deadlines", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert page.index(late_ref) < page.index(fresh_ref)  # overdue first
    assert "overdue by" in page and "due in" in page
    assert "1 overdue" in client.get("/queue", headers={"Accept-Language": "en"}).get_data(as_text=True)


def test_supervisor_overview(app, client, make_account):
    j, cw, sup = make_account("journalist"), make_account("caseworker"), make_account("supervisor")
    _, ref = _case(app, j.id, cw.id, overdue=True)
    login(client, sup)
    page = client.get("/overview", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert ref in page and cw.email in page and "Triage" in page


def test_notifications_page_marks_read(app, client, make_account):
    j, cw = make_account("journalist"), make_account("caseworker")
    _, ref = _case(app, j.id, cw.id, overdue=True)
    login(client, cw)
    page = client.get("/notifications", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert ref in page and 'class="unread"' in page
    assert 'class="unread"' not in client.get("/notifications").get_data(as_text=True)


def test_admin_adds_policy_version_and_closure(app, client, make_account):
    login(client, make_account("admin"))
    today = utcnow().astimezone(TZ).date()
    data = {"stage": "risk_assessment", "effective_from": (today + timedelta(days=1)).isoformat(),
            "start_events": "triaged[procedure=ordinary]", "stop_event": "assessment_done",
            "duration": "7", "unit": "business_days", "warn_percent": "30", "procedure": "any",
            "legal_basis": "Operator's agreement with the board"}
    r = client.post("/admin/deadlines", data=dict(data, csrf_token=csrf_token(client, "/admin/deadlines")))
    assert r.status_code == 302
    bad = client.post("/admin/deadlines", data=dict(data, start_events="<script>", csrf_token=csrf_token(client, "/admin/deadlines")))
    assert bad.status_code == 400
    r = client.post("/admin/closures", data={"day": "2026-12-28", "label": "Year-end closure",
                                             "csrf_token": csrf_token(client, "/admin/closures")})
    assert r.status_code == 302
    with app.app_context():
        assert db.session.query(DeadlinePolicy).filter_by(stage="risk_assessment", version=2).one().duration == 7
        assert db.session.get(Closure, date(2026, 12, 28)).label == "Year-end closure"
    r = client.post("/admin/closures/2026-12-28/remove", data={"csrf_token": csrf_token(client, "/admin/closures")})
    with app.app_context():
        assert db.session.get(Closure, date(2026, 12, 28)) is None


@pytest.mark.parametrize("role", ["journalist", "caseworker", "donor"])
def test_admin_pages_refused_to_others(client, make_account, role):
    login(client, make_account(role))
    assert client.get("/admin/deadlines").status_code == 403
    assert client.get("/admin/closures").status_code == 403


def test_moving_the_app_clock_moves_deadlines(app, client, make_account):
    """Time is injected: the test advances it instead of sleeping."""
    j, cw = make_account("journalist"), make_account("caseworker")
    _case(app, j.id, cw.id)
    login(client, cw)

    def wait(minutes):  # an active caseworker: a page every 20 minutes keeps the session alive
        for _ in range(minutes // 20):
            app.extensions["protect.now"].advance(minutes=20)
            assert client.get("/queue").status_code == 200
        with app.app_context():
            deadlines.sweep(db.session)
        return client.get("/deadlines", headers={"Accept-Language": "en"}).get_data(as_text=True)

    assert "badge-running" in wait(0)
    assert "badge-due_soon" in wait(140)
    page = wait(40)
    assert "badge-overdue" in page and "overdue by" in page and "1 overdue" in page


def test_case_page_shows_clocks_and_pause_resume(app, client, make_account):
    j, cw = make_account("journalist"), make_account("caseworker")
    case_id, _ = _case(app, j.id, cw.id)
    login(client, cw)
    page = client.get(f"/cases/{case_id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Internal target: the Law sets no term" in page and "version 1" in page and "due in" in page
    with app.app_context():
        clock_id = deadlines.case_clocks(db.session, db.session.get(cases.Case, case_id))[0].id
    token = csrf_token(client, f"/cases/{case_id}")
    r = client.post(f"/cases/{case_id}/clocks/{clock_id}/pause",
                    data={"pause-csrf_token": token, "pause-reason": "Waiting for the petitioner's ID"})
    assert r.status_code == 302
    page = client.get(f"/cases/{case_id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "badge-paused" in page and "Waiting for the petitioner&#39;s ID" in page
    r = client.post(f"/cases/{case_id}/clocks/{clock_id}/resume", data={"resume-csrf_token": token})
    assert "badge-running" in client.get(f"/cases/{case_id}").get_data(as_text=True)
    # Another caseworker cannot touch it.
    other = app.test_client()
    login(other, make_account("caseworker"))
    assert other.post(f"/cases/{case_id}/clocks/{clock_id}/pause",
                      data={"pause-csrf_token": csrf_token(other, "/queue"), "pause-reason": "x"}).status_code == 404


def test_journalist_sees_the_next_deadline_in_plain_words(app, client, make_account):
    j, cw = make_account("journalist"), make_account("caseworker")
    case_id, _ = _case(app, j.id, cw.id)
    login(client, j)
    page = client.get(f"/requests/{case_id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "By law, this step (triage) must be done by" in page and "due in 2 h" in page
