"""The staff's vault pages through the test client (on SQLite and PostgreSQL):
caseworkers see their journalists' vaults, supervisors every vault — states
and times only; welfare checks, release requests and the two-supervisor
incident trigger through the real forms."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from protect.accounts.models import User
from protect.extensions import db
from protect.notify.models import Notification
from protect.vault import service as vs
from protect.vault.models import Vault, VaultIncident
from protect.vault.service import Schedule
from .conftest import DURESS, PIN, make_vault, open_case, upload
from .test_pages import post, sign_in, text

TITLE = "Investigación: la red de huachicol"
FILE_NAME = "declaracion-del-testigo.pdf"
RECIPIENT = "Editora Forbidden Stories"


@pytest.fixture
def world(app, make_account, clock):
    """A journalist with an open case assigned to a caseworker, and a vault with a file."""
    accounts = {"journalist": make_account("journalist", enrol=False), "caseworker": make_account("caseworker"),
                "caseworker2": make_account("caseworker"), "supervisor": make_account("supervisor"),
                "supervisor2": make_account("supervisor")}
    with app.app_context():
        people = {name: db.session.get(User, a.id) for name, a in accounts.items()}
        case = open_case(people)
        vault = make_vault(people, title=TITLE, schedule=Schedule(after_grace="welfare_hold"))
        vs.add_file_deposit(db.session, people["journalist"], vault, upload(vault, b"secreto", FILE_NAME))
        db.session.commit()
        accounts["vault_id"], accounts["reference"] = vault.id, case.reference
    return accounts


def state(app, vault_id) -> str:
    with app.app_context():
        return db.session.get(Vault, vault_id).state


def sweep_at(app, clock, **later):
    with app.app_context():
        vs.sweep(db.session, now=clock() + timedelta(**later))


def assert_nothing_readable(page: str):
    for secret in (TITLE, FILE_NAME, RECIPIENT, "editora@example.org"):
        assert secret not in page


def test_caseworker_sees_their_journalists_vaults_only(app, client, world, make_account):
    sign_in(client, world["caseworker"])
    page = text(client.get("/staff/vault/"))
    assert world["reference"] in page and world["vault_id"][:8].upper() in page and "Armed" in page
    assert_nothing_readable(page)
    journalist_page = f"/staff/vault/journalists/{world['journalist'].id}"
    response = client.get(journalist_page)
    assert response.status_code == 200 and "check-in due by" in text(response)
    assert_nothing_readable(text(response))
    assert 'id="report-incident"' not in text(response)  # supervisors only

    other = app.test_client()
    sign_in(other, world["caseworker2"])
    assert world["vault_id"] not in text(other.get("/staff/vault/"))
    assert other.get(journalist_page).status_code == 404


def test_supervisor_sees_every_vault_and_no_contents(app, client, world):
    sign_in(client, world["supervisor"])
    for path in ("/staff/vault/", f"/staff/vault/journalists/{world['journalist'].id}", "/staff/vault/incidents"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_nothing_readable(text(response))
    assert world["reference"] in text(client.get("/staff/vault/"))


@pytest.mark.parametrize("role", ["journalist", "donor", "admin"])
def test_the_staff_pages_are_staff_only(app, client, world, make_account, role):
    sign_in(client, make_account(role) if role != "journalist" else world["journalist"])
    assert client.get("/staff/vault/").status_code == 403
    assert client.get(f"/staff/vault/journalists/{world['journalist'].id}").status_code == 403


def test_welfare_check_rearms_the_vault(app, client, world, clock):
    sweep_at(app, clock, days=7, hours=1)   # due: grace
    sweep_at(app, clock, days=9, hours=1)   # grace over: held for the welfare check
    assert state(app, world["vault_id"]) == "welfare_hold"
    token = sign_in(client, world["caseworker"])
    page = text(client.get("/notifications"))
    assert f'href="/staff/vault/journalists/{world["journalist"].id}#vault-{world["vault_id"]}"' in page
    assert_nothing_readable(page)
    page = text(client.get(f"/staff/vault/journalists/{world['journalist'].id}"))
    assert "Waiting for a welfare check" in page and f'id="welfare-{world["vault_id"]}"' in page
    assert "released on" in page
    response = post(client, f"/staff/vault/{world['vault_id']}/welfare", token)
    assert response.status_code == 302
    page = text(client.get(f"/staff/vault/journalists/{world['journalist'].id}"))
    assert "Welfare check confirmed" in page and "Armed" in page
    assert state(app, world["vault_id"]) == "armed"
    # Nothing to confirm now: said in words.
    post(client, f"/staff/vault/{world['vault_id']}/welfare", token)
    assert "This vault is not waiting for a welfare check." in text(client.get("/staff/vault/"))


def test_caseworker_asks_for_release_and_the_journalist_refuses(app, client, world, clock):
    token = sign_in(client, world["caseworker"])
    url = f"/staff/vault/{world['vault_id']}/request-release"
    response = post(client, url, token, reason="")
    assert response.status_code == 422 and "Give the reason" in text(response)
    response = post(client, url, token, reason="x" * 2001)
    assert response.status_code == 422 and "Give the reason" in text(response)
    assert state(app, world["vault_id"]) == "armed"
    response = post(client, url, token, reason="Sus colegas no saben de ella desde el viernes")
    assert response.status_code == 302
    assert "Release requested." in text(client.get("/staff/vault/"))
    assert state(app, world["vault_id"]) == "pending_release"
    response = post(client, url, token, reason="Otra vez")
    assert response.status_code == 422 and "already started" in text(response)

    journalist = app.test_client()
    j_token = sign_in(journalist, world["journalist"])
    page = text(journalist.get("/notifications"))
    assert f'href="/vault/{world["vault_id"]}/refuse-release"' in page
    response = post(journalist, f"/vault/{world['vault_id']}/refuse-release", j_token, pin=PIN)
    assert response.status_code == 200 and state(app, world["vault_id"]) == "armed"
    assert "refused the release" in text(client.get("/notifications"))


def test_other_caseworkers_and_supervisors_cannot_ask_for_release(app, client, world):
    other = app.test_client()
    token = sign_in(other, world["caseworker2"])
    assert post(other, f"/staff/vault/{world['vault_id']}/request-release", token, reason="x").status_code == 404
    assert post(other, f"/staff/vault/{world['vault_id']}/welfare", token).status_code == 404
    token = sign_in(client, world["supervisor"])
    assert post(client, f"/staff/vault/{world['vault_id']}/request-release", token, reason="x").status_code == 403
    assert state(app, world["vault_id"]) == "armed"


def test_incident_needs_two_different_supervisors(app, client, world):
    first, second = client, app.test_client()
    token = sign_in(first, world["supervisor"])
    journalist_page = f"/staff/vault/journalists/{world['journalist'].id}"
    report = f"{journalist_page}/incident"
    response = post(first, report, token, kind="", reason="Testigos lo vieron subir a una camioneta")
    assert response.status_code == 422 and "Choose what happened" in text(response)
    response = post(first, report, token, kind="disappearance", reason="")
    assert response.status_code == 422 and "Give the reason" in text(response)
    response = post(first, report, token, kind="disappearance", reason="Testigos lo vieron subir a una camioneta")
    assert response.status_code == 302
    assert "A different supervisor must confirm it" in text(first.get(journalist_page))
    with app.app_context():
        incident_id = db.session.execute(select(VaultIncident.id)).scalar_one()

    # The same supervisor cannot confirm: told so in words, nothing released.
    confirm = f"/staff/vault/incidents/{incident_id}/confirm"
    page = text(first.get("/staff/vault/incidents"))
    assert "Testigos lo vieron" in page and "by you: another supervisor must confirm it" in page
    response = post(first, confirm, token, reason="Yo mismo lo confirmo")
    assert response.status_code == 422 and "A different supervisor must confirm the incident." in text(response)
    assert state(app, world["vault_id"]) == "armed"

    token2 = sign_in(second, world["supervisor2"])
    page = text(second.get("/notifications"))
    assert f'href="/staff/vault/incidents#incident-{incident_id}"' in page
    response = post(second, confirm, token2, reason="")
    assert response.status_code == 422 and "Give the reason" in text(response)
    response = post(second, confirm, token2, reason="La fiscalía abrió una carpeta por desaparición")
    assert response.status_code == 302
    assert "the release of 1 vault started" in text(second.get("/staff/vault/incidents"))
    assert state(app, world["vault_id"]) == "pending_release"
    assert "No incident is waiting." in text(second.get("/staff/vault/incidents"))
    assert post(second, confirm, token2, reason="otra vez").status_code == 422
    # Staff see the real state; the journalist's own page keeps showing "armed".
    assert "confirmed incident" in text(second.get(journalist_page))
    journalist = app.test_client()
    sign_in(journalist, world["journalist"])
    page = text(journalist.get(f"/vault/{world['vault_id']}"))
    assert "State: Armed" in page and "incident" not in page and "Release under way" not in page


def test_unknown_ids_are_404(app, client, world):
    token = sign_in(client, world["supervisor"])
    for path in ("/staff/vault/journalists/" + "0" * 32, "/staff/vault/journalists/nope",
                 f"/staff/vault/journalists/{world['caseworker'].id}"):
        assert client.get(path).status_code == 404, path
    for path in ("/staff/vault/" + "0" * 32 + "/welfare", "/staff/vault/incidents/" + "0" * 32 + "/confirm",
                 "/staff/vault/journalists/" + "0" * 32 + "/incident"):
        assert post(client, path, token, reason="x", kind="killing").status_code == 404, path
    assert client.get("/staff/vault/?page=abc").status_code == 200
    assert client.get("/staff/vault/?page=-5").status_code == 200


def test_duress_alert_leads_supervisors_to_the_vault(app, client, world):
    with app.app_context():
        vault = db.session.get(Vault, world["vault_id"])
        vs.check_in(db.session, vault, DURESS)
        db.session.commit()
    sign_in(client, world["supervisor"])
    page = text(client.get("/notifications"))
    assert "Duress alert" in page
    assert f'href="/staff/vault/journalists/{world["journalist"].id}#vault-{world["vault_id"]}"' in page
    with app.app_context():
        assert db.session.execute(select(Notification).where(Notification.kind == "vault_duress")).first()
