from datetime import timedelta

from protect.accounts.models import LoginSession, User
from protect.extensions import db
from protect.security import passwords
from tests.conftest import csrf_token, login


def _age_sessions(app, user_id, minutes):
    with app.app_context():
        for row in db.session.query(LoginSession).filter_by(user_id=user_id):
            row.last_seen_at -= timedelta(minutes=minutes)
        db.session.commit()


def test_staff_idle_timeout(app, client, make_account):
    account = make_account("caseworker")
    login(client, account)
    _age_sessions(app, account.id, 29)
    assert client.get("/queue").status_code == 200
    _age_sessions(app, account.id, 31)
    response = client.get("/queue")
    assert response.status_code == 302 and "/login" in response.location
    notice = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "period of inactivity" in notice


def test_journalists_have_the_longer_idle_timeout(app, client, make_account):
    account = make_account("journalist")
    login(client, account)
    _age_sessions(app, account.id, 60)
    assert client.get("/my/requests").status_code == 200


def test_password_change_ends_other_sessions_but_not_this_one(app, make_account):
    account = make_account("journalist")
    phone, laptop = app.test_client(), app.test_client()
    login(phone, account)
    login(laptop, account)
    response = laptop.post("/account/password", data={
        "current": account.password, "new": "a brand new long passphrase",
        "confirm": "a brand new long passphrase", "csrf_token": csrf_token(laptop, "/account/password")})
    assert response.status_code == 302
    assert laptop.get("/my/requests").status_code == 200
    assert phone.get("/my/requests").status_code == 302
    with app.app_context():
        assert passwords.verify_password(db.session.get(User, account.id).password_hash,
                                         "a brand new long passphrase")


def test_password_rules(client, make_account):
    account = make_account("journalist")
    login(client, account)

    def change(new, confirm=None, current=account.password):
        return client.post("/account/password", data={
            "current": current, "new": new, "confirm": confirm or new,
            "csrf_token": csrf_token(client, "/account/password")})

    assert change("short pass").status_code == 200           # under 12 characters
    assert change("password1234").status_code == 200         # on the common list
    assert change("a long enough phrase", "a different phrase!").status_code == 200
    assert change("a long enough phrase", current="wrong current one").status_code == 200
    assert change("a long enough phrase").status_code == 302


def test_tenth_wrong_password_in_a_minute_is_throttled(client, make_account):
    account = make_account("journalist")
    token = csrf_token(client)
    for _ in range(9):
        r = client.post("/login", data={"email": account.email, "password": "wrong wrong wrong",
                                        "csrf_token": token})
        assert r.status_code == 401
    r = client.post("/login", data={"email": account.email, "password": account.password,
                                    "csrf_token": token})
    assert r.status_code == 429
    assert "<h1>" in r.get_data(as_text=True)
    # Another account from the same address is not locked by this one.
    other = make_account("journalist")
    assert login(client, other).status_code == 302


def test_throttle_message_is_translated(client, make_account):
    account = make_account("journalist")
    token = csrf_token(client)
    bodies = {}
    for lang in ("es", "en"):
        for _ in range(10):
            r = client.post("/login", data={"email": account.email, "password": "wrong wrong wrong",
                                            "csrf_token": token}, headers={"Accept-Language": lang})
        assert r.status_code == 429
        bodies[lang] = r.get_data(as_text=True)
    assert 'lang="es"' in bodies["es"] and 'lang="en"' in bodies["en"]
    assert "Too many attempts" in bodies["en"] and "Too many attempts" not in bodies["es"]


def test_password_is_rehashed_when_cost_changes(app, database_url, tmp_path, make_account):
    from tests.conftest import make_app
    account = make_account("journalist")
    stronger = make_app(tmp_path, database_url, argon2_time_cost=2)  # same keys
    with stronger.app_context():
        before = db.session.get(User, account.id).password_hash
    login(stronger.test_client(), account)
    with stronger.app_context():
        after = db.session.get(User, account.id).password_hash
    assert before != after and "t=2" in after


def test_disabled_account_cannot_sign_in_and_loses_its_sessions(app, client, make_account):
    account = make_account("journalist")
    login(client, account)
    with app.app_context():
        from protect.accounts import service
        admin = db.session.get(User, make_account("admin").id)
        service.update_user(db.session, admin, db.session.get(User, account.id),
                            role="journalist", active=False)
        db.session.commit()
    assert client.get("/my/requests").status_code == 302
    assert login(app.test_client(), account).status_code == 401
