"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

Each backend gets a fresh database per test run (and per xdist worker), made
by the migrations; each test then starts from empty tables.
"""
from __future__ import annotations

import os
import re
import secrets
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pyotp
import pytest
from sqlalchemy import text

from protect import create_app
from protect.extensions import db

PG_ADMIN_URL = os.environ.get("PROTECT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = os.environ.get("PROTECT_TEST_BACKENDS", "sqlite,postgresql").split(",")

# Reference data the migrations seed: kept between tests.
# The condition picks the rows a test added, which are removed.
SEEDED = {"measure_types": "code LIKE 'test%'", "deadline_policies": "created_by_id IS NOT NULL",
          "list_editions": "name NOT IN ('cases', 'clocks')", "sweeps": "name <> 'deadlines'"}

# Cheap Argon2 in tests; the real cost is measured in bench/argon2_cost.py.
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}


@contextmanager
def fresh_database(backend: str, tmp_dir):
    """A new, empty database of ``backend``; dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / f'test-{uuid.uuid4().hex}.db'}"
        return
    name = f"protect_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_app(tmp_path, database_url: str, **overrides):
    settings = dict(FAST, instance_path=str(tmp_path / "instance"), database_url=database_url,
                    env="test", testing=True, secret_key=secrets.token_urlsafe(32))
    settings.update(overrides)
    return create_app(settings)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory):
    from flask_migrate import upgrade
    with fresh_database(request.param, tmp_path_factory.mktemp("db")) as url:
        app = make_app(tmp_path_factory.mktemp("migrate"), url)
        with app.app_context():
            upgrade()
            db.engine.dispose()
        yield url


@pytest.fixture
def app(database_url, tmp_path):
    """The app, with no context pushed: requests made by the test client must
    each get their own app context (``g``, the db session), as in production."""
    app = make_app(tmp_path, database_url)
    yield app
    with app.app_context():
        # Dependents first; seeded reference tables lose only the rows tests added.
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                added = SEEDED.get(table.name)
                conn.execute(text(f"DELETE FROM {table.name}" + (f" WHERE {added}" if added else "")))
            conn.execute(text("UPDATE sweeps SET swept_from = NULL, swept_to = NULL, escalated_from = NULL, "
                              "escalated_to = NULL"))  # as never swept
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def ctx(app):
    """An app context for tests that call services directly (not with ``client``)."""
    with app.app_context():
        yield
        db.session.remove()


@dataclass
class Account:
    id: str
    email: str
    password: str
    role: str
    totp_secret: str | None

    def code(self, offset: int = 0) -> str:
        totp = pyotp.TOTP(self.totp_secret)
        import time
        return totp.at(time.time() + offset * 30)


@pytest.fixture
def make_account(app):
    from protect.accounts import service

    counter = iter(range(10**6))

    def make(role: str = "journalist", *, enrol: bool = True, password: str | None = None) -> Account:
        n = next(counter)
        email = f"{role}{n}@example.org"
        password = password or f"correct horse battery {role} {n}"
        with app.app_context():
            user, secret = service.create_user(db.session, None, email=email, role=role,
                                               password=password, enrol_totp=enrol)
            db.session.commit()
            return Account(user.id, email, password, role, secret)

    return make


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or \
        re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client, account: Account, *, code_offset: int = 0):
    """Sign ``account`` in through the real forms; returns the last response."""
    response = client.post("/login", data={"email": account.email, "password": account.password,
                                           "csrf_token": csrf_token(client)})
    if account.totp_secret and response.status_code == 302 and "/login/code" in response.location:
        response = client.post("/login/code", data={
            "code": account.code(code_offset), "csrf_token": csrf_token(client, "/login/code")})
    return response


@pytest.fixture
def signed_in(client, make_account):
    """A client signed in with a fresh account of the given role."""
    def sign_in(role: str = "journalist"):
        account = make_account(role)
        response = login(client, account)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return account
    return sign_in
