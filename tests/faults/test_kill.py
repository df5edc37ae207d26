"""The server killed with SIGKILL in the middle of an upload and of a decision.

After a restart nothing half-written is there: no row of the interrupted
request, no blob; the upload's temporary is cleared by the garbage
collection; everything a row names opens; the same request then goes
through.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import func, select

from protect.accounts.models import User
from protect.audit import service as audit
from protect.audit.models import AuditEntry
from protect.cases import service as cases
from protect.cases.models import BoardDecision, Case, CaseEvent, Evidence, Incident, Measure
from protect.extensions import db
from protect.vault import service as vaults
from tests.cases.test_intake_web import INCIDENT, WHO, WORK

from .conftest import assert_blobs_whole, blob_dirs, http_login, token

FILE_SIZE = 16 * 1024 * 1024
BOUNDARY = "faultboundary2c9f"


def _draft_at_step3(base: str, session: requests.Session) -> str:
    response = session.post(base + "/requests/new", data={"csrf_token": token(session, base + "/account")},
                            allow_redirects=False, timeout=10)
    case_id = re.fullmatch(r"/requests/([0-9a-f]{32})/step/1", urlsplit(response.headers["Location"]).path)[1]
    for step, data in ((1, WHO), (2, WORK)):
        url = f"{base}/requests/{case_id}/step/{step}"
        response = session.post(url, data={**data, "csrf_token": token(session, url)},
                                allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text[:500]
    return case_id


def _incident_body(csrf: str, content: bytes) -> bytes:
    fields = {**INCIDENT, "action": "add", "csrf_token": csrf}
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="video.mp4"\r\n'
                 f"Content-Type: video/mp4\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_in_the_middle_of_an_upload(app, make_account, serve):
    server = serve()
    journalist = make_account("journalist", enrol=False)
    session = http_login(server.url, journalist)
    case_id = _draft_at_step3(server.url, session)
    step3 = f"/requests/{case_id}/step/3"
    content = os.urandom(FILE_SIZE)
    body = _incident_body(token(session, server.url + step3), content)

    # Half the body, slowly as over a bad connection; then the server dies.
    port = urlsplit(server.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {step3} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Cookie: protect_session={session.cookies['protect_session']}\r\n"
                     f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        sock.sendall(body[:len(body) // 2])
        # The encrypting parser is writing the file's temporary.
        _wait_for(lambda: any(p.stat().st_size > FILE_SIZE // 4 for p in blob_dirs(app)[1]), 20,
                  "the upload's temporary")
        server.kill()

    with app.app_context():
        case = db.session.get(Case, case_id)
        assert (case.status, case.intake_step) == ("draft", 3)
        for model in (Incident, Evidence):
            assert db.session.execute(select(func.count()).select_from(model)).scalar_one() == 0, model
        db.session.remove()
    committed, temporaries = blob_dirs(app)
    assert committed == [] and len(temporaries) == 1   # the killed upload's temporary, nothing else

    server = serve()
    with app.app_context():
        vaults.collect_garbage(db.session, older_than=timedelta(0))
        db.session.remove()
    assert blob_dirs(app) == ([], [])

    # The journalist sends it again, to the restarted server: all of it arrives.
    session = http_login(server.url, journalist)
    response = session.post(server.url + step3, data=_incident_body(token(session, server.url + step3), content),
                            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                            allow_redirects=False, timeout=60)
    assert response.status_code == 302, response.text[:500]
    with app.app_context():
        [evidence] = db.session.execute(select(Evidence)).scalars()
        assert evidence.size == FILE_SIZE and evidence.case_id == case_id
        db.session.remove()
    assert_blobs_whole(app)


def _case_for_decision(app, caseworker, journalist) -> str:
    with app.app_context():
        s = db.session
        cw, j = s.get(User, caseworker.id), s.get(User, journalist.id)
        case = cases.start_request(s, j)
        cases.save_who(s, j, case, cases.WhoAtRisk("Ana", False, None, "ana@example.org", "journalist",
                                                   None, None))
        cases.save_work(s, j, case, outlet=None, journalism_kind=None, state_code="VER", municipality=None)
        cases.add_incident(s, j, case, occurred_on=date.today(), kind="threat", aggressor="unknown",
                           channel="phone", place=None, narrative="A call at night")
        cases.submit(s, j, case, immediate_danger=False, consent=True)
        cases.assign(s, cw, case, cw)
        cases.triage(s, cw, case, decision="ordinary")
        cases.record_assessment(s, cw, case, level="high", factors="Threats", recommendation="Cameras")
        s.commit()
        case_id = case.id
        s.remove()
    return case_id


def _counts(app, case_id: str) -> dict:
    with app.app_context():
        s = db.session
        count = lambda model, *where: s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()
        case = s.get(Case, case_id)
        found = {"status": case.status, "version": case.version,
                 "decisions": count(BoardDecision, BoardDecision.case_id == case_id),
                 "measures": count(Measure, Measure.case_id == case_id),
                 "events": count(CaseEvent, CaseEvent.case_id == case_id),
                 "audit": count(AuditEntry), "audit_ok": audit.verify(s).ok}
        s.remove()
    return found


def _decide(base: str, session: requests.Session, csrf: str, case_id: str, version: int, **kwargs):
    data = {"csrf_token": csrf, "decision-version": str(version),
            "decision-outcome": "granted", "decision-reason": "risk_confirmed",
            "decision-decided_on": date.today().isoformat(),
            "decision-m_cameras": "y", "decision-a_cameras": "state",
            "decision-m_phone": "y", "decision-a_phone": "federal"}
    return session.post(f"{base}/cases/{case_id}/act/decision", data=data, allow_redirects=False, **kwargs)


def test_killed_in_the_middle_of_a_decision(app, make_account, serve, tmp_path):
    caseworker, journalist = make_account("caseworker"), make_account("journalist", enrol=False)
    case_id = _case_for_decision(app, caseworker, journalist)
    marker = tmp_path / "stalled"
    server = serve(FAULT_STALL_PATH="/act/decision", FAULT_STALL_MARKER=str(marker))
    session = http_login(server.url, caseworker)
    csrf = token(session, f"{server.url}/cases/{case_id}")  # (viewing the case is audited)
    before = _counts(app, case_id)
    assert before["status"] == "board_decision" and before["audit_ok"]

    # The decision's rows are flushed, its transaction open, when the server dies.
    answer: list = []
    sender = threading.Thread(target=lambda: answer.append(_try(
        lambda: _decide(server.url, session, csrf, case_id, before["version"], timeout=30))))
    sender.start()
    _wait_for(marker.exists, 20, "the decision to stall")
    server.kill()
    sender.join(timeout=30)
    assert answer and isinstance(answer[0], requests.ConnectionError), answer  # never acknowledged

    after = _counts(app, case_id)
    assert after == before, f"a killed decision left {after} (was {before})"
    server = serve()
    assert _counts(app, case_id) == before
    assert_blobs_whole(app)

    # Made again on the restarted server, it is recorded whole.
    session = http_login(server.url, caseworker, code_offset=1)
    csrf = token(session, f"{server.url}/cases/{case_id}")
    response = _decide(server.url, session, csrf, case_id, before["version"], timeout=30)
    assert response.status_code == 302, response.text[:500]
    done = _counts(app, case_id)
    assert (done["status"], done["decisions"], done["measures"]) == ("implementation", 1, 2)
    assert done["events"] > before["events"] and done["audit_ok"]


def _try(call):
    try:
        return call()
    except requests.RequestException as exc:
        return exc
