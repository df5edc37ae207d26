"""Response headers and HTML hygiene on every page each role can reach.

Every page answers with the strict CSP, nosniff, same-origin referrers, a
Permissions-Policy and ``Cache-Control: no-store``; its HTML has no inline
script or style, no event-handler attributes and no URL of another host
(the app must work over Tor with no third-party requests). The session
cookie is HttpOnly, SameSite=Lax, and Secure behind https.
"""
from __future__ import annotations

from collections import deque
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import urljoin, urlsplit

import pytest
from flask import url_for

from protect.accounts import service
from protect.extensions import db
from protect.security.access import allowed
from tests.conftest import csrf_token, login, make_app

EXPECTED_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ROLES = ("journalist", "caseworker", "supervisor", "donor", "admin")
HOST = "localhost"  # the test client's host
URL_ATTRIBUTES = {"src", "href", "action", "formaction", "srcset", "poster", "data", "background",
                  "cite", "longdesc", "manifest", "ping", "xlink:href", "icon", "content-url"}
MAX_PAGES = 80

# Markup that a careless template would turn into script, style or an outside request.
HOSTILE_NAME = ('<script>alert(1)</script><style>body{}</style>'
                '<img src="https://evil.example/x.png" onerror="alert(2)" style="x">')
HOSTILE_EMAIL = '"onmouseover="alert(3)"<script>x</script>@example.org'


# --------------------------------------------------------------------------- checks

def assert_secure_headers(response, what: str):
    h = response.headers
    assert h.get("Content-Security-Policy") == EXPECTED_CSP, f"{what}: CSP {h.get('Content-Security-Policy')!r}"
    assert h.get("X-Content-Type-Options") == "nosniff", what
    assert h.get("Referrer-Policy") == "same-origin", what
    permissions = h.get("Permissions-Policy", "")
    assert permissions.strip(), f"{what}: no Permissions-Policy"
    for feature in ("camera=()", "microphone=()", "geolocation=()"):
        assert feature in permissions, f"{what}: Permissions-Policy lacks {feature}"


def assert_no_store(response, what: str):
    directives = {d.strip().lower() for d in response.headers.get("Cache-Control", "").split(",")}
    assert "no-store" in directives, f"{what}: Cache-Control {response.headers.get('Cache-Control')!r}"
    assert "public" not in directives, what


class _Hygiene(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._check(tag, attrs)

    def handle_startendtag(self, tag, attrs):
        self._check(tag, attrs)
        if tag == "script":
            self._in_script = False

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append(f"inline script content {data.strip()[:60]!r}")

    def _check(self, tag, attrs):
        names = {name.lower(): value for name, value in attrs}
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("<script> without src")
        if tag == "meta" and (names.get("http-equiv") or "").lower() == "refresh":
            self.problems.append("meta refresh")
        for name, value in attrs:
            name = name.lower()
            if name == "style":
                self.problems.append(f"style= attribute on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"{name}= event handler on <{tag}>")
            if name in URL_ATTRIBUTES and value is not None:
                urls = [part.strip().split(" ")[0] for part in value.split(",")] \
                    if name in ("srcset", "ping") else [value.strip()]
                for url in urls:
                    problem = _foreign(tag, name, url)
                    if problem:
                        self.problems.append(problem)
                if tag == "a" and name == "href":
                    self.links.append(value)


def _foreign(tag: str, attribute: str, url: str) -> str | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "data" and tag == "img" and attribute == "src":
        return None  # allowed by img-src 'self' data:
    if scheme and scheme not in ("http", "https"):
        return f"{attribute}={url!r} on <{tag}>: scheme {scheme}"
    if parts.netloc and parts.netloc.lower() != HOST:
        return f"{attribute}={url!r} on <{tag}>: another host"
    return None


def assert_clean_html(response, what: str) -> list[str]:
    """Checks the page; returns the href of its links."""
    assert response.mimetype == "text/html", what
    body = response.get_data(as_text=True)
    parser = _Hygiene()
    parser.feed(body)
    parser.close()
    assert not parser.problems, f"{what}: {parser.problems}"
    assert "javascript:" not in body.lower(), f"{what}: javascript: URL"
    assert "<html lang=" in body, f"{what}: no document language"
    return parser.links


def check_page(response, what: str) -> list[str]:
    assert response.status_code < 500, f"{what}: {response.status_code}"
    assert_secure_headers(response, what)
    if response.mimetype == "text/css":
        return []  # static files: long cache is fine, they hold nothing personal
    assert_no_store(response, what)
    if response.mimetype == "text/html":
        return assert_clean_html(response, what)
    return []


# --------------------------------------------------------------------------- walking

def _who(role):
    return SimpleNamespace(is_authenticated=role is not None, role=role)


def _start_urls(app, role, sample_user_id: str) -> list[str]:
    urls = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            values = {"filename": "protect.css", "user_id": sample_user_id}
            if "GET" not in rule.methods or not allowed(rule.endpoint, _who(role)) \
                    or set(rule.arguments) - set(values):
                continue  # pages of particular objects are reached through links
            urls.append(url_for(rule.endpoint, **{k: values[k] for k in rule.arguments}))
    return sorted(urls)


def crawl(app, client, role, sample_user_id: str) -> set[str]:
    """GET every page the policy opens to ``role``, then every same-host link
    found on them (filters, pagers, user pages...); checks each answer."""
    queue = deque(_start_urls(app, role, sample_user_id))
    seen: set[str] = set(queue)
    html_pages = set()
    while queue:
        url = queue.popleft()
        what = f"{role or 'anonymous'} GET {url}"
        response = client.get(url)
        links = check_page(response, what)
        if response.mimetype == "text/html" and response.status_code == 200:
            html_pages.add(urlsplit(url).path)
        targets = list(links)
        if response.status_code in (301, 302, 303) and response.location:
            targets.append(response.location)
        for link in targets:
            absolute = urljoin(url, link)
            parts = urlsplit(absolute)
            if (parts.netloc and parts.netloc != HOST) or parts.path.startswith("/static/"):
                continue
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            if target not in seen and len(seen) < MAX_PAGES:
                seen.add(target)
                queue.append(target)
    return html_pages


def _hostile_user(app):
    with app.app_context():
        user, _ = service.create_user(db.session, None, email=HOSTILE_EMAIL, role="journalist",
                                      password="correct horse battery hostile", name=HOSTILE_NAME)
        db.session.commit()
        return user.id


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("role", ROLES)
def test_every_page_of_each_role(app, client, make_account, role):
    hostile_id = _hostile_user(app)
    account = make_account(role)
    response = login(client, account)
    assert response.status_code == 302
    # The login answer sets the new session: headers there too.
    assert_secure_headers(response, f"{role} login")
    assert_no_store(response, f"{role} login")
    pages = crawl(app, client, role, hostile_id)
    assert "/account" in pages and "/account/password" in pages
    if role == "admin":
        assert f"/admin/users/{hostile_id}" in pages and "/admin/audit/" in pages

    # Pages that only exist after a form: errors, recovery codes.
    token = csrf_token(client, "/account")
    bad = client.post("/account/password", data={"csrf_token": token, "current": "nope",
                                                 "new": "short", "confirm": "other"})
    check_page(bad, f"{role} password change refused")
    codes = client.post("/account/recovery-codes", data={"csrf_token": token,
                                                         "password": account.password})
    if account.totp_secret:
        assert codes.status_code == 200
        check_page(codes, f"{role} recovery codes")
    if role == "admin":
        refused = client.post("/admin/users/new", data={"csrf_token": token, "email": "x"})
        assert refused.status_code == 200
        check_page(refused, "admin new user refused")

    # Error pages as this role.
    refused_page = next(u for u in ("/admin/users", "/my/requests") if u not in pages)
    forbidden = client.get(refused_page)
    assert forbidden.status_code == 403
    check_page(forbidden, f"{role} 403")
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    check_page(missing, f"{role} 404")
    wrong_method = client.get("/logout")
    assert wrong_method.status_code == 405
    check_page(wrong_method, f"{role} 405")
    no_token = client.post("/account/password", data={"current": "x"})
    assert no_token.status_code == 400
    check_page(no_token, f"{role} 400")


def test_journalist_without_second_factor_sees_clean_enrolment(client, make_account):
    account = make_account("journalist", enrol=False)
    login(client, account)
    pages = crawl(client.application, client, "journalist", account.id)
    assert "/account/two-step" in pages  # the QR code is inline SVG: no style, no script


def test_anonymous_pages(app, client, make_account):
    pages = crawl(app, client, None, "unused")
    assert "/login" in pages

    # A failed sign-in page.
    failed = client.post("/login", data={"email": "nobody@example.org", "password": "wrong wrong wrong",
                                         "csrf_token": csrf_token(client)})
    assert failed.status_code == 401
    check_page(failed, "failed login")

    # Between password and code: the second-factor page...
    staff = make_account("caseworker")
    first = client.post("/login", data={"email": staff.email, "password": staff.password,
                                        "csrf_token": csrf_token(client)})
    assert first.status_code == 302 and first.location.endswith("/login/code")
    code_page = client.get("/login/code")
    assert code_page.status_code == 200
    check_page(code_page, "second factor page")
    wrong = client.post("/login/code", data={"code": "000000",
                                             "csrf_token": csrf_token(client, "/login/code")})
    check_page(wrong, "second factor refused")

    # ... and the forced enrolment of a new staff account.
    other = app.test_client()
    new_staff = make_account("supervisor", enrol=False)
    first = other.post("/login", data={"email": new_staff.email, "password": new_staff.password,
                                       "csrf_token": csrf_token(other)})
    assert first.status_code == 302 and first.location.endswith("/account/two-step")
    enrol = other.get("/account/two-step")
    assert enrol.status_code == 200 and "<svg" in enrol.get_data(as_text=True)
    check_page(enrol, "forced enrolment")

    # Error pages for someone not signed in.
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    check_page(missing, "anonymous 404")
    assert client.get("/logout").status_code == 405
    no_token = client.post("/language", data={"language": "en"})
    assert no_token.status_code == 400
    check_page(no_token, "anonymous 400")


def test_403_page_for_undeclared_route(app, database_url, tmp_path):
    fresh = make_app(tmp_path, database_url)
    fresh.add_url_rule("/undeclared", "undeclared", lambda: "x")
    try:
        response = fresh.test_client().get("/undeclared")
        assert response.status_code == 403
        check_page(response, "anonymous 403")
    finally:
        with fresh.app_context():
            db.engine.dispose()


def test_static_files_have_the_headers_too(client):
    response = client.get("/static/protect.css")
    assert response.status_code == 200
    assert_secure_headers(response, "static css")


# --------------------------------------------------------------------------- cookies

def _session_cookie(response) -> dict[str, str | bool]:
    for header in response.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == "protect_session":
            attributes = {}
            for part in rest.split(";")[1:]:
                key, eq, value = part.strip().partition("=")
                attributes[key.lower()] = value if eq else True
            return attributes
    raise AssertionError("no protect_session cookie set")


def _assert_cookie(attributes, *, secure: bool):
    assert attributes.get("httponly") is True, attributes
    assert str(attributes.get("samesite", "")).lower() == "lax", attributes
    assert ("secure" in attributes) is secure, attributes


def test_session_cookie_flags_over_http(client, make_account):
    _assert_cookie(_session_cookie(client.get("/login")), secure=False)
    account = make_account("journalist")
    _assert_cookie(_session_cookie(login(client, account)), secure=False)


@pytest.mark.parametrize("overrides", [{"public_url": "https://example.org"},
                                       {"env": "production", "public_url": "https://example.org"}],
                         ids=["https-public-url", "production"])
def test_session_cookie_is_secure_behind_https(database_url, tmp_path, overrides):
    app = make_app(tmp_path, database_url, **overrides)
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        client = app.test_client()
        response = client.get("/login", base_url="https://example.org")
        assert response.status_code == 200
        _assert_cookie(_session_cookie(response), secure=True)
        assert_secure_headers(response, "https login")
    finally:
        with app.app_context():
            db.engine.dispose()
