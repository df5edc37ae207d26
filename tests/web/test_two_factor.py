import re
import time

import pyotp

from protect.accounts.models import RecoveryCode, User
from protect.extensions import db
from tests.conftest import csrf_token, login


def _post(client, path, data, page=None):
    return client.post(path, data=dict(data, csrf_token=csrf_token(client, page or path)))


def test_staff_must_enrol_at_first_login_and_code_is_checked_before_it_counts(app, client, make_account):
    account = make_account("caseworker", enrol=False)
    response = _post(client, "/login", {"email": account.email, "password": account.password})
    assert response.location.endswith("/account/two-step")
    # Not signed in yet: every staff page sends back to login.
    assert "/login" in client.get("/queue").location
    page = client.get("/account/two-step").get_data(as_text=True)
    assert "<svg" in page  # QR code inline
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page).group(1)
    wrong = _post(client, "/account/two-step", {"code": "000000"})
    assert wrong.status_code == 200
    with app.app_context():
        assert not db.session.get(User, account.id).totp_enabled
    done = _post(client, "/account/two-step", {"code": pyotp.TOTP(secret).now()})
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.get_data(as_text=True))
    assert len(codes) == 10
    assert client.get("/queue").status_code == 200
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user.totp_enabled and user.totp_secret == secret
        stored = [r.code_hash for r in db.session.query(RecoveryCode).filter_by(user_id=account.id)]
        assert len(stored) == 10 and not any(c in h for c in codes for h in stored)


def test_a_totp_code_is_never_accepted_twice(client, make_account):
    account = make_account("supervisor")
    assert login(client, account).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/overview")})
    # Same code again (same 30 s step): refused.
    _post(client, "/login", {"email": account.email, "password": account.password})
    again = _post(client, "/login/code", {"code": account.code()})
    assert again.status_code == 401
    # An older step than the one used is refused as well.
    older = _post(client, "/login/code", {"code": account.code(-1)})
    assert older.status_code == 401


def test_recovery_code_signs_in_once(app, client, make_account):
    account = make_account("admin")
    login(client, account)
    page = _post(client, "/account/recovery-codes", {"password": account.password}, "/account")
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", page.get_data(as_text=True))
    assert len(codes) == 10
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    _post(client, "/login", {"email": account.email, "password": account.password})
    assert _post(client, "/login/code", {"code": codes[0].upper()}).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    _post(client, "/login", {"email": account.email, "password": account.password})
    assert _post(client, "/login/code", {"code": codes[0]}).status_code == 401


def test_journalist_two_step_is_optional(client, make_account):
    account = make_account("journalist")
    response = login(client, account)
    assert response.location.endswith("/my/requests")
    page = client.get("/account/two-step").get_data(as_text=True)
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page).group(1)
    _post(client, "/account/two-step", {"code": pyotp.TOTP(secret).now()})
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    response = _post(client, "/login", {"email": account.email, "password": account.password})
    assert response.location.endswith("/login/code")
    # Journalists may turn it off again; staff may not.
    assert _post(client, "/login/code", {"code": pyotp.TOTP(secret).at(time.time() + 30)}).status_code == 302
    _post(client, "/account/two-step/off", {"password": account.password}, "/account")
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    assert _post(client, "/login", {"email": account.email, "password": account.password}).location.endswith("/my/requests")


def test_pending_second_factor_expires(client, make_account, monkeypatch):
    account = make_account("caseworker")
    _post(client, "/login", {"email": account.email, "password": account.password})
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 301)
    assert client.get("/login/code").location.endswith("/login")
