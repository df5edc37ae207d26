import re

import pytest

from protect.accounts.models import LoginSession, User
from protect.audit.models import AuditEntry
from protect.extensions import db
from tests.conftest import csrf_token, login

HOMES = {"journalist": "/my/requests", "caseworker": "/queue", "supervisor": "/overview",
         "donor": "/reports/", "admin": "/admin/users"}


@pytest.mark.parametrize("role", list(HOMES))
def test_each_role_lands_on_its_home(client, make_account, role):
    account = make_account(role)
    response = login(client, account)
    assert response.status_code == 302
    assert response.location.endswith(HOMES[role])
    page = client.get(HOMES[role])
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    # Admins see themselves in the user list; every other home starts empty.
    assert account.email in body if role == "admin" else 'class="empty"' in body


def test_wrong_password_and_unknown_account_look_the_same(app, client, make_account):
    account = make_account("journalist")
    bad = client.post("/login", data={"email": account.email, "password": "wrong password here",
                                      "csrf_token": csrf_token(client)})
    unknown = client.post("/login", data={"email": "nobody@example.org", "password": "wrong password here",
                                          "csrf_token": csrf_token(client)})
    assert bad.status_code == unknown.status_code == 401
    strip = lambda r: re.sub(r'value="[^"]*"', "", r.get_data(as_text=True))
    assert strip(bad) == strip(unknown)
    with app.app_context():
        actions = [e.action for e in db.session.query(AuditEntry).order_by(AuditEntry.id)]
    assert actions.count("login.failed") == 2


def test_session_is_regenerated_at_login(client, make_account):
    account = make_account("journalist")
    client.get("/login")
    with client.session_transaction() as s:
        s["planted"] = "by an attacker"
    login(client, account)
    with client.session_transaction() as s:
        assert "planted" not in s
        assert s["sid"]


def test_logout_ends_the_session_server_side(client, make_account):
    account = make_account("journalist")
    login(client, account)
    with client.session_transaction() as s:
        copied = dict(s)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/my/requests")})
    with client.session_transaction() as s:
        s.update(copied)  # a stolen cookie replayed after logout
    assert client.get("/my/requests").status_code == 302
