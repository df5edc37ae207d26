"""Page objects for the browser tests.

Elements are found by their ``id``/``name`` (stable across languages: the UI is
Spanish by default and its catalogue changes under us) or by ARIA role within a
landmark. Every form field is additionally looked up through its <label>, so a
field that loses its label fails the tests.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import Locator, Page, expect


def labelled_field(page: Page, field_id: str) -> Locator:
    """The field with id ``field_id``, reached through its label's text."""
    label = page.locator(f'label[for="{field_id}"]')
    expect(label, f"field #{field_id} has no <label for>").to_have_count(1)
    text = label.inner_text().strip()
    assert text, f"the label of #{field_id} is empty"
    field = page.get_by_label(text, exact=True)
    expect(field, f"the label {text!r} does not name #{field_id}").to_have_id(field_id)
    return field


class BasePage:
    path: str = "/"

    def __init__(self, page: Page):
        self.page = page

    # -- navigation -----------------------------------------------------------
    def open(self):
        self.page.goto(self.path)
        return self

    @property
    def current_path(self) -> str:
        return urlsplit(self.page.url).path

    def expect_path(self, path: str | None = None):
        path = path or self.path
        expect(self.page).to_have_url(re.compile(rf"^[^?#]*//[^/]+{re.escape(path)}(\?.*)?$"))
        return self

    # -- structure shared by every page (templates/base.html) -----------------
    @property
    def html_lang(self) -> str | None:
        return self.page.locator("html").get_attribute("lang")

    @property
    def heading(self) -> str:
        return self.page.get_by_role("heading", level=1).inner_text().strip()

    def _main_form_button(self) -> Locator:
        # The page's own form is in <main>; the footer holds the language form.
        return self.page.get_by_role("main").locator("form").get_by_role("button")

    def switch_language(self, code: str):
        """Press the footer's language button (a plain POST form)."""
        self.page.get_by_role("contentinfo").locator(
            f'button[name="language"][value="{code}"]').click()
        self.page.wait_for_load_state()
        return self

    def language_button(self, code: str) -> Locator:
        return self.page.get_by_role("contentinfo").locator(
            f'button[name="language"][value="{code}"]')

    def scroll_width(self) -> int:
        return self.page.evaluate("document.documentElement.scrollWidth")


class LoginPage(BasePage):
    path = "/login"

    def expect_loaded(self):
        self.expect_path()
        expect(self.page.locator("#email")).to_be_visible()
        return self

    @property
    def email(self) -> Locator:
        return labelled_field(self.page, "email")

    @property
    def password(self) -> Locator:
        return labelled_field(self.page, "password")

    def submit(self, email: str, password: str) -> None:
        self.email.fill(email)
        self.password.fill(password)
        self._main_form_button().click()
        self.page.wait_for_load_state()


class SecondFactorPage(BasePage):
    path = "/login/code"

    def expect_loaded(self):
        self.expect_path()
        expect(self.page.locator("#code")).to_be_visible()
        return self

    @property
    def code(self) -> Locator:
        return labelled_field(self.page, "code")

    def submit(self, code: str) -> None:
        self.code.fill(code)
        self._main_form_button().click()
        self.page.wait_for_load_state()


class HomePage(BasePage):
    """A role's landing page (intake.my_requests, cases.queue, ...)."""

    HOMES = {"journalist": "/my/requests", "caseworker": "/queue", "supervisor": "/overview",
             "donor": "/reports/", "admin": "/admin/users"}

    def __init__(self, page: Page, role: str):
        super().__init__(page)
        self.role = role
        self.path = self.HOMES[role]

    def expect_loaded(self):
        self.expect_path()
        expect(self.page.get_by_role("heading", level=1)).to_have_count(1)
        expect(self.sign_out_button).to_be_visible()
        return self

    @property
    def nav(self) -> Locator:
        return self.page.get_by_role("banner").get_by_role("navigation")

    def nav_links(self) -> list[tuple[str, str]]:
        """(text, href) of every link in the header's navigation."""
        links = self.nav.get_by_role("link")
        return [(link.inner_text().strip(), link.get_attribute("href")) for link in links.all()]

    @property
    def sign_out_button(self) -> Locator:
        return self.page.get_by_role("banner").get_by_role("button")

    def sign_out(self) -> LoginPage:
        self.sign_out_button.click()
        self.page.wait_for_load_state()
        return LoginPage(self.page).expect_loaded()


def sign_in(page: Page, account) -> HomePage:
    """Sign ``account`` (tests.conftest.Account) in through the real forms."""
    login = LoginPage(page)
    if login.current_path != login.path:
        login.open()
    login.expect_loaded()
    login.submit(account.email, account.password)
    if account.totp_secret:
        second = SecondFactorPage(page).expect_loaded()
        second.submit(account.code())
    return HomePage(page, account.role).expect_loaded()


# -- the case workflow (issue 4): the journalist's request and the staff's case --------

REFERENCE = re.compile(r"PRT-[0-9A-Z]{4}-[0-9A-Z]{4}")


def follow(page: Page, target: Locator) -> None:
    """Click ``target`` (a submit button or a link) and wait for the page it leads to,
    so that nothing is then checked on the page being left."""
    with page.expect_navigation():
        target.click()


def expect_at(page: Page, path: str) -> None:
    """The page is at ``path``, whatever its query string and fragment (redirects add "#...")."""
    expect(page).to_have_url(re.compile(rf"^[^?#]*//[^/]+{re.escape(path)}(\?[^#]*)?(#.*)?$"))


def _case_id_from(page: Page, pattern: str) -> str:
    match = re.search(pattern, urlsplit(page.url).path)
    assert match, f"not a case address: {page.url}"
    return match.group(1)


class IntakePage(BasePage):
    """The journalist's five-step request (templates/intake/step1..5.html).

    Fields are reached by their ids (through their labels where the form has a
    <label for>), radio buttons and actions by name/value: none of this depends
    on the wording, which the Spanish catalogue may still change.
    """

    def __init__(self, page: Page, case_id: str | None = None):
        super().__init__(page)
        self.case_id = case_id

    @property
    def path(self) -> str:  # type: ignore[override]
        return f"/requests/{self.case_id}/step/{self.step_number or 1}"

    @classmethod
    def start(cls, page: Page) -> "IntakePage":
        """From /my/requests: press the "new request" button (a POST form)."""
        if urlsplit(page.url).path != HomePage.HOMES["journalist"]:
            page.goto(HomePage.HOMES["journalist"])
        follow(page, page.get_by_role("main").locator('form[action$="/requests/new"]').get_by_role("button"))
        intake = cls(page, _case_id_from(page, r"^/requests/([0-9a-f]{32})/step/1$"))
        return intake.expect_step(1)

    @property
    def step_number(self) -> int | None:
        match = re.search(r"/step/(\d)$", urlsplit(self.page.url).path)
        return int(match.group(1)) if match else None

    def expect_step(self, n: int):
        expect_at(self.page, f"/requests/{self.case_id}/step/{n}")
        # "Step n of 5", in whatever words: the two numbers are what must be right.
        expect(self.page.locator("#step-indicator")).to_have_text(re.compile(rf"\D{n}\D+5\D*$"))
        expect(self.page.locator("#form-errors")).to_have_count(0)
        return self

    @property
    def form(self) -> Locator:
        """The step's own form (the "remove" forms of added items are apart)."""
        return self.page.get_by_role("main").locator("form.stack")

    @property
    def form_errors(self) -> Locator:
        return self.page.locator("#form-errors")

    def _press(self, action: str | None = None) -> None:
        button = (self.form.locator(f'button[name="action"][value="{action}"]') if action
                  else self.form.get_by_role("button"))
        follow(self.page, button)

    # -- step 1 ---------------------------------------------------------------------
    def fill_who(self, *, name: str, contact: str, beneficiary: str = "journalist",
                 others_at_risk: str | None = None, gender: str | None = None):
        labelled_field(self.page, "name").fill(name)
        labelled_field(self.page, "contact").fill(contact)
        self.form.locator(f'input[type="radio"][name="beneficiary_type"][value="{beneficiary}"]').check()
        if gender:
            labelled_field(self.page, "gender").select_option(gender)
        if others_at_risk:
            labelled_field(self.page, "others_at_risk").fill(others_at_risk)
        self._press()
        return self.expect_step(2)

    # -- step 2 ---------------------------------------------------------------------
    def fill_work(self, *, state_code: str, outlet: str | None = None, journalism_kind: str | None = None,
                  municipality: str | None = None):
        if outlet:
            labelled_field(self.page, "outlet").fill(outlet)
        if journalism_kind:
            labelled_field(self.page, "journalism_kind").select_option(journalism_kind)
        labelled_field(self.page, "state_code").select_option(state_code)
        if municipality:
            labelled_field(self.page, "municipality").fill(municipality)
        self._press()
        return self.expect_step(3)

    # -- step 3 ---------------------------------------------------------------------
    def add_incident(self, *, occurred_on: str, kind: str, aggressor: str, channel: str,
                     narrative: str, place: str | None = None, files=None, go_on: bool = True):
        """One incident (``files``: paths or {"name", "mimeType", "buffer"} payloads);
        ``go_on`` presses Continue (add it and go to step 4) instead of "add"."""
        labelled_field(self.page, "occurred_on").fill(occurred_on)
        labelled_field(self.page, "kind").select_option(kind)
        labelled_field(self.page, "aggressor").select_option(aggressor)
        labelled_field(self.page, "channel").select_option(channel)
        if place:
            labelled_field(self.page, "place").fill(place)
        labelled_field(self.page, "narrative").fill(narrative)
        if files:
            labelled_field(self.page, "files").set_input_files(files)
        self._press("continue" if go_on else "add")
        return self.expect_step(4 if go_on else 3)

    # -- step 4 ---------------------------------------------------------------------
    def add_online_threat(self, *, platform: str, locator: str, files=None, go_on: bool = True):
        labelled_field(self.page, "platform").select_option(platform)
        labelled_field(self.page, "locator").fill(locator)
        if files:
            labelled_field(self.page, "files").set_input_files(files)
        self._press("continue" if go_on else "add")
        return self.expect_step(5 if go_on else 4)

    def skip_online_threats(self):
        self._press("continue")
        return self.expect_step(5)

    # -- step 5 ---------------------------------------------------------------------
    @property
    def missing(self) -> Locator:
        return self.page.locator("#missing")

    def review_files(self) -> list[str]:
        """The names of the files listed in the review (incidents' and threats' together)."""
        items = self.page.get_by_role("main").locator("ul.files > li")
        return [item.inner_text().split("(")[0].strip() for item in items.all()]

    def send(self, *, danger: str = "yes", consent: bool = True) -> "JournalistCasePage":
        """Answer the immediate-danger question (yes/no), consent, and send."""
        expect(self.missing).to_have_count(0)
        self.form.locator(f'input[type="radio"][name="danger"][value="{danger}"]').check()
        consent_box = self.form.locator("#consent")
        consent_box.set_checked(consent)
        self._press()
        return JournalistCasePage(self.page, self.case_id).expect_loaded()


class JournalistCasePage(BasePage):
    """A sent request as its journalist follows it (templates/intake/case.html)."""

    def __init__(self, page: Page, case_id: str):
        super().__init__(page)
        self.case_id = case_id
        self.path = f"/requests/{case_id}"

    def expect_loaded(self):
        expect_at(self.page, self.path)
        expect(self.status_heading).to_be_visible()
        return self

    @property
    def status_section(self) -> Locator:
        return self.page.locator('section[aria-labelledby="status"]')

    @property
    def status_heading(self) -> Locator:
        return self.page.locator("h2#status")

    @property
    def status_explanation(self) -> Locator:
        """The plain-words paragraph right under the status heading."""
        return self.status_section.locator("h2#status + p")

    @property
    def reference(self) -> str:
        """The reference in the facts list (the <dd> after the "Reference" <dt>)."""
        text = self.status_section.locator("dl.facts dd").first.inner_text().strip()
        assert REFERENCE.fullmatch(text), f"not a reference: {text!r}"
        return text

    @property
    def emergency_notice(self) -> Locator:
        return self.page.locator("#emergency")

    @property
    def flash(self) -> Locator:
        return self.page.get_by_role("main").get_by_role("status")

    @property
    def messages(self) -> Locator:
        """Every message of the thread, oldest first."""
        return self.page.locator("#messages-section ol.thread > li.message")

    def message_bodies(self) -> list[str]:
        return [b.inner_text().strip() for b in self.messages.locator("p.body").all()]

    @property
    def new_messages(self) -> Locator:
        return self.page.locator("#messages-section ol.thread > li.message.new")

    def send_message(self, body: str):
        labelled_field(self.page, "body").fill(body)
        follow(self.page, self.page.locator(
            f'#messages-section form[action$="/requests/{self.case_id}/messages"]').get_by_role("button"))
        return self.expect_loaded()


class QueuePage(BasePage):
    """The staff's queue (templates/cases/queue.html)."""

    path = "/queue"

    def expect_loaded(self):
        expect_at(self.page, self.path)
        expect(self.page.get_by_role("search")).to_be_visible()
        return self

    @property
    def rows(self) -> Locator:
        return self.page.get_by_role("main").locator("table tbody tr")

    def references(self) -> list[str]:
        return [link.inner_text().strip() for link in self.rows.locator("td:first-child a").all()]

    def row(self, reference: str) -> Locator:
        return self.rows.filter(has=self.page.get_by_role("link", name=reference, exact=True))

    def danger_mark(self, reference: str) -> Locator:
        return self.row(reference).locator(".danger")

    def filter(self, **values: str):
        """Set the GET filters by field id (stage, status, risk, danger, reference, sort) and apply."""
        form = self.page.get_by_role("search")
        for field_id, value in values.items():
            field = labelled_field(self.page, field_id)
            if field_id == "reference":
                field.fill(value)
            else:
                field.select_option(value)
        follow(self.page, form.get_by_role("button"))
        return self

    def open_case(self, reference: str) -> "StaffCasePage":
        follow(self.page, self.row(reference).get_by_role("link", name=reference, exact=True))
        case_id = _case_id_from(self.page, r"^/cases/([0-9a-f]{32})$")
        return StaffCasePage(self.page, case_id).expect_loaded()


class StaffCasePage(BasePage):
    """The staff's case page (templates/cases/case.html) and its workflow forms.

    Each workflow step is the form ``#step-<name>`` posted to
    /cases/<id>/act/<name>; its fields are named ``<name>-<field>``. Measures
    in the pickers are named by their catalogue code (``<name>-m_<code>``,
    authority ``<name>-a_<code>``).
    """

    def __init__(self, page: Page, case_id: str):
        super().__init__(page)
        self.case_id = case_id
        self.path = f"/cases/{case_id}"

    def expect_loaded(self):
        expect_at(self.page, self.path)
        expect(self.page.locator("#actions")).to_be_visible()
        return self

    # -- what the page shows --------------------------------------------------
    @property
    def facts(self) -> Locator:
        """The case's facts list: status, procedure, danger, risk level, ... (in this order)."""
        return self.page.get_by_role("main").locator("dl.facts").first

    def fact(self, n: int) -> Locator:
        return self.facts.locator("dd").nth(n)

    @property
    def status(self) -> Locator:
        return self.fact(0).locator("strong").first

    @property
    def procedure(self) -> Locator:
        return self.fact(1)

    @property
    def risk_level(self) -> Locator:
        return self.fact(3)

    @property
    def danger_mark(self) -> Locator:
        return self.page.locator("h1 .danger")

    @property
    def problem(self) -> Locator:
        return self.page.locator("#problem")

    @property
    def flash(self) -> Locator:
        return self.page.get_by_role("main").get_by_role("status")

    @property
    def timeline(self) -> Locator:
        return self.page.locator("#timeline ol.timeline > li")

    def step(self, name: str) -> Locator:
        return self.page.locator(f"form#step-{name}")

    def available_steps(self) -> list[str]:
        ids = [f.get_attribute("id") for f in self.page.locator("#actions form.step").all()]
        return [i.removeprefix("step-") for i in ids if i]

    def _submitted(self) -> "StaffCasePage":
        expect(self.problem, "the step was refused").to_have_count(0)
        self.expect_loaded()
        expect(self.flash).to_have_count(1)
        return self

    def _press(self, form: Locator) -> "StaffCasePage":
        follow(self.page, form.get_by_role("button"))
        return self._submitted()

    def _pick_measures(self, form: Locator, name: str, measures: dict[str, str]) -> None:
        for code, authority in measures.items():
            form.locator(f'input[type="checkbox"][name="{name}-m_{code}"]').check()
            form.locator(f'select[name="{name}-a_{code}"]').select_option(authority)

    # -- assignment -----------------------------------------------------------
    def take(self):
        """A caseworker takes an unassigned new request for themself."""
        follow(self.page, self.page.locator("#assignment form").get_by_role("button"))
        return self._submitted()

    # -- workflow steps -------------------------------------------------------
    def triage(self, decision: str = "extraordinary", reason: str | None = None):
        form = self.step("triage")
        form.locator(f'input[type="radio"][name="triage-decision"][value="{decision}"]').check()
        if reason:
            labelled_field(self.page, "triage-reason").select_option(reason)
        return self._press(form)

    def issue_urgent_measures(self, measures: dict[str, str]):
        """``measures``: catalogue code → implementing authority code."""
        form = self.step("urgent_measures")
        self._pick_measures(form, "urgent_measures", measures)
        return self._press(form)

    def urgent_measures_implemented(self):
        return self._press(self.step("urgent_implemented"))

    def record_assessment(self, *, level: str, factors: str, recommendation: str):
        form = self.step("assessment")
        labelled_field(self.page, "assessment-level").select_option(level)
        labelled_field(self.page, "assessment-factors").fill(factors)
        labelled_field(self.page, "assessment-recommendation").fill(recommendation)
        return self._press(form)

    def record_decision(self, *, outcome: str, reason: str, measures: dict[str, str],
                        decided_on: str | None = None):
        form = self.step("decision")
        labelled_field(self.page, "decision-outcome").select_option(outcome)
        labelled_field(self.page, "decision-reason").select_option(reason)
        if decided_on:
            labelled_field(self.page, "decision-decided_on").fill(decided_on)
        self._pick_measures(form, "decision", measures)
        return self._press(form)

    def communicate_decision(self):
        return self._press(self.step("communicate"))

    # -- measures -------------------------------------------------------------
    @property
    def measure_rows(self) -> Locator:
        return self.page.locator("#measures tbody tr")

    def measure_row(self, name: str, *, urgent: bool = False) -> Locator:
        """The row of the measure called ``name`` (as the catalogue names it in the
        page's language); decided measures unless ``urgent``."""
        rows = self.measure_rows.filter(has_text=name)
        marked = self.page.locator("td:first-child strong")
        rows = rows.filter(has=marked) if urgent else rows.filter(has_not=marked)
        expect(rows).to_have_count(1)
        return rows

    def measure_status(self, name: str, *, urgent: bool = False) -> Locator:
        return self.measure_row(name, urgent=urgent).locator("td").nth(2)

    def advance_measure(self, name: str, to: str, *, urgent: bool = False):
        row = self.measure_row(name, urgent=urgent)
        row.locator('select[name$="-to"]').select_option(to)
        follow(self.page, row.get_by_role("button"))
        return self._submitted()

    # -- messages -------------------------------------------------------------
    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages article.message")

    def send_message(self, body: str):
        labelled_field(self.page, "message-body").fill(body)
        follow(self.page, self.page.locator(
            f'#messages form[action$="/cases/{self.case_id}/messages"]').get_by_role("button"))
        return self._submitted()
