"""Several hosts: two gunicorn app hosts (deploy/gunicorn.conf.py, TLS, production settings from
the environment) and two `flask protect sweep` timers, each with an instance directory of its
own, sharing one PostgreSQL database, one S3 bucket (moto) and one Redis.

The journey: a journalist files a request with a photo on host A and follows it on host B with
the same session; a caseworker opens it and downloads the photo on host B; the two sweepers
run at once over the clocks that fell due and every notification and e-mail exists exactly
once; wrong passwords split across the hosts hit one shared limit; and what the hosts logged
is JSON with request ids and no personal data.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update

from protect.accounts import service as accounts
from protect.cases.models import Case, Evidence
from protect.deadlines import service as deadlines
from protect.deadlines.models import Clock
from protect.extensions import db, utcnow
from protect.notify.models import Notification, OutboxEmail
from tests.cases.test_intake_web import WHO, sign_in, submitted
from tests.conftest import BACKENDS, FAST, Account, fresh_database, login
from tests.notify.conftest import self_signed
from tests.notify.test_exactly_once import overdue_clocks
from tests.ops.conftest import master_keys, migrated_app
from tests.ops.test_probes import closed_port

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="several hosts share one PostgreSQL")

ROOT = Path(__file__).resolve().parents[2]
PHOTO = b"\xff\xd8\xff PLAINTEXT-MARKER amenaza en la puerta " * 200
OVERDUE = 300  # clocks that fell due, besides the journalist's
START_SECONDS = 60
SWEEP_SECONDS = 180


class Response:
    """A requests response with the test client's attributes the shared helpers read."""

    def __init__(self, response: requests.Response):
        self.raw = response
        self.status_code = response.status_code
        self.location = response.headers.get("Location")
        self.headers = response.headers

    def get_data(self, as_text: bool = False):
        return self.raw.text if as_text else self.raw.content


class Browser:
    """One person's browser: a cookie jar for every host (one name behind the balancer).

    It sends a Referer the way a browser does under the page's Referrer-Policy;
    Flask-WTF wants one on every POST over https."""

    def __init__(self, cert: str):
        self.session = requests.Session()
        self.cert = cert  # per request: a CA bundle from the environment would win over session.verify
        self.session.headers["Accept-Language"] = "en"
        self.base = ""
        self.last_page: dict[str, tuple[str, str]] = {}  # host → (url, its Referrer-Policy)

    def on(self, host: "Host") -> "Browser":
        self.base = host.url
        return self

    def get(self, path: str, **_) -> Response:
        response = self.session.get(self.base + path, allow_redirects=False, timeout=30, verify=self.cert)
        self.last_page[self.base] = (self.base + path, response.headers.get("Referrer-Policy", ""))
        return Response(response)

    def post(self, path: str, data=None, **_) -> Response:
        fields, files = [], []
        for name, value in (data or {}).items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, tuple):  # (file object, file name), as the test client takes them
                    files.append((name, (item[1], item[0])))
                else:
                    fields.append((name, item))
        headers = {}
        url, policy = self.last_page.get(self.base, ("", "no-referrer"))
        if url and policy != "no-referrer":
            headers["Referer"] = url
        return Response(self.session.post(self.base + path, data=fields, files=files or None, headers=headers,
                                          allow_redirects=False, timeout=60, verify=self.cert))


class Host:
    def __init__(self, name: str, env: dict, tmp_path: Path, cert: str, key: str):
        port = closed_port()
        self.url = f"https://127.0.0.1:{port}"
        self.log = tmp_path / f"{name}.log"
        env = {**env, "PROTECT_INSTANCE_PATH": str(tmp_path / name)}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                 "--workers", "1", "--threads", "4", "--certfile", cert, "--keyfile", key],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.cert = cert

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(self.url + "/readyz", verify=self.cert, timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or the worker still starting
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.url} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def deployment(tmp_path, moto_server, s3_bucket, redis_url, smtp):
    """The shared services, the environment every host gets, and an in-process app on the same data."""
    cert, key = self_signed(tmp_path)
    with fresh_database("postgresql", tmp_path) as database_url:
        shared = {
            "PROTECT_ENV": "production", "PROTECT_PUBLIC_URL": "https://protect.example.org",
            "PROTECT_SECRET_KEY": secrets.token_urlsafe(48), "PROTECT_MASTER_KEYS": master_keys(),
            "PROTECT_DATABASE_URL": database_url,
            "PROTECT_BLOB_URL": f"s3://{s3_bucket}/blobs", "PROTECT_S3_ENDPOINT_URL": moto_server,
            "PROTECT_RATELIMIT_STORAGE_URL": redis_url,
            "PROTECT_SWEEP_INTERVAL_SECONDS": "0", "PROTECT_LOG_FORMAT": "json",
            "PROTECT_MAIL_SERVER": f"127.0.0.1:{smtp.port}", "PROTECT_MAIL_STARTTLS": "false",
            "PROTECT_MAIL_FROM": "alertas@protect.example",
            **{f"PROTECT_{name.upper()}": str(value) for name, value in FAST.items()},
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROTECT_", "AWS_", "FLASK_"))}
        env.update(shared, FLASK_APP="app", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
                   AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"), AWS_EC2_METADATA_DISABLED="true")
        app = migrated_app(tmp_path / "setup", database_url, master_keys=shared["PROTECT_MASTER_KEYS"],
                           blob_url=shared["PROTECT_BLOB_URL"], s3_endpoint_url=moto_server)
        hosts = [Host(name, env, tmp_path, cert, key) for name in ("host-a", "host-b")]
        try:
            for host in hosts:
                host.wait_ready()
            yield {"app": app, "hosts": hosts, "env": env, "cert": cert, "tmp": tmp_path, "smtp": smtp}
        finally:
            for host in hosts:
                host.stop()
            with app.app_context():
                db.engine.dispose()


def account(app, role: str) -> Account:
    email = f"{role}-{secrets.token_hex(4)}@example.org"
    password = f"a long password for {role}"
    with app.app_context():
        user, secret = accounts.create_user(db.session, None, email=email, role=role, password=password,
                                            enrol_totp=True)
        db.session.commit()
        return Account(user.id, email, password, role, secret)


def sweep_at_once(env: dict, tmp_path: Path) -> list[str]:
    """Two `flask protect sweep` runs started together, as two hosts' timers would."""
    runs = [subprocess.Popen([sys.executable, "-m", "flask", "protect", "sweep"], cwd=ROOT,  # noqa: S603
                             env={**env, "PROTECT_INSTANCE_PATH": str(tmp_path / f"sweeper-{n}")},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in (1, 2)]
    outputs = [run.communicate(timeout=SWEEP_SECONDS)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    return outputs


def total(outputs: list[str], label: str) -> int:
    return sum(int(re.search(rf"{label}: (\d+)", output).group(1)) for output in outputs)


def test_a_journey_across_two_hosts_and_two_sweepers(deployment):
    app, (a, b), cert = deployment["app"], deployment["hosts"], deployment["cert"]
    journalist, caseworker = account(app, "journalist"), account(app, "caseworker")
    account(app, "supervisor")

    # Filed on host A (the photo goes to the shared bucket) ...
    browser = Browser(cert).on(a)
    token = sign_in(browser, journalist)
    case_id = submitted(browser, token, files=[("amenaza.jpg", PHOTO)])
    with app.app_context():
        reference = db.session.get(Case, case_id).reference
        evidence_id = db.session.execute(select(Evidence.id).where(Evidence.case_id == case_id)).scalar_one()
    # ... followed on host B with the same session, and opened there by a caseworker.
    page = browser.on(b).get(f"/requests/{case_id}")
    assert page.status_code == 200 and reference in page.get_data(as_text=True)
    staff = Browser(cert).on(b)
    assert login(staff, caseworker).status_code == 302
    assert reference in staff.get(f"/cases/{case_id}").get_data(as_text=True)
    photo = staff.get(f"/cases/{case_id}/evidence/{evidence_id}")
    assert photo.status_code == 200 and photo.get_data() == PHOTO

    # Rate limits: nine wrong passwords split across the hosts, then both refuse.
    target = account(app, "journalist")
    wrong = Account(target.id, target.email, "not the password", "journalist", None)
    guesser = Browser(cert)
    codes = [login(guesser.on(host), wrong).status_code for host in [a, b] * 5 + [b]]
    assert codes == [401] * 9 + [429, 429], codes
    assert login(Browser(cert).on(a), target).status_code == 429  # the right password waits too

    # The journalist's triage clock (3 hours) and 300 others fell due a minute ago.
    with app.app_context():
        now = utcnow()
        db.session.execute(update(Clock).where(Clock.case_id == case_id).values(
            started_at=now - timedelta(hours=3, minutes=1), warn_at=now - timedelta(minutes=46),
            due_at=now - timedelta(minutes=1)))
        db.session.commit()
        overdue_clocks([caseworker.id], OVERDUE)
    outputs = sweep_at_once(deployment["env"], deployment["tmp"])
    assert total(outputs, "overdue") == OVERDUE + 1, outputs  # each clock reported by one sweeper only
    with app.app_context():
        notifications = db.session.execute(select(func.count()).select_from(Notification)).scalar_one()
        emails = dict(db.session.execute(
            select(OutboxEmail.state, func.count()).group_by(OutboxEmail.state)).all())
        overdue = db.session.execute(
            select(func.count()).select_from(Clock).where(deadlines.overdue(utcnow()))).scalar_one()
    assert overdue == OVERDUE + 1
    assert notifications == total(outputs, "notifications") >= OVERDUE
    assert emails == {"sent": total(outputs, "e-mail sent")}, emails
    received = deployment["smtp"].handler.message_ids()
    assert len(received) == emails["sent"] and set(received.values()) == {1}

    # Both hosts stayed ready; what they logged is JSON with request ids and nothing personal.
    for host in (a, b):
        assert requests.get(host.url + "/readyz", verify=cert, timeout=5).json() == {"status": "ready"}
    for host in (a, b):
        text = host.log.read_text()
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        request_lines = [r for r in records if r["logger"] == "protect.request"]
        assert request_lines and all(re.fullmatch(r"[0-9a-f]{32}", r["request_id"]) for r in request_lines)
        assert Counter(r["endpoint"] for r in request_lines)["accounts.login"] >= 2
        for secret in (journalist.email, caseworker.email, target.email, journalist.password, WHO["name"],
                       WHO["real_identity"], case_id, evidence_id, reference,
                       browser.session.cookies.get("protect_session")):
            assert secret not in text, f"{secret!r} in {host.log.name}"
