"""Vault fixtures: a frozen, injectable clock, people, a ready vault."""
from __future__ import annotations

import dataclasses
import io
from datetime import date, datetime, timezone

import pytest
from flask import current_app
from sqlalchemy import func, select

from protect.accounts.models import User
from protect.audit.models import AuditEntry
from protect.cases import service as cases
from protect.crypto import agefile
from protect.crypto.blobs import blob_store_from_url
from protect.crypto.uploads import EncryptedUpload
from protect.extensions import Now, db
from protect.notify.models import Notification
from protect.vault import service as vault_service
from protect.vault.service import Schedule
from tests.crypto.conftest import aws_credentials, moto_server, s3_bucket, s3_client  # noqa: F401

PIN = "482916"
DURESS = "739105"


class FrozenNow(Now):
    """The app's clock, stopped: it moves only when a test advances it, so two
    check-ins made one after the other see the same instant."""

    def __init__(self, at: datetime):
        super().__init__()
        self.base = at

    def __call__(self) -> datetime:
        return self.base + self.offset


@pytest.fixture(autouse=True)
def english_messages(app):
    """Services called outside a request speak the default language; these
    tests match the English messages."""
    settings = app.extensions["protect.settings"]
    app.extensions["protect.settings"] = dataclasses.replace(settings, default_locale="en")


@pytest.fixture
def clock(app) -> FrozenNow:
    frozen = FrozenNow(datetime.now(timezone.utc).replace(microsecond=0))
    app.extensions["protect.now"] = frozen
    return frozen


@pytest.fixture
def people(ctx, clock, make_account):
    get = lambda role: db.session.get(User, make_account(role).id)
    found = {"journalist": get("journalist"), "other_journalist": get("journalist"),
             "caseworker": get("caseworker"), "caseworker2": get("caseworker"),
             "supervisor": get("supervisor"), "supervisor2": get("supervisor"), "admin": get("admin")}
    return found


def open_case(people, journalist=None, caseworker=None):
    """A submitted case of ``journalist`` assigned to ``caseworker``: the vault's caseworker."""
    j = journalist or people["journalist"]
    cw = caseworker or people["caseworker"]
    case = cases.start_request(db.session, j)
    cases.save_who(db.session, j, case, cases.WhoAtRisk("Ana", False, None, "ana@example.org",
                                                         "journalist", None, None))
    cases.save_work(db.session, j, case, outlet=None, journalism_kind=None, state_code="VER", municipality=None)
    cases.add_incident(db.session, j, case, occurred_on=date.today(), kind="threat", aggressor="unknown",
                       channel="phone", place=None, narrative="A call at night")
    cases.submit(db.session, j, case, immediate_danger=False, consent=True)
    cases.assign(db.session, cw, case, cw)
    db.session.commit()
    return case


def new_key() -> tuple[str, str]:
    """(identity, recipient) of a recipient's own age key."""
    return agefile.generate_identity()


def make_vault(people, *, owner=None, recipients_only=False, armed=True, key=None, schedule=None,
               title="Investigación: contratos de seguridad"):
    owner = owner or people["journalist"]
    vault = vault_service.create_vault(db.session, owner, title, recipients_only=recipients_only,
                                       schedule=schedule or Schedule())
    vault_service.set_pins(db.session, owner, vault, pin=PIN, duress_pin=DURESS)
    if key is None:
        key = new_key()
    vault_service.add_recipient(db.session, owner, vault, name="Editora Forbidden Stories",
                                email="editora@example.org", age_recipient=key[1])
    if armed:
        vault_service.arm(db.session, vault, PIN)
    db.session.commit()
    vault.test_key = key
    return vault


def upload(vault, data: bytes, filename: str = "documento.pdf", recipients=None) -> EncryptedUpload:
    """What the uploads layer hands the view: the file already encrypted into an uncommitted blob."""
    store = current_app.extensions["protect.blobs"]
    up = EncryptedUpload(store, recipients or vault_service.deposit_recipients(vault), 10 * 1024 * 1024,
                         filename, "application/pdf")
    up.write(data)
    up.seek(0)
    return up


def blob_bytes(blob_id: str) -> bytes:
    with current_app.extensions["protect.blobs"].open(blob_id) as fh:
        return fh.read()


def blob_exists(blob_id: str) -> bool:
    return current_app.extensions["protect.blobs"].exists(blob_id)


def decrypt(data: bytes, identities) -> bytes:
    out = io.BytesIO()
    agefile.decrypt(io.BytesIO(data), out, list(identities))
    return out.getvalue()


def notes(kind: str | None = None, user_id: str | None = None) -> list[Notification]:
    query = select(Notification).order_by(Notification.id)
    if kind:
        query = query.where(Notification.kind == kind)
    if user_id:
        query = query.where(Notification.user_id == user_id)
    return list(db.session.execute(query).scalars())


def note_count() -> int:
    return db.session.execute(select(func.count()).select_from(Notification)).scalar_one()


def audits(action: str) -> list[AuditEntry]:
    return list(db.session.execute(select(AuditEntry).where(AuditEntry.action == action)
                                   .order_by(AuditEntry.id)).scalars())


@pytest.fixture(params=["local", "s3"])
def blobs(request, app):
    """Run a test against the local blob store and against S3 (moto's server)."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        app.extensions["protect.blobs"] = blob_store_from_url(
            f"s3://{bucket}/vault", endpoint_url=request.getfixturevalue("moto_server"))
    return app.extensions["protect.blobs"]
