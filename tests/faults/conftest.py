"""Fault tests: the app served by gunicorn in a process of its own (killed with
SIGKILL and started again on the same database and instance), HTTP sign-in
and the checks that nothing half-written is left. Loopback only; bounded."""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from protect.cases.models import Evidence
from protect.crypto import agefile, serverkeys
from protect.extensions import db
from protect.vault.service import _known_blob_ids
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One gunicorn (its master and worker in a process group of their own)."""
    url: str
    process: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL to master and worker at once: a crash, not a shutdown."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_server(instance_path: str, database_url: str, **env) -> Server:
    """gunicorn (one gthread worker, 4 threads) on ``database_url`` and the instance
    (keys, blobs, secret key) at ``instance_path``; ``env`` is added to its environment."""
    port = free_port()
    environ = dict(os.environ, PYTHONPATH=str(ROOT), PROTECT_ENV="test",
                   PROTECT_INSTANCE_PATH=instance_path, PROTECT_DATABASE_URL=database_url,
                   PROTECT_SWEEP_INTERVAL_SECONDS="0",
                   **{f"PROTECT_{k.upper()}": str(v) for k, v in FAST.items()}, **env)
    log_path = Path(instance_path) / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--worker-class", "gthread", "--threads", "4", "--timeout", "120",
             "tests.faults.server:wsgi()"],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            if requests.get(server.url + "/login", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            pass  # not listening yet, or still loading the app
        if process.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"gunicorn did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture
def serve(app, database_url):
    """Start servers on ``app``'s database and instance, English by default; all are
    killed at the end."""
    started: list[Server] = []

    def start(**env) -> Server:
        started.append(start_server(app.instance_path, database_url,
                                    **{"PROTECT_DEFAULT_LOCALE": "en", **env}))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def token(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=10).text
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or \
        re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def http_login(base: str, account, *, code_offset: int = 0) -> requests.Session:
    """A requests session signed in through the real forms (a code ``code_offset``
    TOTP steps ahead for a second sign-in within 30 s: codes are never reused)."""
    session = requests.Session()
    response = session.post(base + "/login", data={"email": account.email, "password": account.password,
                                                   "csrf_token": token(session, base + "/login")},
                            allow_redirects=False, timeout=10)
    if response.status_code == 302 and "/login/code" in response.headers["Location"]:
        response = session.post(base + "/login/code", data={
            "code": account.code(code_offset),
            "csrf_token": token(session, base + "/login/code")}, allow_redirects=False, timeout=10)
    assert response.status_code == 302 and "/login" not in response.headers["Location"], response.text[:500]
    return session


def blob_dirs(app) -> tuple[list[Path], list[Path]]:
    """(committed blob files, temporaries) of the local blob store."""
    root = Path(app.extensions["protect.blobs"].root)
    files = [p for p in root.rglob("*") if p.is_file()]
    return [p for p in files if p.parent.name != "tmp"], [p for p in files if p.parent.name == "tmp"]


def assert_blobs_whole(app) -> None:
    """Every blob a row names is there; every evidence file decrypts completely."""
    store = app.extensions["protect.blobs"]
    with app.app_context():
        named = _known_blob_ids(db.session)
        identity = serverkeys.identity(db.session, "evidence")
        evidence = {e.blob_id: e.size for e in db.session.execute(select(Evidence)).scalars()}
        db.session.remove()
    for blob_id in named:
        assert store.exists(blob_id), f"a row names blob {blob_id}, which is not in the store"
    for blob_id, size in evidence.items():
        plain = io.BytesIO()
        with store.open(blob_id) as src:
            agefile.decrypt(src, plain, [identity])
        assert len(plain.getvalue()) == size, f"evidence blob {blob_id} does not hold its {size} bytes"
