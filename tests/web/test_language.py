from protect.accounts.models import User
from protect.extensions import db
from tests.conftest import csrf_token, login


def test_login_page_in_spanish_by_default_and_english_on_request(client):
    es = client.get("/login").get_data(as_text=True)
    en = client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}).get_data(as_text=True)
    assert '<html lang="es">' in es and "Iniciar sesión" in es and "Contraseña" in es
    assert '<html lang="en">' in en and "Sign in" in en and "Password" in en


def test_unsupported_browser_language_falls_back_to_spanish(client):
    page = client.get("/login", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert '<html lang="es">' in page


def test_choice_beats_browser_and_is_remembered_for_the_account(app, client, make_account):
    account = make_account("journalist")
    login(client, account)
    client.post("/language", data={"language": "en", "next": "/my/requests",
                                   "csrf_token": csrf_token(client, "/my/requests")})
    page = client.get("/my/requests", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert '<html lang="en">' in page
    with app.app_context():
        assert db.session.get(User, account.id).locale == "en"


def test_language_switch_never_redirects_off_site(client):
    r = client.post("/language", data={"language": "en", "next": "//evil.example/",
                                       "csrf_token": csrf_token(client)})
    assert r.status_code == 302 and r.location == "/"
