from protect.accounts.models import User
from protect.audit.models import AuditEntry
from protect.extensions import db
from tests.conftest import csrf_token, login


def _actions(app):
    with app.app_context():
        return [e.action for e in db.session.query(AuditEntry).order_by(AuditEntry.id)]


def test_admin_creates_a_user_who_must_enrol(app, client, make_account):
    login(client, make_account("admin"))
    response = client.post("/admin/users/new", data={
        "email": "new.caseworker@example.org", "role": "caseworker", "name": "Ana",
        "password": "caseworker first password", "csrf_token": csrf_token(client, "/admin/users/new")})
    assert response.status_code == 302
    assert "new.caseworker@example.org" in client.get("/admin/users").get_data(as_text=True)
    assert "user.created" in _actions(app)
    fresh = app.test_client()
    first = fresh.post("/login", data={"email": "New.Caseworker@example.org ", "password": "caseworker first password",
                                       "csrf_token": csrf_token(fresh)})
    assert first.location.endswith("/account/two-step")


def test_duplicate_email_and_bad_role_are_refused(app, client, make_account):
    admin = make_account("admin")
    login(client, admin)
    for data in ({"email": admin.email.upper(), "role": "donor", "password": "a fine long password"},
                 {"email": "x@example.org", "role": "emperor", "password": "a fine long password"},
                 {"email": "not-an-address", "role": "donor", "password": "a fine long password"},
                 {"email": "y@example.org", "role": "donor", "password": "short"}):
        r = client.post("/admin/users/new", data=dict(data, csrf_token=csrf_token(client, "/admin/users/new")))
        assert r.status_code == 200
    with app.app_context():
        assert db.session.query(User).count() == 1


def test_admin_changes_role_and_disables(app, client, make_account):
    login(client, make_account("admin"))
    target = make_account("journalist")
    page = f"/admin/users/{target.id}"
    r = client.post(page, data={"role": "donor", "active": "y", "csrf_token": csrf_token(client, page)})
    assert r.status_code == 302
    r = client.post(page, data={"role": "donor", "csrf_token": csrf_token(client, page)})
    with app.app_context():
        user = db.session.get(User, target.id)
        assert user.role == "donor" and not user.active
    assert {"user.role_changed", "user.disabled"} <= set(_actions(app))


def test_admin_cannot_lock_themselves_out(app, client, make_account):
    admin = make_account("admin")
    login(client, admin)
    page = f"/admin/users/{admin.id}"
    r = client.post(page, data={"role": "donor", "active": "y", "csrf_token": csrf_token(client, page)})
    assert r.status_code == 200
    with app.app_context():
        assert db.session.get(User, admin.id).role == "admin"


def test_unknown_user_page_is_404(client, make_account):
    login(client, make_account("admin"))
    assert client.get("/admin/users/" + "0" * 32).status_code == 404


def test_audit_page_lists_and_filters(client, make_account):
    admin = make_account("admin")
    login(client, admin)
    everything = client.get("/admin/audit/").get_data(as_text=True)
    assert "login.ok" in everything and "user.created" in everything
    only = client.get("/admin/audit/?action=login.ok").get_data(as_text=True)
    assert "login.ok" in only and "<td>user.created</td>" not in only
    assert client.get("/admin/audit/?since=nonsense&page=-3").status_code == 200


def test_admin_views_of_accounts_are_audited(app, client, make_account):
    login(client, make_account("admin"))
    target = make_account("journalist")
    client.get("/admin/users")
    client.get(f"/admin/users/{target.id}")
    assert {"users.listed", "user.viewed"} <= set(_actions(app))
