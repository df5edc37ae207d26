"""Issue 4, item 9, in a real Chromium: from a journalist's request to granted measures.

A journalist on a phone-sized screen, with JavaScript disabled and the UI in
Spanish, files a request in five steps (an incident with an evidence file, an
online threat with a screenshot, immediate danger); a caseworker (in English)
finds it at the top of the queue, takes it, triages it as extraordinary,
records urgent measures, the risk assessment, the board's decision and the
implementation of two measures, and writes to the journalist; the journalist
then reads the new status, in plain Spanish, and the message.

The journalist's pages are located by ids/names and checked against the app's
own catalogue in Spanish (the translations are still being filled in), never
against Spanish words written here.

Run: .venv/bin/python -m pytest tests/browser/test_case_journey.py -q -x
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from flask_babel import force_locale
from playwright.sync_api import expect
from sqlalchemy import select

from protect.accounts.models import User
from protect.cases import codes
from protect.cases import service as cases
from protect.cases.models import Case
from protect.extensions import db

from .conftest import TIMEOUT_MS
from .pages import REFERENCE, HomePage, IntakePage, JournalistCasePage, QueuePage, sign_in

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
EVIDENCE = {"name": "amenaza.jpg", "mimeType": "image/jpeg", "buffer": JPEG}
SCREENSHOT = {"name": "captura-x.png", "mimeType": "image/png", "buffer": PNG}
MESSAGE = "Hola, soy su caseworker. Sus medidas están activas; el botón de asistencia ya funciona."

URGENT = {"escort": "federal"}                              # catalogue code → authority
GRANTED = {"panic_button": "state", "patrols": "municipal"}
NAMES_EN = {"escort": "Escort", "panic_button": "Panic button", "patrols": "Police patrols"}


def in_locale(app, locale: str, text) -> str:
    """``text`` (a lazy catalogue string) as the app renders it in ``locale``."""
    with app.test_request_context(), force_locale(locale):
        return str(text)


def older_request(app, journalist) -> str:
    """Someone else's request, two days old and not in immediate danger; its reference."""
    with app.app_context():
        j = db.session.get(User, journalist.id)
        case = cases.start_request(db.session, j)
        cases.save_who(db.session, j, case, cases.WhoAtRisk(
            name="Pedro", pseudonymous=False, real_identity=None, contact="+52 744 000 0000",
            beneficiary_type="journalist", gender=None, others_at_risk=None))
        cases.save_work(db.session, j, case, outlet=None, journalism_kind=None, state_code="VER",
                        municipality=None)
        cases.add_incident(db.session, j, case, occurred_on=date.today() - timedelta(days=10),
                           kind="surveillance", aggressor="unknown", channel="in_person", place=None,
                           narrative="A car parked outside every night.")
        cases.submit(db.session, j, case, immediate_danger=False, consent=True)
        case.submitted_at = datetime.now(timezone.utc) - timedelta(days=2)
        db.session.commit()
        return case.reference


class Watch:
    """What a browser context does that it should not: requests to another host,
    failed or refused requests, console errors (CSP violations included), page errors."""

    def __init__(self, context, netloc: str):
        self.netloc = netloc
        self.requests: list[str] = []
        self.problems: list[str] = []
        context.on("request", self._request)
        context.on("requestfailed", lambda r: self.problems.append(f"failed: {r.method} {r.url} {r.failure}"))
        context.on("response", self._response)
        context.on("console", self._console)
        context.on("weberror", lambda e: self.problems.append(f"page error: {e.error}"))

    def _request(self, request):
        self.requests.append(request.url)
        parts = urlsplit(request.url)
        if parts.scheme == "data":
            return
        if parts.scheme not in ("http", "https") or parts.netloc != self.netloc:
            self.problems.append(f"request to another host: {request.method} {request.url}")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def _console(self, message):
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(f"console {message.type}: {message.text}")


def new_context(browser, live_server, **options):
    ctx = browser.new_context(base_url=live_server.url, **options)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    return ctx


def fits(page_object) -> None:
    width = page_object.scroll_width()
    assert width <= PHONE["width"], f"{page_object.page.url} is {width} px wide on a phone"


def test_request_to_granted_measures_and_back_to_the_journalist(browser, live_server, make_account):
    app = live_server.app
    journalist, other, caseworker = (make_account(r) for r in ("journalist", "journalist", "caseworker"))
    older = older_request(app, other)
    es = {key: in_locale(app, "es", text) for key, text in {
        "received": codes.STATUSES["received"], "active": codes.STATUSES["active"],
        "active_explained": codes.STATUS_EXPLAINED["active"]}.items()}

    j_ctx = new_context(browser, live_server, java_script_enabled=False, viewport=PHONE, locale="es-MX")
    cw_ctx = new_context(browser, live_server, locale="en-US")
    try:
        watch = Watch(j_ctx, live_server.netloc)
        probe = j_ctx.new_page()  # JavaScript really is off in the journalist's browser
        probe.set_content("<title>off</title><script>document.title = 'on'</script>")
        assert probe.title() == "off"
        probe.close()
        j_page = j_ctx.new_page()

        # -- the journalist files the request, in five steps --------------------------------
        home = sign_in(j_page, journalist)
        assert home.html_lang == "es"
        intake = IntakePage.start(j_page)
        fits(intake)
        intake.fill_who(name="Marisol", contact="Signal +52 55 1234 5678", beneficiary="journalist",
                        others_at_risk="Mi hermano, que trabaja conmigo.")
        intake.fill_work(outlet="Noticias del Puerto", journalism_kind="digital", state_code="GRO",
                         municipality="Acapulco")
        fits(intake)
        intake.add_incident(occurred_on=(date.today() - timedelta(days=2)).isoformat(), kind="threat",
                            aggressor="criminal_group", channel="messaging", place="Afuera de mi casa",
                            narrative="Me mandaron una foto de mi casa con un mensaje de muerte.",
                            files=[EVIDENCE])
        intake.add_online_threat(platform="x", locator="@amenazas_gro", files=[SCREENSHOT])
        fits(intake)
        assert sorted(intake.review_files()) == sorted([EVIDENCE["name"], SCREENSHOT["name"]])
        mine = intake.send(danger="yes", consent=True)

        reference = mine.reference
        assert REFERENCE.fullmatch(reference)
        expect(mine.flash).to_contain_text(reference)
        expect(mine.emergency_notice).to_be_visible()
        expect(mine.emergency_notice).to_have_attribute("role", "alert")
        expect(mine.emergency_notice).to_contain_text("911")
        expect(mine.status_heading).to_contain_text(es["received"])
        expect(mine.messages).to_have_count(0)
        fits(mine)

        # -- the caseworker, in English, takes it from the top of the queue -------------------
        cw_page = cw_ctx.new_page()
        sign_in(cw_page, caseworker)
        queue = QueuePage(cw_page).expect_loaded()
        assert queue.references() == [reference, older], "immediate danger first, then oldest"
        expect(queue.danger_mark(reference)).to_have_count(1)
        expect(queue.danger_mark(older)).to_have_count(0)
        expect(queue.row(reference)).to_contain_text("Nobody yet")

        staff = queue.open_case(reference)
        expect(staff.danger_mark).to_be_visible()
        expect(staff.status).to_have_text("Received")
        expect(cw_page.locator("#evidence tbody tr")).to_have_count(2)
        for item in (EVIDENCE, SCREENSHOT):
            expect(cw_page.locator("#evidence").get_by_role("link", name=item["name"])).to_have_count(1)
        expect(cw_page.locator("#threats")).to_contain_text("@amenazas_gro")
        # The evidence was encrypted on upload; it comes back as it was sent.
        with cw_page.expect_download() as download:
            cw_page.locator("#evidence").get_by_role("link", name=EVIDENCE["name"]).click()
        assert download.value.suggested_filename == EVIDENCE["name"]
        with open(download.value.path(), "rb") as f:
            assert f.read() == JPEG

        staff.take()
        expect(staff.status).to_have_text("In triage")
        expect(staff.flash).to_contain_text("Assigned to")

        staff.triage("extraordinary")
        expect(staff.status).to_have_text("Urgent measures")
        expect(staff.procedure).to_have_text("Extraordinary")

        staff.issue_urgent_measures(URGENT)
        expect(staff.measure_status(NAMES_EN["escort"], urgent=True)).to_have_text("Requested from the authority")
        staff.urgent_measures_implemented()
        expect(staff.status).to_have_text("Risk assessment")
        expect(staff.measure_status(NAMES_EN["escort"], urgent=True)).to_have_text("Implemented")

        staff.record_assessment(level="high", factors="Death threat with a photo of her home; "
                                "criminal group active in the area.",
                                recommendation="Panic button and police patrols.")
        expect(staff.status).to_have_text("Awaiting the board's decision")
        expect(staff.risk_level).to_have_text("High")

        staff.record_decision(outcome="granted", reason="risk_confirmed", measures=GRANTED)
        expect(staff.status).to_have_text("Measures being implemented")
        for code, authority in GRANTED.items():
            row = staff.measure_row(NAMES_EN[code])
            expect(row.locator("td").nth(1)).to_have_text(in_locale(app, "en", codes.AUTHORITIES[authority]))
            expect(row.locator("td").nth(2)).to_have_text("Decided")

        staff.communicate_decision()
        assert "communicate" not in staff.available_steps()
        for code in GRANTED:
            expect(staff.measure_status(NAMES_EN[code])).to_have_text("Requested from the authority")

        first, second = list(GRANTED)
        staff.advance_measure(NAMES_EN[first], "implemented")
        expect(staff.measure_status(NAMES_EN[first])).to_have_text("Implemented")
        expect(staff.status).to_have_text("Measures being implemented")  # one measure is still pending
        staff.advance_measure(NAMES_EN[second], "implemented")
        expect(staff.measure_status(NAMES_EN[second])).to_have_text("Implemented")
        expect(staff.status).to_have_text("Protected")

        staff.send_message(MESSAGE)
        expect(staff.messages).to_have_count(1)
        expect(staff.messages.first).to_contain_text(MESSAGE)
        expect(staff.messages.first).to_contain_text("not read yet")

        timeline = staff.timeline
        for label in ("Request submitted", "Assigned", "Triage decided", "Urgent measures issued",
                      "Urgent measures implemented", "Risk assessment recorded", "Board decision recorded",
                      "Decision sent to the implementing authorities", "Measure implemented",
                      "Every measure implemented: protection in place", "Message sent"):
            expect(timeline.filter(has_text=label).first).to_be_visible()

        # -- the journalist reads the new status and the message ------------------------------
        j_page.goto(HomePage.HOMES["journalist"])
        j_page.get_by_role("main").get_by_role("link", name=reference, exact=True).click()
        mine = JournalistCasePage(j_page, mine.case_id).expect_loaded()
        expect(mine.status_heading).to_contain_text(es["active"])
        expect(mine.status_explanation).to_have_text(es["active_explained"])
        expect(mine.emergency_notice).to_have_count(0)  # the notice is for a request still waiting
        files = mine.page.locator('section[aria-labelledby="what-happened"] ul.files a')
        expect(files).to_have_text([EVIDENCE["name"], SCREENSHOT["name"]])
        expect(mine.messages).to_have_count(1)
        expect(mine.new_messages).to_have_count(1)
        assert mine.message_bodies() == [MESSAGE]
        assert mine.html_lang == "es"
        fits(mine)

        # ... and the caseworker sees that it was read.
        cw_page.reload()
        expect(staff.messages.first).not_to_contain_text("not read yet")

        with app.app_context():
            case = db.session.execute(select(Case).where(Case.reference == reference)).scalar_one()
            assert (case.status, case.procedure, case.immediate_danger, case.risk_level) == \
                ("active", "extraordinary", True, "high")
            assert sorted((m.kind, m.authority, m.urgent, m.status) for m in case.measures) == sorted(
                [(k, a, True, "implemented") for k, a in URGENT.items()]
                + [(k, a, False, "implemented") for k, a in GRANTED.items()])
            assert case.assignee_id == caseworker.id
            assert len(case.evidence) == 2 and all(e.uploaded_by_id == journalist.id for e in case.evidence)

        # Nothing the journalist's browser asked for went anywhere but this server.
        assert watch.requests, "the request listener saw nothing"
        assert all(urlsplit(url).netloc == live_server.netloc for url in watch.requests)
        assert not watch.problems, "\n".join(watch.problems)
    finally:
        j_ctx.close()
        cw_ctx.close()
