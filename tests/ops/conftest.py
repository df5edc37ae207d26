"""Ops fixtures: the moto S3 server of the crypto tests, the SMTP server of the notify
tests, Redis on loopback, and fresh, migrated instances."""
from __future__ import annotations

import base64
import secrets

import pytest
import redis
from flask_migrate import upgrade

from protect.extensions import db
from tests.conftest import make_app
from tests.crypto.conftest import aws_credentials, moto_server, s3_bucket, s3_client  # noqa: F401  (fixtures)
from tests.notify.conftest import smtp  # noqa: F401  (fixture)

# A database number of its own, so these counters meet no one else's.
REDIS_URL = "redis://127.0.0.1:6379/13"


def master_keys() -> str:
    """A PROTECT_MASTER_KEYS value with one new key."""
    return f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def migrated_app(instance_dir, database_url: str, **settings):
    """An app on ``database_url``, which the migrations make first."""
    app = make_app(instance_dir, database_url, **settings)
    with app.app_context():
        upgrade()
        db.session.remove()
    return app


@pytest.fixture
def backend(database_url) -> str:
    """"sqlite" or "postgresql": the session backend this test runs on."""
    return backend_of(database_url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis for rate-limit counters (the machine runs one on 127.0.0.1:6379)."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return REDIS_URL
