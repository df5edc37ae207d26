"""The journalist's vault pages through the test client (on SQLite and PostgreSQL):
a vault made, filled, armed and checked in through the real forms; the one-tap
check-in (a GET changes nothing; the duress PIN's answer is the PIN's, byte for
byte); bad input; who may reach what."""
from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from protect.accounts.models import User
from protect.extensions import db
from protect.notify.models import Notification
from protect.vault import service as vs
from protect.vault.models import Deposit, PinFailure, Vault, VaultEvent
from tests.conftest import csrf_token, login

from .conftest import DURESS, PIN, new_key, open_case

TITLE = "Investigación: los contratos del gobernador"
FILE_NAME = "fuentes-confidenciales.pdf"
PLAINTEXT = b"%PDF-1.7 PLAINTEXT-MARKER-vault-5e2a " * 300


# -- helpers ------------------------------------------------------------------------

def sign_in(client, account) -> str:
    """Sign in through the real forms and switch to English; returns a CSRF token."""
    assert login(client, account).status_code == 302
    token = csrf_token(client, "/account")
    client.post("/language", data={"language": "en", "next": "/account", "csrf_token": token})
    return token


def text(response) -> str:
    return response.get_data(as_text=True)


def post(client, url, token, headers=None, **data):
    return client.post(url, data={"csrf_token": token, **data}, headers=headers)


def create_vault(client, token, title=TITLE, recipients_only=False) -> str:
    data = {"title": title, **({"recipients_only": "y"} if recipients_only else {})}
    response = post(client, "/vault/new", token, **data)
    assert response.status_code == 302, text(response)[:2000]
    match = re.fullmatch(r"/vault/([0-9a-f]{32})", urlsplit(response.location).path)
    assert match, response.location
    return match.group(1)


def set_pins(client, token, vault_id, pin=PIN, duress=DURESS, current=None):
    data = {"pin": pin, "pin_confirm": pin, "duress_pin": duress, "duress_pin_confirm": duress}
    if current is not None:
        data["current_pin"] = current
    return post(client, f"/vault/{vault_id}/pins", token, **data)


def add_recipient(client, token, vault_id, key=None, code=None, name="Editora Forbidden Stories",
                  email="editora@example.org", language="en"):
    return post(client, f"/vault/{vault_id}/recipients", token, name=name, email=email, language=language,
                age_recipient=key or "", access_code=code or "")


def upload(client, token, vault_id, data=PLAINTEXT, name=FILE_NAME):
    return client.post(f"/vault/{vault_id}/files", data={"csrf_token": token, "file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def ready_vault(client, token, *, recipients_only=False) -> tuple[str, tuple[str, str]]:
    """A vault with PINs and a recipient with a key, armed; returns (id, the key)."""
    vault_id = create_vault(client, token, recipients_only=recipients_only)
    assert set_pins(client, token, vault_id).status_code == 302
    key = new_key()
    assert add_recipient(client, token, vault_id, key=key[1]).status_code == 302
    response = post(client, f"/vault/{vault_id}/arm", token, **{"arm-pin": PIN})
    assert response.status_code == 302, text(response)[:3000]
    return vault_id, key


def vault_row(app, vault_id) -> Vault:
    with app.app_context():
        vault = db.session.get(Vault, vault_id)
        db.session.expunge(vault)
        return vault


def files_containing(app, needle: bytes) -> list[Path]:
    return [p for p in Path(app.instance_path).rglob("*") if p.is_file() and needle in p.read_bytes()]


# The request id a proxy would give; echoed in X-Request-ID (otherwise made per request).
SAME_ID = {"X-Request-ID": "3f" * 16}


def comparable(response):
    """Status, headers but the session cookie, and the body without CSRF tokens
    (signed with the time, they differ between any two pages)."""
    body = re.sub(rb'(name="csrf_token" value=")[^"]+"', rb'\1"', response.data)
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "set-cookie")
    return response.status_code, headers, body


@pytest.fixture
def journalist(make_account):
    return make_account("journalist", enrol=False)


# -- the journey -----------------------------------------------------------------------

def test_create_fill_arm_and_check_in(app, client, journalist, clock):
    token = sign_in(client, journalist)
    assert "You have no vault" in text(client.get("/vault/"))
    vault_id = create_vault(client, token)
    page = text(client.get(f"/vault/{vault_id}"))
    assert TITLE in page and "Draft" in page and "PINs: not set yet" in page

    assert set_pins(client, token, vault_id).status_code == 302
    key = new_key()
    response = add_recipient(client, token, vault_id, key=key[1])
    assert response.status_code == 302
    assert "Editora Forbidden Stories" in text(client.get(f"/vault/{vault_id}/recipients"))

    response = upload(client, token, vault_id)
    assert response.status_code == 302 and response.location.endswith(f"/vault/{vault_id}#deposits")
    assert post(client, f"/vault/{vault_id}/notes", token, text="Nota: la fuente vive en Xalapa").status_code == 302
    page = text(client.get(f"/vault/{vault_id}"))
    assert FILE_NAME in page and "The file was encrypted and deposited." in page and "Note" in page
    # Encrypted as it arrived: the plaintext is nowhere under the instance (database, blobs, temporaries).
    assert files_containing(app, b"PLAINTEXT-MARKER-vault") == []
    assert files_containing(app, b"la fuente vive") == []
    with app.app_context():
        deposit = db.session.execute(select(Deposit).where(Deposit.kind == "file")).scalar_one()
        assert deposit.size == len(PLAINTEXT)
        from .conftest import blob_bytes, decrypt
        assert decrypt(blob_bytes(deposit.blob_id), [key[0]]) == PLAINTEXT  # the recipient's key opens it

    response = post(client, f"/vault/{vault_id}/arm", token, **{"arm-pin": PIN})
    assert response.status_code == 302
    page = text(client.get(f"/vault/{vault_id}"))
    assert "The vault is armed. Your first check-in is due by" in page and "State: Armed" in page

    clock.advance(hours=1)
    page = text(client.get(f"/vault/{vault_id}/check-in"))
    assert 'id="check-in"' in page and 'name="pin"' in page
    response = post(client, f"/vault/{vault_id}/check-in", token, pin=PIN)
    assert response.status_code == 200
    assert "Checked in. Your next check-in is due by" in text(response)
    vault = vault_row(app, vault_id)
    assert vault.state == "armed" and vault.last_checkin_at == clock()
    assert vault.next_due_at == clock() + timedelta(days=7)

    page = text(client.get(f"/vault/{vault_id}/timeline"))
    for label in ("Vault created", "PINs set", "Recipient added", "Deposit added", "Armed", "Checked in"):
        assert label in page
    index = text(client.get("/vault/"))
    assert TITLE in index and "Armed" in index and "Next check-in due by" in index


def test_every_owner_page_renders(client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    for path in ("", "/check-in", "/refuse-release", "/settings", "/pins", "/recipients", "/codepositors",
                 "/timeline"):
        response = client.get(f"/vault/{vault_id}{path}")
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/vault/new").status_code == 200
    assert client.get(f"/vault/{vault_id}/add").status_code == 302  # the owner adds on the vault page


def test_a_get_on_the_check_in_link_changes_nothing(app, client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    clock.advance(days=2)
    sign_in(client, journalist)  # the idle session ended meanwhile

    def snapshot():
        with app.app_context():
            vault = db.session.get(Vault, vault_id)
            events = db.session.execute(select(func.count()).select_from(VaultEvent)).scalar_one()
            return (vault.version, vault.state, vault.last_checkin_at, vault.next_due_at, events)

    before = snapshot()
    for _ in range(3):  # a mail scanner, the preview, the person
        assert client.get(f"/vault/{vault_id}/check-in").status_code == 200
        assert client.get(f"/vault/{vault_id}/refuse-release").status_code == 200
        assert client.head(f"/vault/{vault_id}/check-in").status_code == 200
    assert snapshot() == before
    # Not even with the PIN in the address.
    assert client.get(f"/vault/{vault_id}/check-in?pin={PIN}").status_code == 200
    assert snapshot() == before


def test_a_refusal_is_not_translated_until_it_is_shown(app, monkeypatch):
    """A check-in racing the sweep fails at the flush; the StaleVault raised then must
    not translate its message at once: the locale lookup would load the signed-in
    account through the failed session (seen under load as a 500). It is translated
    when shown, after the rollback."""
    def failed_session():
        raise AssertionError("the locale was asked for while the session had failed")

    babel = app.extensions["babel"]
    selector = babel.locale_selector
    with app.test_request_context("/"):
        babel.locale_selector = failed_session
        try:
            error = vs.StaleVault()
        finally:
            babel.locale_selector = selector
    with app.test_request_context("/"):
        assert "This vault changed meanwhile" in str(error.message)


@pytest.mark.parametrize("duress_action", ["alert", "alert_and_release"])
def test_duress_check_in_answers_exactly_as_the_pin(app, client, journalist, make_account, clock, duress_action):
    supervisors = [make_account("supervisor"), make_account("supervisor")]
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token)
    if duress_action != "alert":
        assert post(client, f"/vault/{vault_id}/duress-action", token, duress_action=duress_action).status_code == 302
    assert set_pins(client, token, vault_id).status_code == 302
    assert add_recipient(client, token, vault_id, key=new_key()[1]).status_code == 302
    assert post(client, f"/vault/{vault_id}/arm", token, **{"arm-pin": PIN}).status_code == 302
    client.get(f"/vault/{vault_id}")  # the flash message is shown (and gone)

    normal = post(client, f"/vault/{vault_id}/check-in", token, pin=PIN, headers=SAME_ID)
    coerced = post(client, f"/vault/{vault_id}/check-in", token, pin=DURESS, headers=SAME_ID)
    assert normal.status_code == 200 and "Checked in." in text(normal)
    assert comparable(coerced) == comparable(normal)

    with app.app_context():
        alerts = db.session.execute(select(Notification).where(Notification.kind == "vault_duress")).scalars().all()
        assert {n.user_id for n in alerts} == {s.id for s in supervisors}
        assert not db.session.execute(select(Notification).where(Notification.user_id == journalist.id)).first()
        vault = db.session.get(Vault, vault_id)
        assert vault.state == ("armed" if duress_action == "alert" else "pending_release")
        assert vs.shown_state(vault) == "armed"
    # The journalist's alerts page and the vault page show nothing of it.
    page = text(client.get(f"/vault/{vault_id}"))
    assert "State: Armed" in page and "duress" not in text(client.get("/notifications")).lower()
    assert "Release" not in text(client.get(f"/vault/{vault_id}/timeline"))


def test_duress_refusal_of_a_release_request_answers_as_the_pin(app, client, journalist, make_account, clock):
    caseworker = make_account("caseworker")
    supervisor = make_account("supervisor")
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    with app.app_context():
        people = {"journalist": db.session.get(User, journalist.id), "caseworker": db.session.get(User, caseworker.id)}
        open_case(people)

    def ask():
        with app.app_context():
            vault = db.session.get(Vault, vault_id)
            vs.request_release(db.session, db.session.get(User, caseworker.id), vault, "No responde desde el lunes")
            db.session.commit()

    ask()
    page = text(client.get(f"/vault/{vault_id}/refuse-release"))
    assert "Someone asked for this vault to be released" in page and 'id="refuse-release"' in page
    assert "No responde" not in page  # the reason is the staff's
    normal = post(client, f"/vault/{vault_id}/refuse-release", token, pin=PIN, headers=SAME_ID)
    assert normal.status_code == 200 and "You refused the release." in text(normal)
    ask()
    coerced = post(client, f"/vault/{vault_id}/refuse-release", token, pin=DURESS, headers=SAME_ID)
    assert comparable(coerced) == comparable(normal)
    with app.app_context():
        assert vs.shown_state(db.session.get(Vault, vault_id)) == "armed"
        alerts = db.session.execute(select(Notification).where(Notification.kind == "vault_duress")).scalars().all()
        assert [n.user_id for n in alerts] == [supervisor.id]


def test_wrong_pin_then_throttled(app, client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    response = post(client, f"/vault/{vault_id}/check-in", token, pin="")
    assert response.status_code == 422 and "Enter the PIN." in text(response)
    for attempt in range(vs.THROTTLE_FAILURES):
        response = post(client, f"/vault/{vault_id}/check-in", token, pin="000000")
        assert response.status_code == 422 and "That PIN is not right." in text(response), attempt
    response = post(client, f"/vault/{vault_id}/check-in", token, pin=PIN)  # even the right one, now
    assert response.status_code == 429 and "Too many wrong PINs" in text(response)
    response = post(client, f"/vault/{vault_id}/disarm", token, **{"disarm-pin": PIN})
    assert response.status_code == 429 and "Too many wrong PINs" in text(response)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(PinFailure)).scalar_one() == vs.THROTTLE_FAILURES
    clock.advance(vs.THROTTLE_WINDOW)
    assert post(client, f"/vault/{vault_id}/check-in", token, pin=PIN).status_code == 200


def test_pause_and_disarm_and_arm_again(app, client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    until = (clock() + timedelta(days=3)).astimezone(vs_mexico()).strftime("%Y-%m-%dT%H:%M")
    response = post(client, f"/vault/{vault_id}/pause", token, **{"pause-pin": PIN, "pause-until": until})
    assert response.status_code == 302
    assert "Paused until" in text(client.get(f"/vault/{vault_id}"))
    assert vault_row(app, vault_id).state == "paused"
    too_far = (clock() + timedelta(days=60)).astimezone(vs_mexico()).strftime("%Y-%m-%dT%H:%M")
    response = post(client, f"/vault/{vault_id}/check-in", token, pin=PIN)  # ends the pause
    assert response.status_code == 200 and vault_row(app, vault_id).state == "armed"
    response = post(client, f"/vault/{vault_id}/pause", token, **{"pause-pin": PIN, "pause-until": too_far})
    assert response.status_code == 422 and "Choose an end for the pause" in text(response)
    response = post(client, f"/vault/{vault_id}/disarm", token, **{"disarm-pin": PIN})
    assert response.status_code == 302 and vault_row(app, vault_id).state == "disarmed"
    assert "The vault is disarmed." in text(client.get(f"/vault/{vault_id}"))
    response = post(client, f"/vault/{vault_id}/arm", token, **{"arm-pin": PIN})
    assert response.status_code == 302 and vault_row(app, vault_id).state == "armed"


def vs_mexico():
    from protect.cases.forms import MEXICO
    return MEXICO


# -- settings, PINs, recipients ---------------------------------------------------------

SETTINGS = {"interval_days": "3", "reminder_hours": "12, 1", "grace_hours": "24", "after_grace": "welfare_hold",
            "welfare_hold_hours": "36", "max_pause_hours": "240", "veto_hours": "48",
            "coerced_deletion_protection": "y", "deletion_delay_hours": "96", "downloads_per_file": "3"}


def test_settings_are_saved_and_refused_while_armed(app, client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token)
    response = post(client, f"/vault/{vault_id}/settings", token, **SETTINGS)
    assert response.status_code == 302, text(response)[:3000]
    vault = vault_row(app, vault_id)
    assert (vault.interval_hours, vault.reminder_hours, vault.grace_hours, vault.after_grace) == (72, [12, 1], 24, "welfare_hold")
    assert (vault.welfare_hold_hours, vault.max_pause_hours, vault.veto_hours) == (36, 240, 48)
    assert vault.coerced_deletion_protection and vault.deletion_delay_hours == 96 and vault.downloads_per_file == 3
    page = text(client.get(f"/vault/{vault_id}/settings"))
    assert 'value="3"' in page and 'value="12, 1"' in page

    assert set_pins(client, token, vault_id).status_code == 302
    assert add_recipient(client, token, vault_id, code="entregado-en-mano").status_code == 302
    assert post(client, f"/vault/{vault_id}/arm", token, **{"arm-pin": PIN}).status_code == 302
    response = post(client, f"/vault/{vault_id}/settings", token, **{**SETTINGS, "interval_days": "5"})
    assert response.status_code == 422 and "Disarm the vault" in text(response)
    assert vault_row(app, vault_id).interval_hours == 72


BAD_SETTINGS = [
    ({"interval_days": "abc"}, "Write a whole number."),
    ({"interval_days": "0"}, "Check in every 1 to 90 days"),
    ({"interval_days": "91"}, "Check in every 1 to 90 days"),
    ({"interval_days": "9" * 5000}, "Write a whole number."),
    ({"reminder_hours": "24, x"}, "Write whole numbers of hours separated by commas"),
    ({"reminder_hours": "24, 24"}, "Reminders are up to"),
    ({"grace_hours": "-1"}, "The grace period is 1 hour to 30 days."),
    ({"after_grace": "explode"}, "Choose what happens after the grace period."),
    ({"veto_hours": "2"}, "The time to refuse a release request is 1 to 30 days."),
    ({"downloads_per_file": "11"}, "Each recipient may download each file 1 to 10 times."),
    ({"downloads_per_file": ""}, "Write a whole number."),
]


@pytest.mark.parametrize("change,message", BAD_SETTINGS)
def test_bad_settings_say_why(app, client, journalist, change, message):
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token)
    before = vault_row(app, vault_id).version
    response = post(client, f"/vault/{vault_id}/settings", token, **{**SETTINGS, **change})
    assert response.status_code == 422 and message in text(response)
    assert vault_row(app, vault_id).version == before


def test_bad_input_on_the_other_forms(app, client, journalist):
    token = sign_in(client, journalist)
    assert post(client, "/vault/new", token, title="").status_code == 422
    assert "Give the vault a name" in text(post(client, "/vault/new", token, title="x" * 201))
    vault_id = create_vault(client, token)
    cases = [
        (set_pins(client, token, vault_id, pin="123"), "A PIN has 6 to 32"),
        (set_pins(client, token, vault_id, pin=PIN, duress=PIN), "The duress PIN must differ"),
        (post(client, f"/vault/{vault_id}/pins", token, pin=PIN, pin_confirm="999999", duress_pin=DURESS,
              duress_pin_confirm=DURESS), "The two PINs you typed differ."),
        (add_recipient(client, token, vault_id, key="age1nonsense"), "That is not an age public key"),
        (add_recipient(client, token, vault_id, key=new_key()[0]), "That is a secret key"),
        (add_recipient(client, token, vault_id, email="not-an-address", code="codigo-largo"), "e-mail address"),
        (add_recipient(client, token, vault_id), "needs an access code"),
        (add_recipient(client, token, vault_id, code="corto"), "An access code has 8 to 128"),
        (add_recipient(client, token, vault_id, code="codigo-largo", language="fr"), "Choose the language"),
        (post(client, f"/vault/{vault_id}/webhook", token, webhook_url="http://example.org/hook"), "starting with https://"),
        (post(client, f"/vault/{vault_id}/webhook", token, webhook_url="javascript:alert(1)"), "starting with https://"),
        (post(client, f"/vault/{vault_id}/webhook", token, webhook_url="https://user:pw@example.org/"), "starting with https://"),
        (post(client, f"/vault/{vault_id}/rename", token, title=""), "Give the vault a name"),
        (post(client, f"/vault/{vault_id}/notes", token, text="   "), "Write the note"),
        (post(client, f"/vault/{vault_id}/codepositors", token, email=""), "Give the e-mail address"),
        (post(client, f"/vault/{vault_id}/arm", token, **{"arm-pin": PIN}), "Set the PIN and the duress PIN"),
        (post(client, f"/vault/{vault_id}/pause", token, **{"pause-pin": PIN, "pause-until": "mañana"}),
         "Choose a date and a time."),
        (post(client, f"/vault/{vault_id}/disarm", token, **{"disarm-pin": ""}), "Enter the PIN."),
        (post(client, f"/vault/{vault_id}/disarm", token, **{"disarm-pin": PIN}), "This vault is not armed."),
        (post(client, f"/vault/{vault_id}/delete", token), "Tick the box"),
        (client.post(f"/vault/{vault_id}/files", data={"csrf_token": token, "file": (io.BytesIO(b""), "")},
                     content_type="multipart/form-data"), "Choose a file to deposit"),
        (post(client, f"/vault/{vault_id}/check-in", token, pin=PIN), "not armed"),
    ]
    for response, message in cases:
        assert response.status_code in (200, 422), (message, response.status_code)
        assert message in text(response), message
    assert vault_row(app, vault_id).state == "draft"


def test_a_file_sent_where_none_belongs_is_refused(client, journalist):
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token)
    response = client.post(f"/vault/{vault_id}/notes", data={"csrf_token": token, "file": (io.BytesIO(b"x"), "a.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 400


def test_a_deposit_may_exceed_the_apps_upload_limit(app, client, journalist):
    """Evidence and forms keep the app-wide limit; a deposit is bound only by the vault's."""
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token)
    assert add_recipient(client, token, vault_id, key=new_key()[1]).status_code == 302
    big = PLAINTEXT * 20  # 222 kB
    assert upload(client, token, vault_id, data=big).status_code == 302
    with app.app_context():
        assert db.session.execute(select(Deposit.size)).scalar_one() == len(big)
    response = client.post("/requests/new", data={"csrf_token": token, "padding": "x" * 100_000})
    assert response.status_code == 413


def test_recipients_only_vault_explains_itself(app, client, journalist):
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token, recipients_only=True)
    page = text(client.get(f"/vault/{vault_id}"))
    assert "the server cannot read this vault" in page.lower()
    assert 'id="deposit-file"' not in page  # nothing to encrypt to yet
    # A file sent anyway is refused before a byte is kept.
    assert upload(client, token, vault_id).status_code == 400
    response = add_recipient(client, token, vault_id, code="codigo-en-persona")
    assert response.status_code == 422 and "every recipient needs an age key" in text(response)
    assert "delete the deposits, add the recipient, then deposit the files again" in text(
        client.get(f"/vault/{vault_id}/recipients"))
    key = new_key()
    assert add_recipient(client, token, vault_id, key=key[1]).status_code == 302
    assert upload(client, token, vault_id).status_code == 302
    page = text(client.get(f"/vault/{vault_id}"))
    assert FILE_NAME not in page and "Encrypted name" in page and "11.1 kB" in page
    assert files_containing(app, b"PLAINTEXT-MARKER-vault") == []


def test_deleting_with_and_without_protection(app, client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id = create_vault(client, token)
    assert add_recipient(client, token, vault_id, key=new_key()[1]).status_code == 302
    assert upload(client, token, vault_id).status_code == 302
    with app.app_context():
        deposit = db.session.execute(select(Deposit)).scalar_one()
        deposit_id, blob_id = deposit.id, deposit.blob_id
    response = post(client, f"/vault/{vault_id}/deposits/{deposit_id}/delete", token)
    assert response.status_code == 302
    assert "The deposit was deleted" in text(client.get(f"/vault/{vault_id}"))
    with app.app_context():
        assert not app.extensions["protect.blobs"].exists(blob_id)

    assert post(client, f"/vault/{vault_id}/settings", token, **SETTINGS).status_code == 302
    assert upload(client, token, vault_id).status_code == 302
    with app.app_context():
        deposit_id = db.session.execute(select(Deposit.id).where(Deposit.deleted_at.is_(None))).scalar_one()
    assert post(client, f"/vault/{vault_id}/deposits/{deposit_id}/delete", token).status_code == 302
    page = text(client.get(f"/vault/{vault_id}"))
    assert "The deposit will be deleted on" in page and "Cancel the deletion" in page
    assert post(client, f"/vault/{vault_id}/deposits/{deposit_id}/cancel-deletion", token).status_code == 302
    assert "The deletion was cancelled." in text(client.get(f"/vault/{vault_id}"))

    assert post(client, f"/vault/{vault_id}/delete", token, confirm="y").status_code == 302
    page = text(client.get(f"/vault/{vault_id}"))
    assert "The vault will be deleted on" in page
    assert post(client, f"/vault/{vault_id}/cancel-deletion", token).status_code == 302
    assert vault_row(app, vault_id).delete_after is None

    other = create_vault(client, token, title="Otra")
    response = post(client, f"/vault/{other}/delete", token, confirm="y")
    assert response.status_code == 302 and urlsplit(response.location).path == "/vault/"
    assert client.get(f"/vault/{other}").status_code == 404


# -- who may reach what ---------------------------------------------------------------------

OWNER_GETS = ("", "/check-in", "/refuse-release", "/settings", "/pins", "/recipients", "/codepositors", "/timeline")
OWNER_POSTS = ("/arm", "/pause", "/disarm", "/check-in", "/refuse-release", "/settings", "/rename", "/webhook",
               "/pins", "/duress-action", "/recipients", "/codepositors", "/delete", "/cancel-deletion")


def test_another_journalist_gets_404_everywhere(app, client, journalist, make_account):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    assert upload(client, token, vault_id).status_code == 302
    with app.app_context():
        deposit_id = db.session.execute(select(Deposit.id)).scalar_one()
        recipient_id = db.session.get(Vault, vault_id).recipients[0].id
    client.post("/logout", data={"csrf_token": token})

    other = make_account("journalist", enrol=False)
    token = sign_in(client, other)
    for path in OWNER_GETS + ("/add",):
        assert client.get(f"/vault/{vault_id}{path}").status_code == 404, path
    for path in OWNER_POSTS + ("/notes", f"/deposits/{deposit_id}/delete", f"/deposits/{deposit_id}/cancel-deletion",
                               f"/recipients/{recipient_id}/remove", f"/codepositors/{other.id}/remove"):
        assert post(client, f"/vault/{vault_id}{path}", token, pin=PIN).status_code == 404, path
    assert upload(client, token, vault_id).status_code == 404
    assert TITLE not in text(client.get("/vault/"))
    assert vault_row(app, vault_id).state == "armed"


@pytest.mark.parametrize("role", ["caseworker", "supervisor", "admin", "donor"])
def test_no_staff_role_reaches_the_journalists_pages(app, client, journalist, make_account, role):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    client.post("/logout", data={"csrf_token": token})
    token = sign_in(client, make_account(role))
    for path in OWNER_GETS + ("/add",):
        assert client.get(f"/vault/{vault_id}{path}").status_code == 403, path
    assert post(client, f"/vault/{vault_id}/check-in", token, pin=PIN).status_code == 403


def test_codepositor_adds_but_cannot_list_read_or_delete(app, client, journalist, make_account):
    colleague = make_account("journalist", enrol=False)
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    neutral = "If that address belongs to a journalist"
    for email in ("nadie@example.org", make_account("caseworker").email, colleague.email):
        response = post(client, f"/vault/{vault_id}/codepositors", token, email=email)
        assert response.status_code == 302
        assert neutral in text(client.get(f"/vault/{vault_id}/codepositors"))
    page = text(client.get(f"/vault/{vault_id}/codepositors"))
    assert colleague.email in page and "nadie@example.org" not in page
    client.post("/logout", data={"csrf_token": token})

    token = sign_in(client, colleague)
    index = text(client.get("/vault/"))
    assert f"/vault/{vault_id}/add" in index and TITLE not in index
    page = text(client.get(f"/vault/{vault_id}/add"))
    assert 'id="deposit-file"' in page and TITLE not in page
    response = upload(client, token, vault_id, name="memo-filtrado.docx")
    assert response.status_code == 302 and response.location.endswith(f"/vault/{vault_id}/add")
    assert post(client, f"/vault/{vault_id}/notes", token, text="Otra pista").status_code == 302
    with app.app_context():
        deposit_id = db.session.execute(select(Deposit.id).where(Deposit.kind == "file")).scalar_one()
    for path in OWNER_GETS:
        assert client.get(f"/vault/{vault_id}{path}").status_code == 404, path
    assert post(client, f"/vault/{vault_id}/deposits/{deposit_id}/delete", token).status_code == 404
    assert "memo-filtrado" not in text(client.get(f"/vault/{vault_id}/add"))
    client.post("/logout", data={"csrf_token": token})

    token = sign_in(client, journalist)
    page = text(client.get(f"/vault/{vault_id}"))
    assert "memo-filtrado.docx" in page and page.count("added by a co-depositor") == 2
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Deposit)
                                  .where(Deposit.deleted_at.is_(None))).scalar_one() == 2
    response = post(client, f"/vault/{vault_id}/codepositors/{colleague.id}/remove", token)
    assert response.status_code == 302
    client.post("/logout", data={"csrf_token": token})
    sign_in(client, colleague)
    assert client.get(f"/vault/{vault_id}/add").status_code == 404


# -- notices --------------------------------------------------------------------------------

def test_notices_lead_to_the_check_in_page(app, client, journalist, clock):
    token = sign_in(client, journalist)
    vault_id, _key = ready_vault(client, token)
    with app.app_context():
        vs.sweep(db.session, now=clock() + timedelta(days=6, hours=1))  # the 24 h reminder
    page = text(client.get("/notifications"))
    assert "Check in to your vault" in page and f'href="/vault/{vault_id}/check-in"' in page
