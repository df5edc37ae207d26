"""Issue 5 in a real browser: a clock turns due soon, then overdue, as the test
moves the app's time; the badge counts it; the supervisor sees the escalation."""
from datetime import date

import pytest
from playwright.sync_api import expect

from protect.accounts.models import User
from protect.cases import service as cases
from protect.deadlines import service as deadlines
from protect.extensions import db
from tests.browser.pages import sign_in

pytestmark = pytest.mark.browser


def _assigned_case(app, journalist, caseworker) -> str:
    with app.app_context():
        j, cw = db.session.get(User, journalist.id), db.session.get(User, caseworker.id)
        case = cases.start_request(db.session, j)
        cases.save_who(db.session, j, case, cases.WhoAtRisk("Ana", False, None, "x", "journalist", None, None))
        cases.save_work(db.session, j, case, outlet=None, journalism_kind=None, state_code="GRO", municipality=None)
        cases.add_incident(db.session, j, case, occurred_on=date.today(), kind="threat",
                           aggressor="unknown", channel="phone", place=None, narrative="A call")
        cases.submit(db.session, j, case, immediate_danger=False, consent=True)
        cases.assign(db.session, cw, case, cw)
        db.session.commit()
        return case.reference


def test_clock_turns_due_soon_then_overdue_and_escalates(browser, live_server, make_account):
    app = live_server.app
    journalist, caseworker, supervisor = (make_account(r) for r in ("journalist", "caseworker", "supervisor"))
    reference = _assigned_case(app, journalist, caseworker)
    ctx = browser.new_context(locale="en-US", base_url=live_server.url)
    page = ctx.new_page()
    sign_in(page, caseworker)

    def wait(minutes: int):
        """Time passes for an active caseworker (a page every 20 minutes), then the sweep runs."""
        for _ in range(minutes // 20):
            app.extensions["protect.now"].advance(minutes=20)
            page.goto("/queue")
        with app.app_context():
            deadlines.sweep(db.session)
        page.goto("/deadlines")

    wait(0)
    row = page.locator("tr", has_text=reference)
    expect(row.locator(".badge")).to_have_text("Running")
    wait(140)
    expect(row.locator(".badge")).to_have_text("Due soon")
    expect(page.get_by_role("navigation", name="Main menu")).not_to_contain_text("overdue")
    wait(60)
    expect(row.locator(".badge")).to_have_text("Overdue")
    expect(row).to_contain_text("overdue by")
    expect(page.get_by_role("navigation", name="Main menu")).to_contain_text("1 overdue")
    ctx.close()

    # An hour later the clock is still overdue: the supervisors are told.
    app.extensions["protect.now"].advance(hours=1)
    with app.app_context():
        assert deadlines.sweep(db.session).escalated == 1
    ctx = browser.new_context(locale="en-US", base_url=live_server.url)
    page = ctx.new_page()
    sign_in(page, supervisor)
    expect(page.get_by_role("navigation", name="Main menu")).to_contain_text("1 overdue")
    page.goto("/notifications")
    expect(page.locator("main")).to_contain_text(f"Escalated: a deadline is still overdue: Triage, case {reference}")
    page.goto("/overview")
    expect(page.locator("main")).to_contain_text(reference)
    ctx.close()
