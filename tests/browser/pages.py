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
