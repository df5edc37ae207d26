"""Release to recipients: the link, the pages, age files for keyed recipients,
a streamed ZIP for keyless ones, download limits, expiry, throttling."""
from __future__ import annotations

import base64
import hashlib
import html as html_module
import io
import json
import logging
import os
import re
import subprocess
import threading
import tracemalloc
import zipfile
from datetime import timedelta

import pytest
from flask import current_app
from sqlalchemy import select

from protect.crypto.uploads import EncryptedUpload
from protect.extensions import db
from protect.vault import release as rs
from protect.vault import service as vs
from protect.vault.models import Recipient, Release, ReleaseDownload
from tests.conftest import csrf_token

from .conftest import audits, make_vault, upload

AGE = "/usr/bin/age"
CODE = "entregado-en-mano-2026"
DATA = b"%PDF-1.7 contratos " + os.urandom(150 * 1024)  # three age chunks
NOTE = "Fuente: el tesorero municipal, reunión del 3 de mayo"


def release_vault(people, clock, *, recipients_only=False, keyless=True, per_file=1, files=None):
    """A vault with a keyed recipient (and a keyless one), a file and a note,
    taken through a missed check-in and its grace period to release."""
    j = people["journalist"]
    vault = make_vault(people, recipients_only=recipients_only)
    keyless_recipient = None
    if keyless:
        keyless_recipient = vs.add_recipient(db.session, j, vault, name="Consorcio", email="consorcio@example.org",
                                             access_code=CODE)
    for recipient in vault.recipients:
        recipient.language = "en"
    for name, data in (files or [("contratos: año 2026.pdf", DATA)]):
        vs.add_file_deposit(db.session, j, vault, upload(vault, data, name))
    vs.add_note(db.session, j, vault, NOTE)
    vault.downloads_per_file = per_file
    db.session.commit()
    clock.advance(hours=vault.interval_hours + vault.grace_hours + 1)
    assert vs.sweep(db.session).released == 1
    vault.keyless = keyless_recipient
    return vault


def release_of(vault, recipient) -> Release:
    return db.session.execute(select(Release).where(Release.vault_id == vault.id,
                                                    Release.recipient_id == recipient.id)).scalar_one()


def link(vault, recipient) -> str:
    """A fresh link token, as the notice would carry."""
    token = vs.issue_release_link(db.session, release_of(vault, recipient))
    db.session.commit()
    return token


def opened(client, token: str):
    response = client.get(f"/release/{token}")
    assert response.status_code == 303 and response.location == "/release/", response.status_code
    return client.get("/release/")


def keyed(vault) -> Recipient:
    return next(r for r in vault.recipients if r.age_recipient)


def downloads(vault, recipient) -> dict:
    return dict(db.session.execute(select(ReleaseDownload.deposit_id, ReleaseDownload.count)
                                   .where(ReleaseDownload.release_id == release_of(vault, recipient).id)).all())


def deposit_ids(vault) -> list[str]:
    return [d.id for d in vs._live_deposits(db.session, vault)]


def test_keyed_recipient_downloads_age_files_that_age_opens(people, clock, client, blobs, tmp_path):
    vault = release_vault(people, clock)
    recipient = keyed(vault)
    token = link(vault, recipient)
    page = opened(client, token)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Investigación: contratos de seguridad" in html and "contratos: año 2026.pdf" in html
    assert ("age -d -i key.txt -o '1-contratos_ año 2026.pdf' '1-contratos_ año 2026.pdf.age'"
            in html_module.unescape(html))
    assert token not in html
    csrf = csrf_token(client, "/release/")
    file_id, note_id = deposit_ids(vault)

    response = client.post(f"/release/files/{file_id}", data={"csrf_token": csrf})
    assert response.status_code == 200
    assert "filename*=UTF-8''1-contratos_%20a%C3%B1o%202026.pdf.age" in response.headers["Content-Disposition"]
    sealed = response.get_data()
    assert int(response.headers["Content-Length"]) == len(sealed) and DATA[:20] not in sealed
    (tmp_path / "key.txt").write_text(f"# recipient\n{vault.test_key[0]}\n")
    (tmp_path / "1.age").write_bytes(sealed)
    opened_file = subprocess.run([AGE, "-d", "-i", str(tmp_path / "key.txt"), "-o", str(tmp_path / "1.pdf"),
                                  str(tmp_path / "1.age")], capture_output=True, timeout=30)
    assert opened_file.returncode == 0, opened_file.stderr
    assert (tmp_path / "1.pdf").read_bytes() == DATA

    note = client.post(f"/release/files/{note_id}", data={"csrf_token": csrf})
    assert note.status_code == 200 and "2-note.txt.age" in note.headers["Content-Disposition"]
    (tmp_path / "2.age").write_bytes(note.get_data())
    out = subprocess.run([AGE, "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "2.age")],
                         capture_output=True, check=True, timeout=30)
    assert out.stdout.decode() == NOTE

    # The manifest: names, sizes and the SHA-256 of each age file as downloaded.
    manifest = client.post("/release/manifest", data={"csrf_token": csrf})
    assert manifest.status_code == 200 and manifest.mimetype == "application/json"
    files = json.loads(manifest.get_data())["files"]
    assert [(f["file"], f["name"], f["size"]) for f in files] == [
        ("1-contratos_ año 2026.pdf.age", "contratos: año 2026.pdf", len(DATA)),
        ("2-note.txt.age", None, len(NOTE.encode()))]
    assert files[0]["sha256"] == hashlib.sha256(sealed).hexdigest() and files[0]["age_size"] == len(sealed)
    assert "name_age" not in files[0]

    # Once per file: the second POST is refused, clearly, and the page says the link is used.
    again = client.post(f"/release/files/{file_id}", data={"csrf_token": csrf})
    assert again.status_code == 410
    assert "each file could be downloaded once, and that is done" in again.get_data(as_text=True)
    assert downloads(vault, recipient) == {file_id: 1, note_id: 1}
    page = client.get("/release/")
    assert page.status_code == 410 and "This link has been used" in page.get_data(as_text=True)
    # Audited with ids only.
    entries = audits("vault.release_download")
    assert len(entries) == 2 and all("contratos" not in e.details and "age" in e.details for e in entries)
    assert all(e.target == release_of(vault, recipient).id for e in entries)


def test_keyless_recipient_gets_a_zip_the_server_decrypts(people, clock, client, blobs):
    vault = release_vault(people, clock)
    page = opened(client, link(vault, vault.keyless))
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Access code" in html and "age -d" not in html
    csrf = csrf_token(client, "/release/")
    response = client.post("/release/zip", data={"csrf_token": csrf, "code": CODE})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    body = response.get_data()
    assert int(response.headers["Content-Length"]) == len(body)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["1-contratos_ año 2026.pdf", "2-note.txt"]
        assert archive.read("1-contratos_ año 2026.pdf") == DATA
        assert archive.read("2-note.txt").decode() == NOTE
    assert set(downloads(vault, vault.keyless).values()) == {1}
    [entry] = audits("vault.release_download")
    assert '"zip"' in entry.details and "contratos" not in entry.details
    # Used: a second try says so, and no ZIP comes.
    again = client.post("/release/zip", data={"csrf_token": csrf, "code": CODE})
    assert again.status_code == 410 and "This link has been used" in again.get_data(as_text=True)


def test_more_downloads_when_the_journalist_allowed_them(people, clock, client):
    vault = release_vault(people, clock, per_file=2)
    opened(client, link(vault, keyed(vault)))
    csrf = csrf_token(client, "/release/")
    file_id = deposit_ids(vault)[0]
    assert "Each file can be downloaded 2 times." in client.get("/release/").get_data(as_text=True)
    assert [client.post(f"/release/files/{file_id}", data={"csrf_token": csrf}).status_code
            for _ in range(3)] == [200, 200, 410]


def test_wrong_access_code_is_refused_then_throttled(people, clock, client):
    vault = release_vault(people, clock)
    opened(client, link(vault, vault.keyless))
    csrf = csrf_token(client, "/release/")
    for _ in range(vs.THROTTLE_FAILURES):
        wrong = client.post("/release/zip", data={"csrf_token": csrf, "code": "not-the-code"})
        assert wrong.status_code == 401 and "That access code is not right." in wrong.get_data(as_text=True)
    empty = client.post("/release/zip", data={"csrf_token": csrf, "code": ""})
    assert empty.status_code == 400 and "Enter the access code" in empty.get_data(as_text=True)
    blocked = client.post("/release/zip", data={"csrf_token": csrf, "code": CODE})
    assert blocked.status_code == 429 and "Too many wrong access codes" in blocked.get_data(as_text=True)
    assert downloads(vault, vault.keyless) == {}
    assert len(audits("vault.release_code_failed")) == vs.THROTTLE_FAILURES
    clock.advance(vs.THROTTLE_WINDOW)
    assert client.post("/release/zip", data={"csrf_token": csrf, "code": CODE}).status_code == 200


def test_get_never_uses_a_download(people, clock, client):
    vault = release_vault(people, clock)
    recipient = keyed(vault)
    token = link(vault, recipient)
    file_id = deposit_ids(vault)[0]
    for _ in range(3):  # a mail scanner, a preview, the recipient
        opened(client, token)
    assert client.get(f"/release/files/{file_id}").status_code == 405
    assert client.post(f"/release/files/{file_id}").status_code == 400  # no CSRF token: refused
    assert downloads(vault, recipient) == {}
    assert release_of(vault, recipient).first_used_at is not None
    assert len(audits("vault.release_opened")) == 3


def test_expired_link_says_so(people, clock, client):
    vault = release_vault(people, clock)
    token = link(vault, keyed(vault))
    opened(client, token)
    clock.advance(days=vs.RELEASE_LINK_DAYS)
    page = client.get("/release/")
    assert page.status_code == 410 and "This link has expired" in page.get_data(as_text=True)
    gone = current_app.test_client().get(f"/release/{token}")
    assert gone.status_code == 410 and "This link has expired" in gone.get_data(as_text=True)


def test_replaced_link_is_invalid_and_ends_its_session(people, clock, client):
    vault = release_vault(people, clock)
    recipient = keyed(vault)
    old = link(vault, recipient)
    opened(client, old)
    new = link(vault, recipient)  # a resend
    page = client.get("/release/")
    assert page.status_code == 404 and "replaced by a newer one" in page.get_data(as_text=True)
    assert client.get(f"/release/{old}").status_code == 404
    assert client.get("/release/").status_code == 200  # no marker left: the "open your link" page
    assert opened(client, new).status_code == 200
    assert current_app.test_client().get("/release/" + "x" * 43).status_code == 404


def test_the_token_stays_out_of_logs_and_urls(people, clock, client, caplog):
    caplog.set_level(logging.DEBUG)
    vault = release_vault(people, clock)
    token = link(vault, vault.keyless)
    first = client.get(f"/release/{token}")
    assert first.status_code == 303 and token not in first.location
    page = client.get(first.location)
    assert page.status_code == 200 and token not in page.get_data(as_text=True)
    csrf = csrf_token(client, "/release/")
    client.post("/release/zip", data={"csrf_token": csrf, "code": "wrong-code-here"})
    assert client.post("/release/zip", data={"csrf_token": csrf, "code": CODE}).status_code == 200
    assert token not in caplog.text and CODE not in caplog.text and "contratos" not in caplog.text
    assert release_of(vault, vault.keyless).token_hash == hashlib.sha256(token.encode()).hexdigest()


def test_concurrent_clicks_cannot_both_pass_the_limit(people, clock, app):
    vault = release_vault(people, clock)
    token = link(vault, keyed(vault))
    file_id = deposit_ids(vault)[0]
    client = app.test_client()
    opened(client, token)
    csrf = csrf_token(client, "/release/")
    cookie = client.get_cookie("protect_session").value
    barrier, statuses = threading.Barrier(4), []

    def click():
        other = app.test_client()
        other.set_cookie("protect_session", cookie)
        barrier.wait()
        statuses.append(other.post(f"/release/files/{file_id}", data={"csrf_token": csrf}).status_code)

    threads = [threading.Thread(target=click) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 410, 410, 410]
    db.session.expire_all()
    assert downloads(vault, keyed(vault))[file_id] == 1


def test_recipients_only_vault_gives_names_encrypted_in_the_manifest(people, clock, client, tmp_path):
    vault = release_vault(people, clock, recipients_only=True, keyless=False)
    page = opened(client, link(vault, keyed(vault)))
    html = page.get_data(as_text=True)
    assert "Name encrypted" in html and "2026.pdf" not in html and "1-file.age" in html
    csrf = csrf_token(client, "/release/")
    files = json.loads(client.post("/release/manifest", data={"csrf_token": csrf}).get_data())["files"]
    assert files[0]["file"] == "1-file.age" and files[0]["name"] is None
    (tmp_path / "key.txt").write_text(vault.test_key[0] + "\n")
    (tmp_path / "name.age").write_bytes(base64.b64decode(files[0]["name_age"]))
    name = subprocess.run([AGE, "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "name.age")],
                          capture_output=True, check=True, timeout=30)
    assert name.stdout.decode() == "contratos: año 2026.pdf"


def test_keyless_recipient_of_a_recipients_only_vault_is_refused(people, clock, client):
    vault = release_vault(people, clock, recipients_only=True, keyless=False)
    # add_recipient refuses this; a row made behind its back is refused by the pages too.
    with pytest.raises(vs.DomainError):
        vs.add_recipient(db.session, people["journalist"], vault, name="X", email="x@example.org",
                         access_code=CODE)
    db.session.rollback()
    stray = Recipient(vault_id=vault.id, access_code_hash="$argon2id$stray", language="en")
    stray.name, stray.email = "X", "x@example.org"
    db.session.add(stray)
    db.session.flush()
    db.session.add(Release(vault_id=vault.id, recipient_id=stray.id, expires_at=clock() + timedelta(days=1)))
    db.session.commit()
    page = opened(client, link(vault, stray))
    assert page.status_code == 409 and "only be opened with an age key" in page.get_data(as_text=True)


def test_no_link_in_the_session_explains_where_to_go(client):
    page = client.get("/release/")
    assert page.status_code == 200 and "open the link in the e-mail" in page.get_data(as_text=True)


def test_zip_streams_in_bounded_memory_and_an_interrupted_download_leaves_nothing(
        people, clock, app, blobs, tmp_path):
    size = 24 * 1024 * 1024
    vault = make_vault(people)
    j = people["journalist"]
    keyless = vs.add_recipient(db.session, j, vault, name="Consorcio", email="c@example.org", access_code=CODE)
    keyless.language = "en"
    up = EncryptedUpload(blobs, vs.deposit_recipients(vault), size, "grande.mov", None)
    chunk = os.urandom(1024 * 1024)
    for _ in range(size // len(chunk)):
        up.write(chunk)
    up.seek(0)
    vs.add_file_deposit(db.session, j, vault, up)
    vault.downloads_per_file = 2
    db.session.commit()
    clock.advance(hours=vault.interval_hours + vault.grace_hours + 1)
    vs.sweep(db.session)
    client = app.test_client()
    opened(client, link(vault, keyless))
    csrf = csrf_token(client, "/release/")
    before = sorted(blobs.ids())
    local_tmp = sorted(os.listdir(blobs.tmp)) if hasattr(blobs, "tmp") else None

    tracemalloc.start()
    try:
        response = client.post("/release/zip", data={"csrf_token": csrf, "code": CODE}, buffered=False)
        assert response.status_code == 200 and int(response.headers["Content-Length"]) > size
        received, digest = 0, hashlib.sha256()
        for part in response.response:
            received += len(part)
            digest.update(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    response.close()
    assert received == int(response.headers["Content-Length"])
    if local_tmp is not None:  # (moto, in this process, holds and serves each object in one piece)
        assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while streaming {size / 2**20:.0f} MiB"

    # The second download is cut off after its first chunk: nothing is written anywhere.
    cut = client.post("/release/zip", data={"csrf_token": csrf, "code": CODE}, buffered=False)
    assert cut.status_code == 200
    parts = iter(cut.response)
    assert next(parts)
    cut.close()
    assert sorted(blobs.ids()) == before
    if local_tmp is not None:
        assert sorted(os.listdir(blobs.tmp)) == local_tmp
    assert vs.collect_garbage(db.session, older_than=timedelta(0)) == 0
    assert sorted(blobs.ids()) == before


def test_zip_entries_are_safe_names(ctx):
    assert rs.safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert rs.safe_name("fac\u202etxt.exe") == "factxt.exe"
    assert rs.safe_name("...") == "file"
    assert re.fullmatch(r"[^/\\]+", rs.safe_name("a/b\\c:d"))


def test_each_recipient_gets_only_their_kind_of_download(people, clock, client):
    vault = release_vault(people, clock)
    file_id = deposit_ids(vault)[0]
    opened(client, link(vault, keyed(vault)))
    csrf = csrf_token(client, "/release/")
    assert client.post("/release/zip", data={"csrf_token": csrf, "code": CODE}).status_code == 404
    opened(client, link(vault, vault.keyless))  # the session now holds the keyless recipient's link
    assert client.post(f"/release/files/{file_id}", data={"csrf_token": csrf}).status_code == 404
    assert client.post("/release/manifest", data={"csrf_token": csrf}).status_code == 404
    assert client.post("/release/files/" + "0" * 32, data={"csrf_token": csrf}).status_code == 404
    assert audits("vault.release_download") == []


def test_a_download_cut_short_by_a_damaged_file_logs_no_name(people, clock, client, caplog):
    vault = release_vault(people, clock)
    deposit = vs._live_deposits(db.session, vault)[0]
    deposit.size += 1  # what the ZIP announces no longer matches what decrypts
    db.session.commit()
    opened(client, link(vault, vault.keyless))
    csrf = csrf_token(client, "/release/")
    response = client.post("/release/zip", data={"csrf_token": csrf, "code": CODE})
    assert response.status_code == 200 and len(response.get_data()) < int(response.headers["Content-Length"])
    assert "download stopped: SizeMismatch" in caplog.text
    assert "contratos" not in caplog.text and "año" not in caplog.text
