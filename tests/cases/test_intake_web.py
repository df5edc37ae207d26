"""The journalist's side through the test client: the five-step request, following
a case, evidence up and down, and who may reach what (on SQLite and PostgreSQL)."""
from __future__ import annotations

import dataclasses
import io
import re
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from protect.accounts.models import User
from protect.audit.models import AuditEntry
from protect.cases import service
from protect.cases.models import Case, Evidence, Incident, Message
from protect.extensions import db
from tests.conftest import csrf_token, login

YESTERDAY = (date.today() - timedelta(days=1)).isoformat()
PHOTO_A = b"\xff\xd8\xffPLAINTEXT-MARKER-photo-a-7f3c" * 40
PHOTO_B = b"\xff\xd8\xffPLAINTEXT-MARKER-photo-b-91e2" * 40
SCREENSHOT = b"\x89PNG\r\n\x1a\nPLAINTEXT-MARKER-screenshot-c4d8" * 40


# -- helpers ---------------------------------------------------------------------

def sign_in(client, account) -> str:
    """Sign in through the real forms, switch to English; returns a CSRF token."""
    response = login(client, account)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    token = csrf_token(client, "/account")
    client.post("/language", data={"language": "en", "next": "/account", "csrf_token": token})
    return token


def sign_out(client, token):
    client.post("/logout", data={"csrf_token": token})


def text(response) -> str:
    return response.get_data(as_text=True)


def new_request(client, token) -> str:
    response = client.post("/requests/new", data={"csrf_token": token})
    assert response.status_code == 302
    match = re.fullmatch(r"/requests/([0-9a-f]{32})/step/1", urlsplit(response.location).path)
    assert match, response.location
    return match.group(1)


def step_url(case_id, n):
    return f"/requests/{case_id}/step/{n}"


WHO = {"name": "Lucía", "pseudonymous": "y", "real_identity": "Lucía Hernández Ruiz",
       "contact": "+52 55 0000 0000", "beneficiary_type": "journalist", "gender": "woman",
       "others_at_risk": "My brother"}
WORK = {"outlet": "Diario del Sur", "journalism_kind": "print", "state_code": "GRO",
        "municipality": "Chilpancingo"}
INCIDENT = {"occurred_on": YESTERDAY, "kind": "threat", "aggressor": "criminal_group",
            "channel": "messaging", "place": "Home", "narrative": "They sent a photo of my house."}


def post_step(client, case_id, n, token, data, **kw):
    return client.post(step_url(case_id, n), data={"csrf_token": token, **data}, **kw)


def draft_at_step3(client, token, who=None, work=None) -> str:
    case_id = new_request(client, token)
    response = post_step(client, case_id, 1, token, who or WHO)
    assert response.status_code == 302 and response.location.endswith(step_url(case_id, 2)), text(response)[:2000]
    response = post_step(client, case_id, 2, token, work or WORK)
    assert response.status_code == 302 and response.location.endswith(step_url(case_id, 3)), text(response)[:2000]
    return case_id


def add_incident(client, case_id, token, files=(), **over):
    data = {**INCIDENT, **over, "action": "add"}
    if files:
        data["files"] = [(io.BytesIO(content), name) for name, content in files]
    return post_step(client, case_id, 3, token, data)


def to_review(client, case_id, token):
    assert post_step(client, case_id, 3, token, {"action": "continue"}).location.endswith(step_url(case_id, 4))
    assert post_step(client, case_id, 4, token, {"action": "continue"}).location.endswith(step_url(case_id, 5))


def send(client, case_id, token, danger="no", consent=True):
    data = {"danger": danger}
    if consent:
        data["consent"] = "y"
    return post_step(client, case_id, 5, token, data)


def submitted(client, token, danger="no", files=()) -> str:
    case_id = draft_at_step3(client, token)
    assert add_incident(client, case_id, token, files=files).status_code == 302
    to_review(client, case_id, token)
    response = send(client, case_id, token, danger=danger)
    assert response.status_code == 302 and response.location.endswith(f"/requests/{case_id}"), text(response)[:2000]
    return case_id


def blob_root(app) -> Path:
    return Path(app.extensions["protect.blobs"].root)


def blob_files(app) -> list[Path]:
    return [p for p in blob_root(app).rglob("*") if p.is_file() and p.parent.name != "tmp"]


def files_containing(app, needle: bytes) -> list[Path]:
    return [p for p in Path(app.instance_path).rglob("*") if p.is_file() and needle in p.read_bytes()]


def get_case(app, case_id) -> Case:
    with app.app_context():
        case = db.session.get(Case, case_id)
        db.session.expunge(case)
        return case


@pytest.fixture
def journalist(client, make_account):
    account = make_account("journalist")
    return account, sign_in(client, account)


# -- the whole request ------------------------------------------------------------

def test_complete_intake_through_five_steps(app, client, journalist):
    account, token = journalist
    page = client.get("/my/requests")
    assert page.status_code == 200 and "You have not made any request" in text(page) and "911" in text(page)

    case_id = new_request(client, token)
    page = text(client.get(step_url(case_id, 1)))
    assert "Step 1 of 5" in page and "only a supervisor can reveal it" in page
    # Later steps are not reachable before the earlier ones are saved.
    assert client.get(step_url(case_id, 4)).location.endswith(step_url(case_id, 1))

    assert post_step(client, case_id, 1, token, WHO).location.endswith(step_url(case_id, 2))
    page = text(client.get(step_url(case_id, 2)))
    assert "Step 2 of 5" in page and f'href="{step_url(case_id, 1)}"' in page  # Back link
    assert page.count("<option") >= 33 and "Zacatecas" in page
    assert post_step(client, case_id, 2, token, WORK).location.endswith(step_url(case_id, 3))

    page = text(client.get(step_url(case_id, 3)))
    assert 'enctype="multipart/form-data"' in page and 'type="file"' in page and "multiple" in page
    response = add_incident(client, case_id, token, files=[("a.jpg", PHOTO_A), ("b.jpg", PHOTO_B)])
    assert response.status_code == 302 and response.location.endswith(step_url(case_id, 3))
    page = text(client.get(step_url(case_id, 3)))
    assert "1 incident added" in page and "a.jpg" in page and "b.jpg" in page
    assert "They sent a photo of my house." in page
    assert post_step(client, case_id, 3, token, {"action": "continue"}).location.endswith(step_url(case_id, 4))

    response = post_step(client, case_id, 4, token, {
        "platform": "x", "locator": "https://x.com/amenazas/status/1", "action": "continue",
        "files": [(io.BytesIO(SCREENSHOT), "captura.png")]})
    assert response.status_code == 302 and response.location.endswith(step_url(case_id, 5))

    page = text(client.get(step_url(case_id, 5)))
    for shown in ("Step 5 of 5", "Lucía", "Diario del Sur", "Guerrero", "Chilpancingo",
                  "They sent a photo of my house.", "a.jpg", "captura.png", "https://x.com/amenazas/status/1",
                  "in danger right now", "Saved and sealed"):
        assert shown in page, shown
    assert "Lucía Hernández Ruiz" not in page  # the sealed name is never sent back

    response = send(client, case_id, token)
    assert response.status_code == 302 and response.location.endswith(f"/requests/{case_id}")
    page = text(client.get(response.location))
    case = get_case(app, case_id)
    assert case.status == "received" and case.reference in page
    assert "We received your request" in page and 'id="emergency"' not in page
    assert "Received" in page and "What happens next" in page

    with app.app_context():
        case = db.session.get(Case, case_id)
        assert case.petitioner_id == account.id and case.consent_at and not case.immediate_danger
        assert case.pseudonymous and case.real_identity == "Lucía Hernández Ruiz"
        assert (case.state_code, case.municipality) == ("GRO", "Chilpancingo")
        [incident] = case.incidents
        [threat] = case.online_threats
        by_name = {e.filename: e for e in case.evidence}
        assert set(by_name) == {"a.jpg", "b.jpg", "captura.png"}
        assert by_name["a.jpg"].incident_id == by_name["b.jpg"].incident_id == incident.id
        assert by_name["captura.png"].online_threat_id == threat.id
        assert by_name["a.jpg"].size == len(PHOTO_A)
    # The files are encrypted at rest: the plaintext is nowhere under the instance.
    assert files_containing(app, b"PLAINTEXT-MARKER") == []
    assert len(blob_files(app)) == 3

    # The request is in the journalist's list, with its reference and what happens next.
    page = text(client.get("/my/requests"))
    assert case.reference in page and "Received" in page and "A caseworker will review it soon" in page
    assert "not sent yet" not in page.lower()


def test_the_draft_survives_signing_out_and_back_in(app, client, journalist):
    account, token = journalist
    case_id = draft_at_step3(client, token)
    sign_out(client, token)
    assert client.get(step_url(case_id, 3)).status_code == 302  # to sign in

    token = sign_in(client, account)
    page = text(client.get("/my/requests"))
    assert "Not sent yet" in page and f'href="{step_url(case_id, 3)}"' in page
    assert "Step 3 of 5" in text(client.get(step_url(case_id, 3)))
    page = text(client.get(step_url(case_id, 1)))
    assert 'value="Lucía"' in page and 'value="+52 55 0000 0000"' in page
    assert "Lucía Hernández Ruiz" not in page and "saved and sealed" in page
    # Saving step 1 again without retyping the sealed name keeps it.
    assert post_step(client, case_id, 1, token, {**WHO, "real_identity": ""}).status_code == 302
    assert re.search(r'<option (selected value="GRO"|value="GRO" selected)', text(client.get(step_url(case_id, 2))))
    with app.app_context():
        assert db.session.get(Case, case_id).real_identity == "Lucía Hernández Ruiz"
    # A second "new request" tap does not start a second draft while this one is in progress...
    assert new_request(client, token) != case_id
    # ... and an untouched one is reused.
    untouched = new_request(client, token)
    assert new_request(client, token) == untouched


# -- refusals ---------------------------------------------------------------------

def test_no_consent_is_refused(app, client, journalist):
    _account, token = journalist
    case_id = draft_at_step3(client, token)
    add_incident(client, case_id, token)
    to_review(client, case_id, token)
    response = send(client, case_id, token, consent=False)
    assert response.status_code == 200 and "We need your consent" in text(response)
    response = post_step(client, case_id, 5, token, {"consent": "y"})  # danger unanswered
    assert response.status_code == 200 and "Please answer whether you are in danger" in text(response)
    assert get_case(app, case_id).status == "draft"


def test_no_incident_is_refused(app, client, journalist):
    _account, token = journalist
    case_id = draft_at_step3(client, token)
    response = post_step(client, case_id, 3, token, {"action": "continue"})
    assert response.status_code == 200 and "at least one incident" in text(response)
    # Jumping to the last step does not get around it.
    response = send(client, case_id, token)
    assert response.status_code == 302 and response.location.endswith(step_url(case_id, 3))
    assert get_case(app, case_id).status == "draft"
    # An incident added and removed again leaves the request unsendable too.
    add_incident(client, case_id, token)
    to_review(client, case_id, token)
    with app.app_context():
        incident_id = db.session.execute(select(Incident.id)).scalar_one()
    client.post(f"/requests/{case_id}/items/incident/{incident_id}/remove", data={"csrf_token": token})
    response = send(client, case_id, token)
    assert response.status_code == 200 and "Before sending, add: at least one incident" in text(response)
    assert get_case(app, case_id).status == "draft"


def test_bad_state_code_is_refused(app, client, journalist):
    _account, token = journalist
    case_id = new_request(client, token)
    post_step(client, case_id, 1, token, WHO)
    response = post_step(client, case_id, 2, token, {**WORK, "state_code": "XX"})
    assert response.status_code == 200 and "Choose a valid option for: State" in text(response)
    assert get_case(app, case_id).state_code is None
    response = post_step(client, case_id, 1, token, {**WHO, "beneficiary_type": "spy"})
    assert response.status_code == 200 and "Choose a valid option" in text(response)


@pytest.mark.parametrize("over, message", [
    ({"occurred_on": (date.today() + timedelta(days=5)).isoformat()}, "cannot be in the future"),
    ({"occurred_on": "1900-01-01"}, "too far in the past"),
    ({"occurred_on": "2024-13-45"}, "Not a valid date"),
    ({"narrative": "x" * 25_000}, "too long"),
    ({"narrative": "   "}, "Please fill in"),
    ({"kind": "earthquake"}, "Choose a valid option"),
])
def test_bad_incidents_are_refused_and_nothing_is_kept(app, client, journalist, over, message):
    _account, token = journalist
    case_id = draft_at_step3(client, token)
    response = add_incident(client, case_id, token, files=[("a.jpg", PHOTO_A)], **over)
    assert response.status_code == 200 and message in text(response), text(response)[-3000:]
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Incident)).scalar_one() == 0
        assert db.session.execute(select(func.count()).select_from(Evidence)).scalar_one() == 0
    assert blob_files(app) == []


def test_html_and_script_are_stored_as_typed_and_shown_escaped(app, client, journalist):
    _account, token = journalist
    script = '<script>alert("x")</script>'
    image = '<img src=x onerror="alert(1)">'
    case_id = draft_at_step3(client, token, who={**WHO, "name": script, "others_at_risk": image},
                             work={**WORK, "outlet": f"Diario {script}", "municipality": image})
    hostile_name = "<img src=x onerror=alert(1)>.html"  # (no quotes: the test client sends names raw)
    add_incident(client, case_id, token, files=[(hostile_name, PHOTO_A)], narrative=f"{script} {image}",
                 place=script)
    post_step(client, case_id, 3, token, {"action": "continue"})
    post_step(client, case_id, 4, token, {"platform": "other", "locator": f"javascript:{script}",
                                          "action": "continue"})
    pages = [text(client.get(step_url(case_id, n))) for n in (1, 3, 4, 5)]
    assert send(client, case_id, token).status_code == 302
    pages.append(text(client.get(f"/requests/{case_id}")))
    pages.append(text(client.get("/my/requests")))
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
        assert 'href="javascript:' not in page
    assert str(escape(script)) in pages[3] and str(escape(image)) in pages[3]
    with app.app_context():
        case = db.session.get(Case, case_id)
        assert case.name == script and case.municipality == image
        assert case.incidents[0].narrative == f"{script} {image}"
        assert case.evidence[0].filename == hostile_name


def test_an_empty_file_input_makes_no_evidence(app, client, journalist):
    _account, token = journalist
    case_id = draft_at_step3(client, token)
    response = post_step(client, case_id, 3, token, {**INCIDENT, "action": "add",
                                                     "files": [(io.BytesIO(b""), "")]})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Incident)).scalar_one() == 1
        assert db.session.execute(select(func.count()).select_from(Evidence)).scalar_one() == 0
    assert blob_files(app) == []


def test_a_file_over_the_limit_gets_the_413_page_and_leaves_nothing(app, client, journalist):
    _account, token = journalist
    case_id = draft_at_step3(client, token)
    settings = app.extensions["protect.settings"]
    app.extensions["protect.settings"] = dataclasses.replace(settings, max_upload_mb=1)
    try:
        response = add_incident(client, case_id, token, files=[("big.bin", b"x" * (1024 * 1024 + 1))])
    finally:
        app.extensions["protect.settings"] = settings
    assert response.status_code == 413 and "<h1>" in text(response)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Incident)).scalar_one() == 0
    assert blob_files(app) == []


# -- after sending ----------------------------------------------------------------

def test_immediate_danger_shows_the_emergency_notice(app, client, journalist):
    _account, token = journalist
    case_id = submitted(client, token, danger="yes")
    page = text(client.get(f"/requests/{case_id}"))
    assert 'id="emergency"' in page and "call 911" in page and "top of the caseworkers" in page
    case = get_case(app, case_id)
    assert case.immediate_danger and case.reference in page


def test_removing_items_from_a_draft_deletes_their_files(app, client, journalist):
    _account, token = journalist
    case_id = draft_at_step3(client, token)
    add_incident(client, case_id, token, files=[("a.jpg", PHOTO_A), ("b.jpg", PHOTO_B)])
    add_incident(client, case_id, token, files=[("c.jpg", PHOTO_A)], kind="surveillance")
    assert len(blob_files(app)) == 3
    with app.app_context():
        a = db.session.execute(select(Evidence).where(Evidence.filename_ct.is_not(None))).scalars().all()
        a = next(e for e in a if e.filename == "a.jpg")
        a_id, a_blob, first = a.id, a.blob_id, a.incident_id
    response = client.post(f"/requests/{case_id}/items/evidence/{a_id}/remove",
                           data={"csrf_token": token, "step": "3"})
    assert response.status_code == 302 and response.location.endswith(step_url(case_id, 3))
    assert len(blob_files(app)) == 2 and not any(p.name == a_blob for p in blob_files(app))
    # Removing an incident takes its files with it.
    client.post(f"/requests/{case_id}/items/incident/{first}/remove", data={"csrf_token": token})
    assert len(blob_files(app)) == 1
    with app.app_context():
        [left] = db.session.execute(select(Evidence)).scalars().all()
        assert left.filename == "c.jpg"
    assert client.post(f"/requests/{case_id}/items/planet/{first}/remove",
                       data={"csrf_token": token}).status_code == 404
    assert client.post(f"/requests/{case_id}/items/incident/{'0' * 32}/remove",
                       data={"csrf_token": token}).status_code == 404
    # After sending, nothing can be removed.
    to_review(client, case_id, token)
    assert send(client, case_id, token).status_code == 302
    response = client.post(f"/requests/{case_id}/items/evidence/{left.id}/remove", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.endswith(f"/requests/{case_id}")
    assert len(blob_files(app)) == 1


def test_evidence_download_returns_exactly_the_uploaded_bytes(app, client, journalist):
    _account, token = journalist
    case_id = submitted(client, token, files=[("fotografía <1>.html", PHOTO_A)])
    with app.app_context():
        evidence = db.session.execute(select(Evidence)).scalar_one()
        evidence_id, blob_id = evidence.id, evidence.blob_id
    page = text(client.get(f"/requests/{case_id}"))
    assert f"/requests/{case_id}/evidence/{evidence_id}" in page
    response = client.get(f"/requests/{case_id}/evidence/{evidence_id}")
    assert response.status_code == 200
    assert response.data == PHOTO_A
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="fotografia_1_.html"')
    assert "filename*=UTF-8''fotograf%C3%ADa%20%3C1%3E.html" in disposition
    # On disk, only ciphertext.
    [blob] = [p for p in blob_files(app) if p.name == blob_id]
    assert PHOTO_A not in blob.read_bytes() and b"PLAINTEXT-MARKER" not in blob.read_bytes()
    with app.app_context():
        entries = db.session.execute(select(AuditEntry).where(
            AuditEntry.action == "case.evidence_downloaded")).scalars().all()
        assert len(entries) == 1 and entries[0].actor_id == _account.id
    assert client.get(f"/requests/{case_id}/evidence/{'0' * 32}").status_code == 404


def test_messages_evidence_withdrawal_and_appeal(app, client, journalist, make_account):
    account, token = journalist
    case_id = submitted(client, token)
    caseworker = make_account("caseworker")
    with app.app_context():
        cw = db.session.get(User, caseworker.id)
        case = db.session.get(Case, case_id)
        service.assign(db.session, cw, case, cw)
        service.send_message(db.session, cw, case, "Can we call you tomorrow? <b>bold</b>")
        db.session.commit()

    assert "1 new message from the team" in text(client.get("/my/requests"))
    page = text(client.get(f"/requests/{case_id}"))
    assert "Can we call you tomorrow? &lt;b&gt;bold&lt;/b&gt;" in page and "From the team" in page
    with app.app_context():
        assert db.session.execute(select(Message)).scalar_one().read_at is not None
    assert "new message" not in text(client.get("/my/requests"))

    response = client.post(f"/requests/{case_id}/messages", data={"csrf_token": token, "body": "Yes, after 5."})
    assert response.status_code == 302
    response = client.post(f"/requests/{case_id}/messages", data={"csrf_token": token, "body": "  "})
    assert response.status_code == 200 and "Please fill in: Message" in text(response)
    page = text(client.get(f"/requests/{case_id}"))
    assert "Yes, after 5." in page and "You wrote" in page
    with app.app_context():
        mine = db.session.execute(select(Message).where(Message.to_petitioner.is_(False))).scalar_one()
        assert mine.author_id == account.id and mine.body == "Yes, after 5."

    # More evidence after sending, attached to the incident.
    with app.app_context():
        incident_id = db.session.execute(select(Incident.id)).scalar_one()
    response = client.post(f"/requests/{case_id}/evidence", data={
        "csrf_token": token, "incident": incident_id,
        "files": [(io.BytesIO(PHOTO_B), "later.jpg"), (io.BytesIO(SCREENSHOT), "later.png")]})
    assert response.status_code == 302
    response = client.post(f"/requests/{case_id}/evidence", data={
        "csrf_token": token, "files": [(io.BytesIO(b""), "")]})
    assert response.status_code == 200 and "Choose at least one file" in text(response)
    with app.app_context():
        later = db.session.execute(select(Evidence)).scalars().all()
        assert sorted(e.filename for e in later) == ["later.jpg", "later.png"]
        assert all(e.incident_id == incident_id for e in later)
    assert "later.png" in text(client.get(f"/requests/{case_id}"))

    # Withdrawing needs the confirmation box.
    response = client.post(f"/requests/{case_id}/withdraw", data={"csrf_token": token})
    assert response.status_code == 200 and "Tick the box" in text(response)
    assert get_case(app, case_id).status == "triage"
    # A stale version (the page was open while the case moved on) is told, not applied.
    version = get_case(app, case_id).version
    response = client.post(f"/requests/{case_id}/withdraw",
                           data={"csrf_token": token, "confirm": "y", "version": str(version - 1)})
    assert response.status_code == 200 and "changed by someone else" in text(response)
    response = client.post(f"/requests/{case_id}/withdraw",
                           data={"csrf_token": token, "confirm": "y", "version": str(version)})
    assert response.status_code == 302
    assert get_case(app, case_id).status == "withdrawn"
    assert "This request was withdrawn" in text(client.get(f"/requests/{case_id}"))


def test_appeal_after_not_admitted(app, client, journalist, make_account):
    _account, token = journalist
    case_id = submitted(client, token)
    caseworker = make_account("caseworker")
    page = text(client.get(f"/requests/{case_id}"))
    assert "Appeal the decision" not in page and "Withdraw my request" in page
    with app.app_context():
        cw = db.session.get(User, caseworker.id)
        case = db.session.get(Case, case_id)
        service.assign(db.session, cw, case, cw)
        service.triage(db.session, cw, case, decision="not_admitted", reason="unrelated_to_work")
        db.session.commit()
    page = text(client.get(f"/requests/{case_id}"))
    assert "Not admitted" in page and "Appeal the decision" in page and "Withdraw my request" not in page
    response = client.post(f"/requests/{case_id}/appeal", data={"csrf_token": token, "grounds": ""})
    assert response.status_code == 200 and "Please fill in" in text(response)
    response = client.post(f"/requests/{case_id}/appeal", data={
        "csrf_token": token, "grounds": "The threats are about my reporting on the mayor."})
    assert response.status_code == 302
    assert get_case(app, case_id).status == "appeal"
    assert "Your appeal (inconformidad) is being studied" in text(client.get(f"/requests/{case_id}"))


# -- who may reach what -------------------------------------------------------------

def test_journalists_cannot_reach_each_others_cases(app, client, make_account):
    alice, bob = make_account("journalist"), make_account("journalist")
    token = sign_in(client, alice)
    sent = submitted(client, token, files=[("a.jpg", PHOTO_A)])
    draft = draft_at_step3(client, token)
    add_incident(client, draft, token, files=[("b.jpg", PHOTO_B)])
    with app.app_context():
        evidence = {e.case_id: e.id for e in db.session.execute(select(Evidence)).scalars()}
        incident = db.session.execute(select(Incident.id).where(Incident.case_id == draft)).scalar_one()
    sign_out(client, token)

    token = sign_in(client, bob)
    ghost = "0" * 32
    gets = [f"/requests/{sent}", f"/requests/{draft}", step_url(draft, 1), step_url(draft, 3),
            step_url(sent, 1), f"/requests/{sent}/evidence/{evidence[sent]}",
            f"/requests/{draft}/evidence/{evidence[draft]}", f"/requests/{ghost}", step_url(ghost, 1),
            f"/requests/{ghost}/evidence/{evidence[sent]}"]
    for url in gets:
        assert client.get(url).status_code == 404, url
    posts = [(step_url(draft, 1), WHO), (step_url(draft, 3), INCIDENT),
             (f"/requests/{sent}/messages", {"body": "hi"}),
             (f"/requests/{sent}/withdraw", {"confirm": "y"}),
             (f"/requests/{sent}/appeal", {"grounds": "because"}),
             (f"/requests/{draft}/items/incident/{incident}/remove", {}),
             (f"/requests/{draft}/items/evidence/{evidence[draft]}/remove", {})]
    for url, data in posts:
        assert client.post(url, data={"csrf_token": token, **data}).status_code == 404, url
    response = client.post(f"/requests/{sent}/evidence", data={
        "csrf_token": token, "files": [(io.BytesIO(PHOTO_B), "x.jpg")]})
    assert response.status_code == 404
    # Bob's own case does not open Alice's evidence either.
    own = submitted(client, token)
    assert client.get(f"/requests/{own}/evidence/{evidence[sent]}").status_code == 404
    assert "a.jpg" not in text(client.get("/my/requests"))
    # Nothing of Alice's changed.
    with app.app_context():
        assert db.session.get(Case, sent).status == "received"
        assert db.session.execute(select(func.count()).select_from(Message)).scalar_one() == 0
        assert db.session.execute(select(func.count()).select_from(Evidence)).scalar_one() == 2
        assert db.session.get(Case, draft).name == "Lucía"


@pytest.mark.parametrize("role", ["donor", "admin"])
def test_donors_and_admins_are_refused_by_policy(app, client, make_account, role):
    journalist = make_account("journalist")
    token = sign_in(client, journalist)
    case_id = submitted(client, token, files=[("a.jpg", PHOTO_A)])
    with app.app_context():
        evidence_id = db.session.execute(select(Evidence.id)).scalar_one()
    sign_out(client, token)
    token = sign_in(client, make_account(role))
    for url in ("/my/requests", f"/requests/{case_id}", step_url(case_id, 1),
                f"/requests/{case_id}/evidence/{evidence_id}"):
        assert client.get(url).status_code == 403, url
    for url in ("/requests/new", f"/requests/{case_id}/messages", f"/requests/{case_id}/withdraw",
                f"/requests/{case_id}/evidence", step_url(case_id, 1)):
        assert client.post(url, data={"csrf_token": token}).status_code == 403, url


def test_caseworker_files_a_request_by_phone(app, client, make_account):
    caseworker = make_account("caseworker")
    token = sign_in(client, caseworker)
    case_id = draft_at_step3(client, token, who={**WHO, "pseudonymous": "", "name": "Pedro Ramírez"})
    page = text(client.get(step_url(case_id, 3)))
    assert "on behalf of someone" in page
    add_incident(client, case_id, token, files=[("note.pdf", PHOTO_B)])
    to_review(client, case_id, token)
    response = send(client, case_id, token, danger="yes")
    assert response.status_code == 302
    # To the staff case page (or the queue), never to the journalist's pages.
    assert urlsplit(response.location).path in (f"/cases/{case_id}", "/queue")
    with app.app_context():
        case = db.session.get(Case, case_id)
        assert case.status == "received" and case.petitioner_id is None
        assert case.filed_by_id == caseworker.id and case.immediate_danger
        assert case.name == "Pedro Ramírez" and len(case.evidence) == 1
    # The journalist pages stay the journalist's: the caseworker follows the case in the staff pages.
    assert client.get(f"/requests/{case_id}").status_code == 403
    # Another caseworker cannot continue someone else's phone draft.
    other = draft_at_step3(client, token)
    sign_out(client, token)
    token = sign_in(client, make_account("caseworker"))
    assert client.get(step_url(other, 1)).status_code == 404
    assert client.post(step_url(other, 3), data={"csrf_token": token, **INCIDENT}).status_code == 404
