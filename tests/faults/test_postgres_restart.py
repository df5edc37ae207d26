"""PostgreSQL restarted under load.

A private PostgreSQL instance (initdb into a temporary directory, its own
loopback port: the shared server on 5432 is never touched) serves gunicorn
while journalists send messages. While it restarts, requests fail cleanly
with the "try again" page (503, in the reader's language); afterwards the
same app process serves again (stale pooled connections are replaced), and
every message that was acknowledged is in the database.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import requests
from flask_babel import force_locale
from flask_migrate import upgrade
from sqlalchemy import select

from protect.accounts import service as accounts
from protect.cases import service as cases
from protect.cases.models import Message
from protect.extensions import db
from protect.main import ERRORS
from tests.conftest import Account, make_app

from .conftest import free_port, http_login, start_server, token

CLIENTS = 4


class PrivatePostgres:
    """initdb + pg_ctl as the postgres user, trust authentication, loopback only."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if os.geteuid() != 0 or not found or not shutil.which("runuser"):
            pytest.skip("needs root and PostgreSQL's server binaries to run a private instance")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="protect-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data, self.port = self.root / "data", free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=60)

    def pg_ctl(self, action: str, *extra: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30", *extra,
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}", action)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root)


@pytest.fixture
def postgres():
    server = PrivatePostgres()
    server.pg_ctl("start")
    try:
        yield server
    finally:
        server.stop()


def _journalists(app, n: int) -> list[tuple[Account, str]]:
    """``n`` journalists, each with a submitted case."""
    made = []
    with app.app_context():
        s = db.session
        for i in range(n):
            password = f"a long password for journalist {i}"
            user, _ = accounts.create_user(s, None, email=f"j{i}@example.org", role="journalist",
                                           password=password, enrol_totp=False)
            case = cases.start_request(s, user)
            cases.save_who(s, user, case, cases.WhoAtRisk(f"J{i}", False, None, "x@example.org",
                                                          "journalist", None, None))
            cases.save_work(s, user, case, outlet=None, journalism_kind=None, state_code="GRO",
                            municipality=None)
            cases.add_incident(s, user, case, occurred_on=date.today(), kind="threat", aggressor="unknown",
                               channel="phone", place=None, narrative="A threat")
            cases.submit(s, user, case, immediate_danger=False, consent=True)
            s.commit()
            made.append((Account(user.id, f"j{i}@example.org", password, "journalist", None), case.id))
        s.remove()
    return made


def test_postgres_restarted_under_load(postgres, tmp_path):
    app = make_app(tmp_path, postgres.url)
    with app.app_context():
        upgrade()
        db.engine.dispose()
    people = _journalists(app, CLIENTS)
    server = start_server(app.instance_path, postgres.url)
    with app.test_request_context(), force_locale("es"):
        try_again = f"<h1>{ERRORS[503][0]}</h1>"
    acknowledged: list[str] = []
    answers: Counter = Counter()
    unexpected: list[str] = []
    stop = threading.Event()
    restarted = threading.Event()
    after_restart: Counter = Counter()

    def journalist(account, case_id, n):
        session = http_login(server.url, account)
        url = f"{server.url}/requests/{case_id}"
        csrf = token(session, url)
        i = 0
        while not stop.is_set():
            i += 1
            body = f"message {n}-{i}"
            try:
                response = session.post(url + "/messages", data={"csrf_token": csrf, "body": body},
                                        allow_redirects=False, timeout=15)
            except requests.RequestException as exc:  # the server itself must stay up
                unexpected.append(f"{body}: {exc!r}")
                continue
            answers[response.status_code] += 1
            if restarted.is_set():
                after_restart[response.status_code] += 1
            if response.status_code == 302:
                acknowledged.append(body)
            elif response.status_code != 503 or try_again not in response.text:
                unexpected.append(f"{body}: {response.status_code} {response.text[-300:]}")
            time.sleep(0.02)

    threads = [threading.Thread(target=journalist, args=(account, case_id, n))
               for n, (account, case_id) in enumerate(people)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        postgres.pg_ctl("restart", "-m", "fast")
        restarted.set()
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.kill()

    assert not unexpected, unexpected[:5]
    assert answers[503] > 0, f"no request met the restart: {answers}"
    # The same app process serves again once PostgreSQL is back.
    assert after_restart[302] > 20, f"the app did not recover: {after_restart}"
    with app.app_context():
        stored = {m.body for m in db.session.execute(select(Message)).scalars()}
        db.engine.dispose()
    lost = [body for body in acknowledged if body not in stored]
    assert not lost, f"{len(lost)} acknowledged messages lost: {lost[:5]}"


def test_a_connection_lost_at_the_end_of_a_request_does_not_spoil_its_answer(app, client, monkeypatch):
    """PostgreSQL restarted between the answer and the session's end: the rollback on the
    dropped connection fails, and the answer already made still goes out (was a 500)."""
    from sqlalchemy.exc import OperationalError

    remove = db.session.remove
    calls = []

    def dropped():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("ROLLBACK", {}, Exception("terminating connection due to administrator command"))
        remove()

    monkeypatch.setattr(db.session, "remove", dropped)
    response = client.get("/login")
    assert response.status_code == 200 and calls
