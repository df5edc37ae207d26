"""The access policy, walked: every URL rule of the app × every role and anonymous.

The expected outcome of each request comes from ``protect.security.access``
(``POLICY`` and ``allowed()``), never from a second hand-written table, so
the policy module stays the one place that says who may reach what. The only
hand-written knowledge here is which views redirect *by themselves* (the
front door, the second-factor page with nothing pending, ...).
"""
from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from protect.extensions import db
from protect.security.access import HOME, POLICY, Who, allowed
from tests.conftest import csrf_token, login, make_app

ROLES = ("journalist", "caseworker", "supervisor", "donor", "admin")
IDENTITIES = ROLES + ("anonymous",)
ANONYMOUS = SimpleNamespace(is_authenticated=False, role=None)

# Sample values for rule arguments; "user_id" is filled with a real account.
# Any other argument gets a placeholder that names nothing (see _placeholder):
# the policy answers before the view, and an allowed view may answer 404.
SAMPLE_ARGS = {"filename": "protect.css"}
PLACEHOLDERS = {"IntegerConverter": 999999, "UUIDConverter": "00000000-0000-4000-8000-000000000000",
                "FloatConverter": 1.5}


def _who(role: str | None):
    if role is None:
        return ANONYMOUS
    return SimpleNamespace(is_authenticated=True, role=role)


def _home_path(app, role: str) -> str:
    with app.test_request_context():
        from flask import url_for
        return url_for(HOME[role])


def view_redirect(app, endpoint: str, role: str | None) -> str | None:
    """Where a view sends an allowed visitor by itself on GET (not the policy)."""
    if endpoint == "main.index":
        return "/login" if role is None else _home_path(app, role)
    if endpoint == "accounts.login" and role is not None:
        return _home_path(app, role)
    if endpoint == "accounts.second_factor":
        return "/login"          # nothing pending between password and code
    if endpoint == "accounts.enrol_totp" and role is None:
        return "/login"          # neither signed in nor pending
    return None


def _rules(app):
    return sorted(app.url_map.iter_rules(), key=lambda r: r.rule)


def _placeholder(rule, argument: str):
    converter = type(rule._converters[argument]).__name__
    return PLACEHOLDERS.get(converter, "0" * 32)


def _has_placeholder(rule) -> bool:
    return bool(set(rule.arguments) - set(SAMPLE_ARGS) - {"user_id"})


def _url(app, rule, user_id: str) -> str:
    values = dict(SAMPLE_ARGS, user_id=user_id)
    args = {k: values[k] if k in values else _placeholder(rule, k) for k in rule.arguments}
    with app.test_request_context():
        from flask import url_for
        return url_for(rule.endpoint, **args)


def _assert_login_redirect(response, path: str | None, what: str):
    assert response.status_code == 302, f"{what}: {response.status_code}, expected 302 to /login"
    target = urlsplit(response.location)
    assert target.path == "/login", f"{what}: redirected to {response.location}"
    if path is not None:
        nxt = parse_qs(target.query).get("next", [""])[0]
        assert urlsplit(nxt).path == path, f"{what}: next={nxt!r}"


def _check_get(app, client, rule, url, role):
    what = f"{role or 'anonymous'} GET {url} ({rule.endpoint})"
    response = client.get(url)
    assert response.status_code != 500, what
    if allowed(rule.endpoint, _who(role)):
        expected = view_redirect(app, rule.endpoint, role)
        if _has_placeholder(rule):
            # No such object: the view may say so (404) or send elsewhere, never to sign in.
            assert response.status_code in (200, 302, 404), f"{what}: {response.status_code}"
            if response.status_code == 302:
                assert urlsplit(response.location).path != "/login", f"{what}: {response.location}"
        elif expected is None:
            assert response.status_code == 200, f"{what}: {response.status_code} {response.location}"
        else:
            assert response.status_code == 302, f"{what}: {response.status_code}"
            assert urlsplit(response.location).path == expected, f"{what}: {response.location}"
    elif role is None:
        _assert_login_redirect(response, urlsplit(url).path, what)
    else:
        assert response.status_code == 403, f"{what}: {response.status_code}"


def _check_post(client, rule, url, role, token):
    what = f"{role or 'anonymous'} POST {url} ({rule.endpoint})"
    response = client.post(url, data={"csrf_token": token})
    if allowed(rule.endpoint, _who(role)):
        assert response.status_code not in (403, 500), f"{what}: {response.status_code}"
        if POLICY[rule.endpoint] not in (Who.PUBLIC, Who.PASSWORD_OK):
            # Allowed by the policy: not sent off to sign in (logout sends
            # there itself, after ending the session; checked separately).
            if rule.endpoint != "accounts.logout":
                assert not (response.status_code == 302
                            and urlsplit(response.location).path == "/login"), what
    elif role is None:
        _assert_login_redirect(response, None, what)
    else:
        assert response.status_code == 403, f"{what}: {response.status_code}"
    return response


@pytest.mark.parametrize("identity", IDENTITIES)
def test_every_rule_follows_the_policy(app, client, make_account, identity):
    role = None if identity == "anonymous" else identity
    # A real account to fill <user_id> (and to be edited by the admin's empty POST).
    target = make_account("journalist", enrol=False)
    if role is not None:
        account = make_account(role)
        assert login(client, account).status_code == 302
        token = csrf_token(client, "/account")
    else:
        token = csrf_token(client, "/login")

    rules = _rules(app)
    assert rules
    for rule in rules:
        if "GET" in rule.methods:
            _check_get(app, client, rule, _url(app, rule, target.id), role)

    # Refusal does not depend on the method: every method of a refused rule is 403.
    if role is not None:
        for rule in rules:
            if allowed(rule.endpoint, _who(role)):
                continue
            url = _url(app, rule, target.id)
            for method in sorted(rule.methods - {"OPTIONS"}):
                data = {"csrf_token": token} if method == "POST" else None
                response = client.open(url, method=method, data=data)
                assert response.status_code == 403, f"{role} {method} {url}: {response.status_code}"

    # Every rule that takes a POST, with a valid token and an empty form.
    # Logout last: it ends the session the rest of the walk relies on.
    posts = [r for r in rules if "POST" in r.methods]
    posts.sort(key=lambda r: r.endpoint == "accounts.logout")
    assert any(r.endpoint == "accounts.logout" for r in posts)
    for rule in posts:
        response = _check_post(client, rule, _url(app, rule, target.id), role, token)
        if rule.endpoint == "accounts.logout" and role is not None:
            assert response.status_code == 302
            # Really signed out: a page of the role now asks to sign in.
            home = _home_path(app, role)
            _assert_login_redirect(client.get(home), home, f"{role} after logout")


def test_policy_names_exactly_the_apps_endpoints(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()} | set(app.view_functions)
    missing = endpoints - set(POLICY)
    assert not missing, f"endpoints with no access rule in protect/security/access.py: {sorted(missing)}"
    stale = set(POLICY) - endpoints
    assert not stale, f"POLICY names endpoints the app does not have: {sorted(stale)}"


def test_policy_values_are_well_formed():
    for endpoint, rule in POLICY.items():
        if isinstance(rule, Who):
            continue
        assert isinstance(rule, frozenset) and rule, endpoint
        assert rule <= set(ROLES), f"{endpoint}: unknown roles {rule - set(ROLES)}"
    # Every role's home page is open to that role.
    for role, endpoint in HOME.items():
        assert allowed(endpoint, _who(role)), role


def test_undeclared_route_is_refused_even_to_an_admin(app, database_url, tmp_path, make_account):
    # ``app`` is requested for its clean-up of the tables; the rule goes on a fresh app.
    fresh = make_app(tmp_path, database_url)
    fresh.add_url_rule("/not-in-policy", "not_in_policy", lambda: "open by accident",
                       methods=["GET", "POST"])
    try:
        anonymous = fresh.test_client()
        assert anonymous.get("/not-in-policy").status_code == 403

        client = fresh.test_client()
        admin = make_account("admin")
        assert login(client, admin).status_code == 302
        assert client.get("/admin/users").status_code == 200  # really signed in as admin
        response = client.get("/not-in-policy")
        assert response.status_code == 403
        assert "open by accident" not in response.get_data(as_text=True)
        token = csrf_token(client, "/account")
        assert client.post("/not-in-policy", data={"csrf_token": token}).status_code == 403
    finally:
        with fresh.app_context():
            db.engine.dispose()


def test_unknown_user_id_is_404_for_admin_and_hidden_from_others(client, make_account):
    admin = make_account("admin")
    login(client, admin)
    assert client.get("/admin/users/no-such-id").status_code == 404
    other = make_account("caseworker")
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    login(client, other)
    # The policy answers before the view: no way to probe which ids exist.
    assert client.get("/admin/users/no-such-id").status_code == 403
    assert client.get(f"/admin/users/{admin.id}").status_code == 403
