"""Bad input on every form: never a 500, always a translated answer.

Each POST form is sent, as a role that may use it, an empty body, no or a
wrong CSRF token, 100 KB fields, lists and repeated keys, invalid UTF-8,
NUL bytes, files where text belongs, JSON, and bodies above the size
limits; Hypothesis adds arbitrary bodies for the login and new-user forms.
The answer is the form again with a message, a redirect the view makes
anyway, or a translated error page (400, 413, 429), in the page's language;
and nothing of the bad input is stored.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote, quote_from_bytes, urlsplit

import pytest
from flask_babel import force_locale
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import func, select

from protect.accounts.models import LoginSession, RecoveryCode, User
from protect.extensions import db
from protect.main import ERRORS
from protect.security import totp
from tests.conftest import csrf_token, login

FORM_TYPE = "application/x-www-form-urlencoded"
BIG = "A" * 100_000
# A page every signed-in role can read, holding the security forms' token.
ACCOUNT_PAGE = "/account"


# --------------------------------------------------------------------------- the forms

@dataclass
class Form:
    path: str
    token_from: str | None       # page holding the form's CSRF token
    fields: tuple[str, ...]
    ok: frozenset[int]           # answers to bad input that passed CSRF
    setup: Callable              # (app, client, make_account) -> state dict
    redirects_to: str | None = None  # for forms that always redirect
    plausible: dict = field(default_factory=dict)  # well-formed values, for the no-token case


def _anonymous(app, client, make_account):
    return {}


def _pending_second_factor(app, client, make_account):
    staff = make_account("caseworker")
    first = client.post("/login", data={"email": staff.email, "password": staff.password,
                                        "csrf_token": csrf_token(client)})
    assert first.status_code == 302 and first.location.endswith("/login/code")
    return {"account": staff}


def _signed_in(role: str, *, enrol: bool = True, with_totp: bool = False):
    def setup(app, client, make_account):
        account = make_account(role, enrol=enrol)
        if with_totp and account.totp_secret is None:
            # A journalist who turned two-step verification on.
            with app.app_context():
                user = db.session.get(User, account.id)
                user.totp_secret = account.totp_secret = totp.new_secret()
                user.totp_enabled = True
                db.session.commit()
        response = login(client, account)
        assert response.status_code == 302, response.location
        return {"account": account}
    return setup


def _admin_with_target(app, client, make_account):
    state = _signed_in("admin")(app, client, make_account)
    state["target"] = make_account("journalist", enrol=False)
    return state


FORMS = {
    "login": Form("/login", "/login", ("email", "password"), frozenset({400, 401, 429}), _anonymous,
                  plausible={"email": "someone@example.org", "password": "a long enough password"}),
    "second_factor": Form("/login/code", "/login/code", ("code",), frozenset({200, 401, 429}),
                          _pending_second_factor, plausible={"code": "123456"}),
    "enrol_totp": Form("/account/two-step", "/account/two-step", ("code",), frozenset({200}),
                       _signed_in("journalist", enrol=False), plausible={"code": "123456"}),
    "change_password": Form("/account/password", "/account/password", ("current", "new", "confirm"),
                            frozenset({200}), _signed_in("journalist"),
                            plausible={"current": "x", "new": "a new long password 1",
                                       "confirm": "a new long password 1"}),
    "recovery_codes": Form("/account/recovery-codes", ACCOUNT_PAGE, ("password",), frozenset({302}),
                           _signed_in("caseworker"), redirects_to="/account",
                           plausible={"password": "whatever it is"}),
    "disable_totp": Form("/account/two-step/off", ACCOUNT_PAGE, ("password",), frozenset({302}),
                         _signed_in("journalist", with_totp=True), redirects_to="/account",
                         plausible={"password": "whatever it is"}),
    "new_user": Form("/admin/users/new", "/admin/users/new", ("email", "name", "role", "password"),
                     frozenset({200}), _signed_in("admin"),
                     plausible={"email": "new@example.org", "name": "New", "role": "caseworker",
                                "password": "a long enough password 7"}),
    "edit_user": Form("/admin/users/{target}", "/admin/users/{target}", ("role", "active"),
                      frozenset({200, 302}), _admin_with_target,
                      plausible={"role": "admin", "active": "y"}),
    "language": Form("/language", "/login", ("language", "next"), frozenset({302}), _anonymous,
                     plausible={"language": "en", "next": "/login"}),
    "logout": Form("/logout", ACCOUNT_PAGE, ("confirm",), frozenset({302}), _signed_in("journalist"),
                   redirects_to="/login", plausible={}),
}


def _path(form: Form, state: dict, which: str) -> str:
    target = state.get("target")
    return which.format(target=target.id if target else "")


# --------------------------------------------------------------------------- what is stored

def _snapshot(app, form_name: str, state: dict):
    """The rows bad input to ``form_name`` must not change."""
    with app.app_context():
        s = db.session
        snap = {
            "users": s.execute(select(func.count()).select_from(User)).scalar_one(),
            "live_sessions": s.execute(select(func.count()).select_from(LoginSession)
                                       .where(LoginSession.ended_at.is_(None))).scalar_one(),
        }
        account = state.get("account")
        if account is not None:
            user = db.session.get(User, account.id)
            snap.update(password_hash=user.password_hash, totp_enabled=user.totp_enabled,
                        totp_secret=user.totp_secret, locale=user.locale, role=user.role,
                        codes=sorted(s.execute(select(RecoveryCode.code_hash)
                                               .where(RecoveryCode.user_id == user.id)).scalars()))
        target = state.get("target")
        if target is not None:
            user = db.session.get(User, target.id)
            snap.update(target_role=user.role, target_active=user.active)
        db.session.remove()
    return snap


def _assert_nothing_stored(before: dict, after: dict, form_name: str, what: str):
    changed = {k for k in before if before[k] != after[k]}
    if form_name == "logout":
        changed -= {"live_sessions"}  # any POST with a good token signs out: that is the form
    if form_name == "edit_user":
        changed -= {"target_role", "target_active"}  # checked per case (only when CSRF passed)
    assert not changed, f"{what}: bad input changed {sorted(changed)}: {before} -> {after}"


# --------------------------------------------------------------------------- what is answered

def _title(app, code: int, locale: str) -> str:
    with app.test_request_context(), force_locale(locale):
        return str(ERRORS[code][0])


def _page_locale(body: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', body)
    assert match, "page has no <html lang>"
    return match.group(1)


def assert_error_page(app, response, code: int, what: str, locale: str = "es"):
    assert response.status_code == code, f"{what}: {response.status_code}, expected {code}"
    body = response.get_data(as_text=True)
    assert _page_locale(body) == locale, what
    title = _title(app, code, locale)
    assert f"<h1>{title}</h1>" in body, f"{what}: no {locale} title {title!r}"


def assert_form_answer(app, form: Form, response, what: str):
    """A bad input that passed CSRF: the form again with a message, or the
    view's own redirect, or a translated error page."""
    status = response.status_code
    assert status < 500, f"{what}: {status}"
    body = response.get_data(as_text=True)
    if status in (400, 413, 429) and (status not in form.ok or status == 429
                                      or f"<h1>{_title(app, status, 'es')}</h1>" in body):
        # A body the parser drops whole (say, raw invalid UTF-8) has no token either.
        assert_error_page(app, response, status, what)
        return
    assert status in form.ok, f"{what}: {status} not in {sorted(form.ok)}"
    if status == 302:
        target = urlsplit(response.location)
        assert not target.netloc or target.netloc == "localhost", f"{what}: {response.location}"
        if form.redirects_to:
            assert target.path == form.redirects_to, f"{what}: {response.location}"
        return
    assert _page_locale(body) == "es", what
    assert 'class="error"' in body or 'role="alert"' in body, f"{what}: no message on the page"


# --------------------------------------------------------------------------- bad bodies

def _encode(pairs) -> bytes:
    """An x-www-form-urlencoded body; values may be str or raw bytes."""
    out = []
    for key, value in pairs:
        k = key if isinstance(key, bytes) else key.encode()
        v = value if isinstance(value, bytes) else value.encode()
        out.append(quote_from_bytes(k).encode() + b"=" + quote_from_bytes(v).encode())
    return b"&".join(out)


def _cases(form: Form, token: str):
    """(name, request kwargs, needs a good token to get past CSRF)."""
    f = form.fields
    raw = lambda body: {"data": body, "content_type": FORM_TYPE}
    yield "empty form, token only", raw(_encode([("csrf_token", token)]))
    yield "blank fields", raw(_encode([("csrf_token", token)] + [(k, "") for k in f]))
    yield "100 KB fields", raw(_encode([("csrf_token", token)] + [(k, BIG) for k in f]))
    yield "100 KB keys", raw(_encode([("csrf_token", token), (BIG, "x")]))
    yield "lists", raw(_encode([("csrf_token", token)]
                               + [(k, v) for k in f for v in ("one", "two", "")]))
    yield "repeated token", raw(_encode([("csrf_token", token), ("csrf_token", "forged")]
                                        + [(k, "x") for k in f]))
    yield "invalid UTF-8", raw(b"csrf_token=" + token.encode()
                               + b"".join(b"&" + k.encode() + b"=%ff%fe%c3%28" for k in f)
                               + b"&%ff%c3=%c3%28")
    yield "invalid UTF-8, unescaped", raw(b"csrf_token=" + token.encode()
                                          + b"".join(b"&" + k.encode() + b"=\xff\xfe\xc3\x28" for k in f))
    yield "control characters", raw(_encode([("csrf_token", token)]
                                            + [(k, "\r\n\t\x1b[31m\u202e\ufeff") for k in f]))
    yield "broken encoding", raw(b"csrf_token=" + token.encode() + b"&%&=%%&&==&" + b"%zz=%g")
    yield "files where text belongs", {
        "data": {"csrf_token": token, **{k: (io.BytesIO(b"\x00\x01 file"), "x.bin") for k in f}},
        "content_type": "multipart/form-data"}
    yield "body above the small-form limit", {
        "data": {"csrf_token": token, f[0]: "B" * (1100 * 1024)},
        "content_type": "multipart/form-data"}
    yield "NUL bytes", {"data": _nul_values(form, token)}
    yield "JSON, token in header", _json_body(form, token)
    yield "charset not utf-8", {"data": _encode([("csrf_token", token)] + [(k, "x") for k in f]),
                                "content_type": FORM_TYPE + "; charset=utf-16"}


def _new_client_state(app, client, form_name, make_account, states):
    """Forms whose bad input may change the session (language, logout) get a
    fresh client per case; the others keep theirs."""
    if form_name not in ("language", "logout"):
        return client, states[0]
    fresh = app.test_client()
    return fresh, FORMS[form_name].setup(app, fresh, make_account)


@pytest.mark.parametrize("form_name", list(FORMS))
def test_bad_input_never_breaks_a_form(app, client, make_account, form_name):
    form = FORMS[form_name]
    state = form.setup(app, client, make_account)
    path = _path(form, state, form.path)
    token_page = _path(form, state, form.token_from)
    token = csrf_token(client, token_page)
    max_length = app.config["MAX_CONTENT_LENGTH"]

    # Without a good CSRF token: the translated 400 page, nothing stored.
    no_token = [
        ("empty body", {"data": b"", "content_type": FORM_TYPE}),
        ("no content type", {"data": b""}),
        ("no CSRF token", {"data": form.plausible}),
        ("forged CSRF token", {"data": dict(form.plausible, csrf_token="forged")}),
        ("CSRF token of another session", {"data": dict(form.plausible, csrf_token=csrf_token(
            app.test_client(), "/login"))}),
        ("token with NUL", {"data": dict(form.plausible, csrf_token=token + "\x00")}),
    ]
    for name, kwargs in no_token:
        what = f"{form_name}: {name}"
        c, s = _new_client_state(app, client, form_name, make_account, [state])
        before = _snapshot(app, form_name, s)
        response = c.post(path, **kwargs)
        assert_error_page(app, response, 400, what)
        after = _snapshot(app, form_name, s)
        assert before == after, f"{what}: changed {before} -> {after}"

    # Bodies above MAX_CONTENT_LENGTH: refused before they are read.
    before = _snapshot(app, form_name, state)
    response = client.post(path, input_stream=io.BytesIO(b"csrf_token=" + token.encode()),
                           content_type=FORM_TYPE,
                           environ_overrides={"CONTENT_LENGTH": str(max_length + 1)})
    assert_error_page(app, response, 413, f"{form_name}: declared body above MAX_CONTENT_LENGTH")
    assert _snapshot(app, form_name, state) == before

    # Past CSRF: the form answers with a message (or its own redirect).
    for name, kwargs in _cases(form, token):
        what = f"{form_name}: {name}"
        if (name, form_name) in KNOWN_BROKEN:
            continue
        c, s = _new_client_state(app, client, form_name, make_account, [state])
        t = csrf_token(c, _path(form, s, form.token_from))
        if c is not client:  # a fresh session has its own token
            kwargs = _retoken(kwargs, token, t)
        before = _snapshot(app, form_name, s)
        response = c.post(path, **kwargs)
        if name == "body above the small-form limit":
            assert_error_page(app, response, 413, what)
        elif name == "files where text belongs":
            # Files go only to views that take uploads: refused before storing.
            assert response.status_code < 500, f"{what}: {response.status_code}"
            if response.status_code == 400:
                assert_error_page(app, response, 400, what)
            else:
                assert_form_answer(app, form, response, what)
        else:
            assert_form_answer(app, form, response, what)
        _assert_nothing_stored(before, _snapshot(app, form_name, s), form_name, what)
        if form_name == "new_user":
            assert _user_count(app) == before["users"], f"{what}: a user was created"


def _retoken(kwargs, old: str, new: str):
    data = kwargs["data"]
    if "headers" in kwargs:
        kwargs = dict(kwargs, headers={k: (new if v == old else v)
                                       for k, v in kwargs["headers"].items()})
    if isinstance(data, str):
        pass
    elif isinstance(data, bytes):
        data = data.replace(quote(old, safe="").encode(), quote(new, safe="").encode()) \
            .replace(old.encode(), new.encode())
    else:
        data = {k: (new if v == old else v) for k, v in data.items()}
    return dict(kwargs, data=data)


def _user_count(app) -> int:
    with app.app_context():
        n = db.session.execute(select(func.count()).select_from(User)).scalar_one()
        db.session.remove()
        return n


def test_huge_real_body_is_refused_with_413(app, client):
    token = csrf_token(client)
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = b"csrf_token=" + token.encode() + b"&email=" + b"a" * (limit + 1)
    response = client.post("/login", data=body, content_type=FORM_TYPE)
    assert_error_page(app, response, 413, "login: real body above MAX_CONTENT_LENGTH")


# --------------------------------------------------------------------------- NUL bytes, JSON

def _nul_values(form: Form, token: str) -> dict:
    # Plausible values with a NUL inside, so each reaches the view's own checks.
    data = {k: f"{v[:3]}\x00{v[3:]}" for k, v in form.plausible.items()}
    if "role" in data:
        data["role"] = "journalist"  # must be valid for the rest to reach the service
    return {**{k: "a\x00b" for k in form.fields}, **data, "csrf_token": token}


def _json_body(form: Form, token: str) -> dict:
    values = [5, None, {"a": 1}, [1, [2]], True]
    body = {k: values[i % len(values)] for i, k in enumerate(form.fields)}
    return {"data": json.dumps(body), "content_type": "application/json",
            "headers": {"X-CSRFToken": token}}


JSON_BROKEN = ("login", "second_factor", "enrol_totp", "change_password", "recovery_codes",
               "disable_totp", "new_user")
KNOWN_BROKEN = {("NUL bytes", "new_user")} | {("JSON, token in header", f) for f in JSON_BROKEN}


def _run_case(app, client, make_account, form_name: str, case: str):
    form = FORMS[form_name]
    state = form.setup(app, client, make_account)
    token = csrf_token(client, _path(form, state, form.token_from))
    kwargs = next(k for n, k in _cases(form, token) if n == case)
    before = _snapshot(app, form_name, state)
    response = client.post(_path(form, state, form.path), **kwargs)
    what = f"{form_name}: {case}"
    assert response.status_code < 500, f"{what}: {response.status_code}"
    assert_form_answer(app, form, response, what)
    _assert_nothing_stored(before, _snapshot(app, form_name, state), form_name, what)
    assert _user_count(app) == before["users"], f"{what}: a user was created"


def test_nul_bytes_in_new_user_form(app, client, make_account):
    _run_case(app, client, make_account, "new_user", "NUL bytes")


@pytest.mark.parametrize("form_name", JSON_BROKEN)
def test_json_body_on_flask_forms(app, client, make_account, form_name):
    _run_case(app, client, make_account, form_name, "JSON, token in header")


# --------------------------------------------------------------------------- redirects

@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/\\evil.example",
                                    "//evil.example", "https://evil.example/", "/\r\nX-Evil: 1",
                                    " /x", "/\x00"])
def test_language_switch_never_leaves_the_site(client, target):
    token = csrf_token(client)
    response = client.post("/language", data={"csrf_token": token, "language": "en", "next": target})
    assert response.status_code == 302, repr(target)
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location, \
        f"{target!r} -> {location!r}"
    assert "X-Evil" not in response.headers


def test_login_next_never_leaves_the_site(client, make_account):
    account = make_account("journalist")
    token = csrf_token(client)
    response = client.post("/login?next=" + quote("/\t/evil.example", safe=""),
                           data={"email": account.email, "password": account.password,
                                 "csrf_token": token})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith("//"), location


# --------------------------------------------------------------------------- query strings

HOSTILE_QUERY_VALUES = ["%00", "-1", "0", "99999999999999999999", "abc", "x" * 3000, "%ff%fe",
                        "2024-02-30", "0001-01-01", "1970-01-01%00", "<script>", "a&a=b&a=c"]
QUERY_NAMES = ["page", "role", "action", "actor", "since", "until", "next", "q"]


@pytest.mark.parametrize("role", ["admin", "journalist", None], ids=["admin", "journalist", "anonymous"])
def test_hostile_query_strings_and_ids(app, client, make_account, role):
    if role:
        login(client, make_account(role))
    target = make_account("journalist", enrol=False)
    pages = ["/login", "/"] if role is None else \
        ["/admin/users", "/admin/audit/", f"/admin/users/{target.id}", "/account",
         "/account/password"] if role == "admin" else ["/my/requests", "/vault/", "/account"]
    for page in pages:
        for value in HOSTILE_QUERY_VALUES:
            url = f"{page}?" + "&".join(f"{name}={value}" for name in QUERY_NAMES)
            response = client.get(url)
            assert response.status_code < 500, f"{role} GET {url[:200]}: {response.status_code}"
    if role == "admin":
        for bad_id in ["a%00b", "x" * 5000, "%ff", "..%2F..%2Fetc", "1 OR 1=1", "%E2%80%AE"]:
            response = client.get(f"/admin/users/{bad_id}")
            assert response.status_code in (400, 404), f"user id {bad_id[:50]}: {response.status_code}"
            response = client.post(f"/admin/users/{bad_id}",
                                   data={"csrf_token": csrf_token(client, "/account"), "role": "admin"})
            assert response.status_code in (400, 404), f"POST user id {bad_id[:50]}: {response.status_code}"


def test_audit_filter_at_the_end_of_time(client, make_account):
    login(client, make_account("admin"))
    response = client.get("/admin/audit/?until=9999-12-31")
    assert response.status_code < 500


# --------------------------------------------------------------------------- languages

@pytest.mark.parametrize("code", [400, 404, 405, 413])
def test_error_pages_follow_the_language(app, client, code):
    def provoke(headers):
        if code == 400:
            return client.post("/language", data={"language": "en"}, headers=headers)
        if code == 404:
            return client.get("/no-such-page", headers=headers)
        if code == 405:
            return client.get("/logout", headers=headers)
        return client.post("/login", input_stream=io.BytesIO(b"x"), content_type=FORM_TYPE,
                           headers=headers, environ_overrides={
                               "CONTENT_LENGTH": str(app.config["MAX_CONTENT_LENGTH"] + 1)})

    english = provoke({"Accept-Language": "en"})
    assert_error_page(app, english, code, f"{code} in English", locale="en")
    spanish = provoke({})  # Spanish is the default
    assert_error_page(app, spanish, code, f"{code} by default", locale="es")
    if _title(app, code, "es") != _title(app, code, "en"):
        assert english.get_data() != spanish.get_data()
    assert_error_page(app, provoke({"Accept-Language": "fr, en;q=0.5"}), code,
                      f"{code} fr then en", locale="en")
    assert_error_page(app, provoke({"Accept-Language": "\x00;;;q=x, *"}), code,
                      f"{code} garbage Accept-Language", locale="es")


def test_chosen_language_wins_on_error_pages(app, client):
    token = csrf_token(client)
    client.post("/language", data={"csrf_token": token, "language": "en", "next": "/login"})
    assert_error_page(app, client.get("/no-such-page", headers={"Accept-Language": "es"}), 404,
                      "404 after choosing English", locale="en")


# --------------------------------------------------------------------------- Hypothesis

FIELD_VALUES = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.sampled_from(["", "\x00", "a" * 300, "admin", "journalist", "x@example.org",
                     "correct horse battery staple 9", "\ud7ff", "%", "&=", "\u202e"]),
)


def _pairs(drawn: dict) -> list:
    """Each key with each of its values: repeated keys included."""
    return [(key, value) for key, values in drawn.items() for value in values]


def _body_strategy(fields: tuple[str, ...]):
    keys = st.one_of(st.sampled_from(fields + ("csrf_token",)), st.text(max_size=20), st.binary(max_size=20))
    return st.tuples(
        st.dictionaries(keys, st.lists(FIELD_VALUES, min_size=1, max_size=3), max_size=6),
        st.booleans())


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(body=_body_strategy(FORMS["login"].fields))
def test_hypothesis_login_form(app, client, body):
    fields, with_token = body
    pairs = _pairs(fields)
    if with_token:
        pairs.insert(0, ("csrf_token", csrf_token(client)))
    response = client.post("/login", data=_encode(pairs), content_type=FORM_TYPE)
    what = f"login with {pairs!r}"[:300]
    assert response.status_code in (400, 401, 429), f"{what}: {response.status_code}"
    if response.status_code == 400 and not with_token:
        assert_error_page(app, response, 400, what)
    else:
        assert_form_answer(app, FORMS["login"], response, what)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(LoginSession)).scalar_one() == 0
        db.session.remove()


@pytest.fixture
def admin_client(app, make_account):
    client = app.test_client()
    assert login(client, make_account("admin")).status_code == 302
    return client


@SETTINGS
@given(body=_body_strategy(FORMS["new_user"].fields))
def test_hypothesis_new_user_form(app, admin_client, body):
    fields, with_token = body
    pairs = _pairs(fields)
    if with_token:
        pairs.insert(0, ("csrf_token", csrf_token(admin_client, "/admin/users/new")))
    users = _user_count(app)
    response = admin_client.post("/admin/users/new", data=_encode(pairs), content_type=FORM_TYPE)
    what = f"new user with {pairs!r}"[:300]
    assert response.status_code < 500, f"{what}: {response.status_code}"
    if response.status_code == 302:
        # Only a well-formed form creates an account.
        created = _user_count(app)
        assert created == users + 1, what
        form = dict(pairs)
        assert form.get("role") in ("journalist", "caseworker", "supervisor", "donor", "admin"), what
        assert "@" in str(form.get("email")), what
        return
    if response.status_code == 400:
        assert_error_page(app, response, 400, what)
    else:
        assert_form_answer(app, FORMS["new_user"], response, what)
    assert _user_count(app) == users, f"{what}: a user was created"
