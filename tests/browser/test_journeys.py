"""Each role's journey through a real Chromium: sign in, land home, sign out.

Run: .venv/bin/python -m pytest tests/browser -q -x
"""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from .pages import HomePage, LoginPage, SecondFactorPage, labelled_field, sign_in

pytestmark = pytest.mark.browser

HOMES = HomePage.HOMES
# Links in the header's navigation, by role (templates/base.html).
NAV = {
    "journalist": {"/my/requests", "/vault/", "/notifications", "/account"},
    "caseworker": {"/queue", "/deadlines", "/staff/vault/", "/notifications", "/account"},
    "supervisor": {"/overview", "/queue", "/reports/", "/staff/vault/", "/notifications", "/account"},
    "donor": {"/reports/", "/notifications", "/account"},
    "admin": {"/admin/users", "/admin/audit/", "/admin/deadlines", "/admin/closures", "/notifications",
              "/account"},
}
STAFF = {"caseworker", "supervisor", "admin"}


@pytest.mark.parametrize("role", list(HOMES))
def test_role_signs_in_lands_home_and_signs_out(page, live_server, make_account, role):
    account = make_account(role)
    assert bool(account.totp_secret) == (role in STAFF)

    page.goto("/")
    login = LoginPage(page).expect_loaded()
    assert login.html_lang == "es"

    home = sign_in(page, account)
    assert home.current_path == HOMES[role]
    assert home.heading
    assert {href for _text, href in home.nav_links()} == NAV[role]
    assert all(text for text, _href in home.nav_links())

    # The front door now sends the signed-in user home.
    page.goto("/")
    home.expect_loaded()

    home.sign_out()
    expect(page.get_by_role("status")).to_have_count(1)  # "you have signed out"
    # The back button does not bring the signed-in page back (Cache-Control: no-store) ...
    page.go_back()
    LoginPage(page).expect_loaded()
    # ... and neither does typing its address.
    page.goto(HOMES[role])
    LoginPage(page).expect_loaded()


class Watch:
    """Everything a page reports that would mean a broken or leaky page."""

    def __init__(self, page, live_server):
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.netloc = live_server.netloc
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("request", self._request)

    def _console(self, message):
        text = f"console {message.type}: {message.text} ({message.location.get('url')})"
        if "Content Security Policy" in message.text or message.type == "error":
            self.problems.append(text)

    def _request(self, request):
        self.requests.append(request.url)
        parts = urlsplit(request.url)
        if parts.scheme == "data":
            return
        if parts.scheme not in ("http", "https") or parts.netloc != self.netloc:
            self.problems.append(f"request to another host: {request.method} {request.url}")


def _visit(page, path: str):
    response = page.goto(path)
    assert response is not None and response.ok, f"{path}: {response and response.status}"
    assert "default-src 'none'" in (response.headers.get("content-security-policy") or ""), path
    assert urlsplit(page.url).path == path
    expect(page.get_by_role("heading", level=1)).to_have_count(1)


def test_pages_have_no_csp_violation_error_or_foreign_request(page, live_server, make_account):
    watch = Watch(page, live_server)
    accounts = {role: make_account(role) for role in HOMES}
    visited = []
    for role, account in accounts.items():
        _visit(page, "/login")
        login = LoginPage(page).expect_loaded()
        login.submit(account.email, account.password)
        if account.totp_secret:
            second = SecondFactorPage(page).expect_loaded()
            visited.append(second.path)
            second.submit(account.code())
        home = HomePage(page, role).expect_loaded()
        visited.append(home.path)
        pages = ["/account"]
        if role == "admin":
            pages += ["/admin/users/new", "/admin/audit/"]
        pages.append("/account/password")
        for path in pages:
            _visit(page, path)
            visited.append(path)
        # Still on /account/password: every field there is named by its label.
        for field_id in ("current", "new", "confirm"):
            labelled_field(page, field_id)
        home.sign_out()
        visited.append("/login")
    assert set(HOMES.values()) | {"/login/code", "/admin/users/new", "/admin/audit/"} <= set(visited)
    assert watch.requests, "the request listener saw nothing"
    assert not watch.problems, "\n".join(watch.problems)


def test_pages_log_no_console_error(page, live_server):
    watch = Watch(page, live_server)
    LoginPage(page).open().expect_loaded()
    page.wait_for_load_state("networkidle")
    assert not watch.problems, "\n".join(watch.problems)


def test_console_watch_catches_a_csp_violation(page, live_server):
    """The watcher above is not blind: an off-site image breaks the CSP."""
    watch = Watch(page, live_server)
    LoginPage(page).open().expect_loaded()
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("""() => {
            const img = document.createElement('img');
            img.src = 'http://other.invalid/pixel.png';
            document.body.appendChild(img);
        }""")
    assert any("Content Security Policy" in p for p in watch.problems)


def test_no_horizontal_scroll_at_360px(page, live_server, make_account):
    page.set_viewport_size({"width": 360, "height": 740})
    login = LoginPage(page).open().expect_loaded()
    assert login.scroll_width() <= 360, f"login page is {login.scroll_width()} px wide"
    home = sign_in(page, make_account("journalist"))
    assert home.scroll_width() <= 360, f"journalist home is {home.scroll_width()} px wide"


def test_journalist_switches_language_to_english(page, live_server, make_account):
    home = sign_in(page, make_account("journalist"))
    assert home.html_lang == "es"
    expect(home.language_button("es")).to_have_attribute("aria-current", "true")

    home.switch_language("en")

    expect(page.locator("html")).to_have_attribute("lang", "en")
    home.expect_loaded()  # back on the page it was sent from
    expect(home.language_button("en")).to_have_attribute("aria-current", "true")
    expect(home.language_button("es")).not_to_have_attribute("aria-current", "true")
    # The choice is the account's: it survives a reload despite Accept-Language es-MX.
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "en")
