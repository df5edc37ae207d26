"""Release to recipients: the notice with its one-time link, and what the link opens.

When the sweep releases a vault it writes one ``Release`` per recipient
(``service._create_releases``). From there:

1. ``queue_notices`` (run by ``notify.mail.deliver`` before it sends) queues one
   e-mail per release that has none, keyed ``release:<id>`` so any number of
   senders on any number of hosts queue it once. No mail server, no notice.
2. At send time ``notice`` opens the recipient's sealed address, makes the link
   token (``service.issue_release_link``: only its SHA-256 is stored, so the
   token exists only in the message) and writes the message in the
   recipient's language, with the vault's title in the body (never the
   subject, never a log). A message sent again after a crash carries a new
   token and the earlier link stops working: the message says only the newest
   link works.
3. The link's first GET trades the token for a marker in the session (views);
   ``current`` checks that marker on every later request: a replaced link or
   an expired release stops it at once.
4. A recipient with an age key downloads each deposit's age file as stored
   (the server decrypts nothing) and a manifest; a keyless recipient gives the
   access code the journalist handed over out of band and gets a ZIP the
   server decrypts while it streams. Each download is claimed before the first
   byte with a conditional INSERT/UPDATE, so two clicks at once cannot both
   pass ``Vault.downloads_per_file``; it counts when it starts. Every download
   is audited (ids only).
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from flask import current_app
from flask_babel import force_locale, format_datetime, gettext, ngettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import Table, select, update
from zipstream import ZipStream

from ..audit import service as audit
from ..audit.models import AuditEntry
from ..crypto import agefile
from ..errors import DomainError, NotFound
from ..extensions import Session, rowcount, utcnow
from ..notify.bulk import insert_new
from ..notify.models import OutboxEmail
from ..security.passwords import verify_password
from .models import Deposit, Recipient, Release, ReleaseDownload, Vault
from .service import (
    ACCESS_CODE_MAX,
    THROTTLE_FAILURES,
    THROTTLE_WINDOW,
    _live_deposits,
    blob_store,
    find_release,
    issue_release_link,
    release_identity,
)

CHUNK = 1024 * 1024  # plaintext read per step of a ZIP stream (agefile decrypts 1 MiB blocks)
NOTICE_KEY = "release:{}"


# -- errors ------------------------------------------------------------------

class LinkInvalid(NotFound):
    def __init__(self):
        super().__init__(_l("This link is not valid. It may have been replaced by a newer one: "
                            "use the link in the most recent e-mail."))


class LinkExpired(DomainError):
    def __init__(self):
        super().__init__(_l("This link has expired. The files can no longer be downloaded with it."))


class UsedUp(DomainError):
    def __init__(self, allowed: int):
        super().__init__(ngettext("This link has been used: each file could be downloaded once, and that is done.",
                                  "This link has been used: each file could be downloaded %(num)d times, and "
                                  "that is done.", allowed))


class WrongCode(DomainError):
    """The access code did not match; the failure is audited (and counts once committed)."""

    def __init__(self):
        super().__init__(_l("That access code is not right."))


class CodeThrottled(DomainError):
    def __init__(self, retry_after: datetime, now: datetime):
        minutes = max(1, -(-int((retry_after - now).total_seconds()) // 60))
        super().__init__(_l("Too many wrong access codes. For safety, entry is blocked for %(minutes)d "
                            "more minutes.", minutes=minutes))


class NeedsKey(DomainError):
    def __init__(self):
        super().__init__(_l("These files can only be opened with an age key, and none was given for you. "
                            "The server cannot decrypt them. Contact the organisation that sent this message."))


# -- notices -------------------------------------------------------------------

def _language(code: str | None) -> str:
    from ..main import LANGUAGES  # main imports notify, which imports this package's service
    return code if code in LANGUAGES else current_app.extensions["protect.settings"].default_locale


def queue_notices(db: Session, now: datetime | None = None) -> int:
    """Queue a notice for every live release that has none yet; returns how many.

    The body is written at send time (it carries the link and the sealed
    title); the stored subject is the generic one, in the recipient's language.
    """
    now = now or utcnow()
    rows = db.execute(
        select(Release.id, Recipient.language)
        .join(Recipient, Recipient.id == Release.recipient_id)
        .outerjoin(OutboxEmail, OutboxEmail.release_id == Release.id)
        .where(OutboxEmail.id.is_(None), Release.expires_at > now)).all()
    values = []
    for release_id, language in rows:
        language = _language(language)
        with force_locale(language):
            subject = _subject()
        values.append({"key": NOTICE_KEY.format(release_id), "user_id": None, "release_id": release_id,
                       "language": language, "subject": subject, "body": ""})
    return insert_new(db, cast(Table, OutboxEmail.__table__), values,
                      {"state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}, keys=False)


def _subject() -> str:
    return gettext("Files entrusted to you have been released")


@dataclass(frozen=True)
class Notice:
    to: str
    subject: str
    body: str


def notice(db: Session, release_id: str, language: str) -> Notice:
    """The release notice, with a new link token (the caller commits its hash
    before sending). NotFound when the release is gone, DomainError when expired."""
    release = db.get(Release, release_id)
    if release is None:
        raise NotFound(_l("This release no longer exists."))
    vault = db.get_one(Vault, release.vault_id)
    recipient = db.get_one(Recipient, release.recipient_id)
    token = issue_release_link(db, release)
    audit.record(db, "vault.release_link_issued", target=release.id, vault=vault.id, recipient=recipient.id)
    url = current_app.extensions["protect.settings"].public_url.rstrip("/") + "/release/" + token
    with force_locale(language):
        n = max(1, vault.downloads_per_file)
        lines = [
            gettext("Hello %(name)s,", name=recipient.name),
            gettext("A journalist chose you to receive the files of their investigation “%(title)s” if "
                    "they stopped checking in, or if something happened to them. The protection "
                    "system that kept the files has now released them to you.", title=vault.title),
            gettext("Open this link to download them. It works until %(when)s:",
                    when=format_datetime(release.expires_at, "long")) + "\n" + url,
            ngettext("Each file can be downloaded once.", "Each file can be downloaded %(num)d times.", n),
            gettext("The files are encrypted to your age key: you will need your key file to open them. "
                    "The page shows how.") if recipient.age_recipient else
            gettext("You will also need the access code that the journalist gave you in person. "
                    "It is not in this message."),
            gettext("This link is for you alone: do not forward this message. Only the link in the most "
                    "recent message about these files works. Replies are not read."),
        ]
        return Notice(recipient.email, _subject(), "\n\n".join(lines) + "\n")


# -- the link and the session marker ----------------------------------------------

def open_link(db: Session, token: str) -> Release:
    """The release a link token opens (LinkInvalid, LinkExpired); audited."""
    try:
        release = find_release(db, token)
    except NotFound:
        raise LinkInvalid() from None
    except DomainError:
        raise LinkExpired() from None
    release.first_used_at = release.first_used_at or utcnow()
    audit.record(db, "vault.release_opened", target=release.id, vault=release.vault_id,
                 recipient=release.recipient_id)
    return release


def language(db: Session, release: Release) -> str:
    """The language the recipient's notice was written in."""
    return _language(db.get_one(Recipient, release.recipient_id).language)


def marker(release: Release) -> dict:
    """What the session keeps instead of the token: the link's hash names the
    link, so a newer link (or a resend) ends sessions opened with the old one."""
    return {"id": release.id, "link": release.token_hash}


def current(db: Session, kept: dict | None) -> Release:
    """The release a session marker names, if its link is still the live one."""
    if not (isinstance(kept, dict) and isinstance(kept.get("id"), str) and isinstance(kept.get("link"), str)):
        raise LinkInvalid()
    release = db.get(Release, kept["id"]) if len(kept["id"]) == 32 else None
    if release is None or release.token_hash is None or not secrets.compare_digest(release.token_hash, kept["link"]):
        raise LinkInvalid()
    if utcnow() >= release.expires_at:
        raise LinkExpired()
    return release


# -- what the page shows ------------------------------------------------------------

@dataclass(frozen=True)
class ReleasedFile:
    id: str
    number: int
    kind: str                 # file | note
    name: str | None          # None when the server cannot read it (recipients-only)
    size: int
    created_at: datetime
    left: int                 # downloads left
    download_name: str        # "<n>-<safe name>"; ".age" is added for age files
    blob_id: str


@dataclass(frozen=True)
class Overview:
    release: Release
    vault: Vault
    recipient: Recipient
    title: str
    keyed: bool
    names_known: bool
    per_file: int
    files: list[ReleasedFile]

    @property
    def used_up(self) -> bool:
        return bool(self.files) and not any(f.left for f in self.files)


_UNSAFE = set('/\\:*?"<>|')


def safe_name(name: str) -> str:
    """A name safe to save on any system: no path, no control or bidi characters."""
    kept = "".join("_" if ch in _UNSAFE else ch for ch in name if ch.isprintable()).strip(" .")
    return kept[:150] or "file"


def overview(db: Session, release: Release) -> Overview:
    """The release as its recipient sees it: the files left in the vault and
    how many downloads each has left. NeedsKey for a keyless recipient of a
    vault the server cannot read (add_recipient prevents it; checked anyway)."""
    vault = db.get_one(Vault, release.vault_id)
    recipient = db.get_one(Recipient, release.recipient_id)
    deposits = [(d, blob_id) for d in _live_deposits(db, vault) if (blob_id := d.blob_id)]
    keyed = recipient.age_recipient is not None
    if not keyed and release_identity(vault) is None:
        raise NeedsKey()
    used = dict(db.execute(select(ReleaseDownload.deposit_id, ReleaseDownload.count)
                           .where(ReleaseDownload.release_id == release.id)).all())
    per_file = max(1, vault.downloads_per_file)
    names_known = not vault.recipients_only
    files = []
    for number, (d, blob_id) in enumerate(deposits, start=1):
        name = (d.filename if d.kind == "file" else None) if names_known else None
        plain = name or ("note.txt" if d.kind == "note" else "file")
        files.append(ReleasedFile(d.id, number, d.kind, name, d.size, d.created_at,
                                  max(0, per_file - used.get(d.id, 0)), f"{number}-{safe_name(plain)}",
                                  blob_id))
    return Overview(release, vault, recipient, vault.title, keyed, names_known, per_file, files)


# -- downloads -----------------------------------------------------------------

def _insert_ignore(db: Session):
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(ReleaseDownload).on_conflict_do_nothing(index_elements=["release_id", "deposit_id"])


def _claim(db: Session, release: Release, deposit_id: str, allowed: int, now: datetime) -> bool:
    """Count one download of a deposit if the limit allows, atomically: the
    first one inserts the row, later ones raise the count only while it is
    below the limit (re-checked by the UPDATE under the row lock)."""
    inserted = db.execute(_insert_ignore(db).values(release_id=release.id, deposit_id=deposit_id, count=1,
                                                    last_at=now).returning(ReleaseDownload.id)).first()
    if inserted is not None:
        return True
    return rowcount(db.execute(update(ReleaseDownload)
                               .where(ReleaseDownload.release_id == release.id,
                                      ReleaseDownload.deposit_id == deposit_id, ReleaseDownload.count < allowed)
                               .values(count=ReleaseDownload.count + 1, last_at=now),
                               execution_options={"synchronize_session": False})) == 1


@dataclass(frozen=True)
class AgeFile:
    blob_id: str
    filename: str


def age_file(db: Session, release: Release, deposit_id: str) -> AgeFile:
    """Claim one download of a deposit's age file (keyed recipients); audited.
    The caller commits before the first byte."""
    view = overview(db, release)
    if not view.keyed:
        raise NotFound(_l("No such file."))
    item = next((f for f in view.files if f.id == deposit_id), None)
    if item is None:
        raise NotFound(_l("No such file."))
    if not _claim(db, release, item.id, view.per_file, utcnow()):
        raise UsedUp(view.per_file)
    _audit_download(db, release, [item.id], "age")
    return AgeFile(item.blob_id, item.download_name + ".age")


def _audit_download(db: Session, release: Release, deposit_ids: list[str], form: str) -> None:
    audit.record(db, "vault.release_download", target=release.id, vault=release.vault_id,
                 recipient=release.recipient_id, deposits=deposit_ids, format=form)


def manifest(db: Session, release: Release) -> dict:
    """File names, sizes and the SHA-256 of each age file as it downloads
    (keyed recipients). In a recipients-only vault the server cannot read the
    names; each is given as the small age file (base64) that holds it."""
    view = overview(db, release)
    if not view.keyed:
        raise NotFound(_l("No such file."))
    store = blob_store()
    files = []
    for item in view.files:
        digest, size = hashlib.sha256(), 0
        with store.open(item.blob_id) as raw:
            while chunk := raw.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        entry = {"file": item.download_name + ".age", "name": item.name, "kind": item.kind,
                 "size": item.size, "age_size": size, "sha256": digest.hexdigest(),
                 "deposited_at": item.created_at.isoformat()}
        name_age = db.get_one(Deposit, item.id).name_age
        if not view.names_known and name_age is not None:
            entry["name_age"] = base64.b64encode(name_age).decode()
        files.append(entry)
    audit.record(db, "vault.release_manifest", target=release.id, vault=release.vault_id,
                 recipient=release.recipient_id)
    return {"format": "protect-release-manifest/1", "expires_at": release.expires_at.isoformat(),
            "files": files}


def _check_code(db: Session, release: Release, recipient: Recipient, code: str | None) -> None:
    """Raise CodeThrottled or WrongCode (audited: the audit rows are the count,
    so the caller commits after WrongCode for the failure to count)."""
    now = utcnow()
    recent = list(db.execute(select(AuditEntry.at).where(
        AuditEntry.action == "vault.release_code_failed", AuditEntry.target == release.id,
        AuditEntry.at > now - THROTTLE_WINDOW).order_by(AuditEntry.at.desc()).limit(THROTTLE_FAILURES)).scalars())
    if len(recent) >= THROTTLE_FAILURES:
        raise CodeThrottled(recent[-1] + THROTTLE_WINDOW, now)
    code = (code or "").strip()[:ACCESS_CODE_MAX * 4]
    if not code or not verify_password(recipient.access_code_hash, code):
        audit.record(db, "vault.release_code_failed", target=release.id, vault=release.vault_id,
                     recipient=recipient.id)
        raise WrongCode()


@dataclass
class Archive:
    stream: ZipStream
    filename: str
    size: int


def zip_archive(db: Session, release: Release, code: str | None) -> Archive:
    """Check the access code, claim one download of every file that has one
    left, and return the ZIP that decrypts them while it streams (nothing is
    written anywhere; memory stays at a few MiB). The caller commits first."""
    view = overview(db, release)
    if view.keyed or not view.files:
        raise NotFound(_l("No such file."))
    _check_code(db, release, view.recipient, code)
    now = utcnow()
    chosen = [f for f in view.files if f.left and _claim(db, release, f.id, view.per_file, now)]
    if not chosen:
        raise UsedUp(view.per_file)
    _audit_download(db, release, [f.id for f in chosen], "zip")
    identity, store = release_identity(view.vault), blob_store()
    if identity is None:  # (overview() has refused it already)
        raise NeedsKey()
    archive = ZipStream(sized=True)  # stored, not compressed: sizes known, so a Content-Length
    for item in chosen:
        archive.add(_plaintext(store, item.blob_id, identity, item.size), item.download_name, size=item.size)
    return Archive(archive, f"release-{now:%Y-%m-%d}.zip", len(archive))


class SizeMismatch(Exception):
    """A deposit decrypted to another size than recorded (the ZIP's sizes are announced)."""


def _plaintext(store, blob_id: str, identity: str, size: int) -> Iterator[bytes]:
    """One deposit decrypted, block by block; opened only when the ZIP reaches it.
    The size is checked here so that the ZIP library never reports (and logs
    the name of) a file whose size is off."""
    done = 0
    with store.open(blob_id) as raw:
        with agefile.open_decrypted(raw, [identity]) as plain:
            while chunk := plain.read(CHUNK):
                done += len(chunk)
                if done > size:
                    raise SizeMismatch(blob_id)
                yield chunk
    if done != size:
        raise SizeMismatch(blob_id)

