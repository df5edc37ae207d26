"""Keys and deposits: who can open what, header re-wrapping, crypto-shredding,
delayed deletion, garbage collection."""
from __future__ import annotations

import io
import os
import subprocess
from datetime import timedelta

import pytest
from flask import current_app
from sqlalchemy import select

from protect.crypto import agefile, serverkeys
from protect.crypto.serverkeys import ServerKey
from protect.errors import DomainError, NotFound
from protect.extensions import db, utcnow
from protect.vault import service as vs
from protect.vault.models import Deposit, OrphanBlob, Vault, VaultEvent
from protect.vault.service import Schedule

from .conftest import DURESS, PIN, audits, blob_bytes, blob_exists, decrypt, make_vault, new_key, notes, open_case, upload

AGE = "/usr/bin/age"
DATA = b"%PDF-1.7 contratos " + os.urandom(150 * 1024)  # three age chunks


def payload(data: bytes) -> bytes:
    """The bytes after an age header (nonce and STREAM chunks)."""
    return data[agefile.read_header(io.BytesIO(data)).payload_offset:]


def test_a_deposit_opens_with_the_release_identity_and_every_recipient_key(people, tmp_path):
    j = people["journalist"]
    vault = make_vault(people)
    second = new_key()
    vs.add_recipient(db.session, j, vault, name="Consorcio", email="c@example.org", age_recipient=second[1])
    keyless = vs.add_recipient(db.session, j, vault, name="Sin llave", email="s@example.org",
                               access_code="entregado-en-mano")
    db.session.commit()
    assert keyless.access_code_hash.startswith("$argon2id$")
    recipients = vs.deposit_recipients(vault)
    assert recipients == [vault.release_recipient, vault.test_key[1], second[1]]
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA, "contratos.pdf"))
    note = vs.add_note(db.session, j, vault, "Fuente: el tesorero municipal, reunión del 3 de mayo")
    db.session.commit()
    blob = blob_bytes(deposit.blob_id)
    assert DATA[:20] not in blob and len(agefile.read_header(io.BytesIO(blob)).stanzas) == 3
    identity = vs.release_identity(vault)
    assert identity.startswith("AGE-SECRET-KEY-1") and agefile.recipient_of(identity) == vault.release_recipient
    for key in (identity, vault.test_key[0], second[0]):
        assert decrypt(blob, [key]) == DATA
        assert decrypt(blob_bytes(note.blob_id), [key]).decode().startswith("Fuente: el tesorero")
        assert decrypt(deposit.name_age, [key]) == b"contratos.pdf"
    # Debian's age opens it with a recipient's key file.
    (tmp_path / "key.txt").write_text(f"# a recipient's key\n{second[0]}\n")
    (tmp_path / "deposit.age").write_bytes(blob)
    out = subprocess.run([AGE, "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "deposit.age")],
                         capture_output=True, check=True, timeout=30)
    assert out.stdout == DATA
    # The wrapped release secret is sealed under the master key, not stored in the clear.
    assert identity.encode() not in vault.release_secret_ct
    # The listing: names for the owner, sizes, no content.
    listed = vs.deposits(db.session, j, vault)
    note_size = len("Fuente: el tesorero municipal, reunión del 3 de mayo".encode())
    assert [(d.kind, d.name, d.size) for d in listed] == [("file", "contratos.pdf", len(DATA)),
                                                           ("note", None, note_size)]
    assert [e.details for e in audits("vault.deposit_added")][0].count("contratos") == 0


def test_recipients_only_vault_is_unreadable_by_the_server(people, app):
    j = people["journalist"]
    with pytest.raises(DomainError):  # nothing to encrypt to before a keyed recipient exists
        empty = vs.create_vault(db.session, j, "Solo destinatarios", recipients_only=True)
        vs.deposit_recipients(empty)
    db.session.rollback()
    vault = make_vault(people, recipients_only=True)
    make_vault(people)  # other vaults' identities are of no help either
    serverkeys.identity(db.session, "evidence")
    db.session.commit()
    assert vault.release_secret_ct is None and vault.release_recipient is None
    assert vs.release_identity(vault) is None
    with pytest.raises(DomainError, match="age key"):
        vs.add_recipient(db.session, j, vault, name="Sin llave", email="s@example.org", access_code="codigo-largo")
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA, "fuentes.xlsx"))
    db.session.commit()
    blob = blob_bytes(deposit.blob_id)
    header = agefile.read_header(io.BytesIO(blob))
    assert len(header.stanzas) == 1  # the recipient's only: no server stanza
    # Every age identity the server holds, and the master keyring, fail.
    server_identities = [k.secret.decode() for k in db.session.execute(select(ServerKey)).scalars()]
    server_identities += [vs.release_identity(v) for v in db.session.execute(select(Vault)).scalars()
                          if v.release_secret_ct is not None]
    assert len(server_identities) >= 2
    with pytest.raises(agefile.NoIdentityMatch):
        agefile.unwrap_file_key(header, server_identities)
    with pytest.raises(agefile.NoIdentityMatch):
        decrypt(blob, [])
    ring = current_app.extensions["protect.keyring"]
    for master in ring.keys:  # no master-derived key is an age identity of this file
        for secret in (master.column_key, master.wrap_key, master.index_key):
            as_identity = agefile._bech32_encode("AGE-SECRET-KEY-", secret).upper()
            with pytest.raises(agefile.NoIdentityMatch):
                agefile.unwrap_file_key(header, [as_identity])
    # The name is not readable by the server either: only the age-encrypted copy exists.
    assert deposit.filename_ct is None
    with pytest.raises(agefile.NoIdentityMatch):
        decrypt(deposit.name_age, server_identities)
    assert [d.name for d in vs.deposits(db.session, j, vault)] == [None]
    # The recipient's own key opens both.
    assert decrypt(blob, [vault.test_key[0]]) == DATA
    assert decrypt(deposit.name_age, [vault.test_key[0]]) == b"fuentes.xlsx"
    # Adding a recipient would need re-encryption the server cannot do.
    with pytest.raises(DomainError, match="deposit the files again"):
        vs.add_recipient(db.session, j, vault, name="Otra", email="o@example.org", age_recipient=new_key()[1])


def test_add_recipient_rewraps_headers_keeping_the_payload(people):
    j = people["journalist"]
    vault = make_vault(people)
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA))
    db.session.commit()
    old_blob_id, old = deposit.blob_id, blob_bytes(deposit.blob_id)
    late = new_key()
    with pytest.raises(agefile.NoIdentityMatch):
        decrypt(old, [late[0]])
    vs.add_recipient(db.session, j, vault, name="Nuevo editor", email="n@example.org", age_recipient=late[1])
    assert blob_exists(old_blob_id)  # until the commit
    db.session.commit()
    assert deposit.blob_id != old_blob_id and not blob_exists(old_blob_id)
    new = blob_bytes(deposit.blob_id)
    assert payload(new) == payload(old)  # the payload bytes were copied unchanged
    assert len(agefile.read_header(io.BytesIO(new)).stanzas) == 3
    for key in (late[0], vault.test_key[0], vs.release_identity(vault)):
        assert decrypt(new, [key]) == DATA
    assert decrypt(deposit.name_age, [late[0]]) == b"documento.pdf"
    assert '"rewrapped": 1' in audits("vault.recipient_added")[-1].details
    with pytest.raises(DomainError):  # the same key twice
        vs.add_recipient(db.session, j, vault, name="Otra vez", email="n@example.org", age_recipient=late[1])
    with pytest.raises(DomainError):
        vs.add_recipient(db.session, j, vault, name="Mal", email="m@example.org", age_recipient="age1notakey")


def test_a_rolled_back_rewrap_leaves_the_old_blob(people):
    j = people["journalist"]
    vault = make_vault(people)
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA))
    db.session.commit()
    old_blob_id = deposit.blob_id
    vs.add_recipient(db.session, j, vault, name="Nuevo", email="n@example.org", age_recipient=new_key()[1])
    new_blob_id = deposit.blob_id
    db.session.rollback()
    assert blob_exists(old_blob_id) and not blob_exists(new_blob_id)
    assert db.session.get(Deposit, deposit.id).blob_id == old_blob_id


def test_an_upload_encrypted_before_a_recipient_was_added_is_rewrapped(people):
    j = people["journalist"]
    vault = make_vault(people)
    stale = upload(vault, DATA)  # encrypted to the recipients as they were
    late = new_key()
    vs.add_recipient(db.session, j, vault, name="Nuevo", email="n@example.org", age_recipient=late[1])
    db.session.commit()
    deposit = vs.add_file_deposit(db.session, j, vault, stale)
    db.session.commit()
    assert deposit.blob_id != stale.blob_id and not blob_exists(stale.blob_id)
    assert decrypt(blob_bytes(deposit.blob_id), [late[0]]) == DATA
    # In a recipients-only vault the server cannot: the file must be sent again.
    ro = make_vault(people, recipients_only=True)
    stale = upload(ro, DATA)
    wrong = upload(ro, DATA, recipients=[new_key()[1], new_key()[1]])
    with pytest.raises(DomainError, match="send the file again"):
        vs.add_file_deposit(db.session, j, ro, wrong)
    db.session.rollback()
    assert not blob_exists(wrong.blob_id)
    vs.add_file_deposit(db.session, j, ro, stale)
    db.session.commit()


def test_deleting_a_deposit_crypto_shreds_it(people):
    j = people["journalist"]
    vault = make_vault(people)
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA))
    db.session.commit()
    blob_id = deposit.blob_id
    assert vs.delete_deposit(db.session, j, vault, deposit) == "deleted"
    db.session.commit()
    assert not blob_exists(blob_id)
    row = db.session.get(Deposit, deposit.id)
    assert row.deleted_at is not None and row.blob_id is None and row.filename_ct is None and row.name_age is None
    assert vs.deposits(db.session, j, vault) == []
    with pytest.raises(NotFound):
        vs.delete_deposit(db.session, j, vault, row)


def test_a_rolled_back_deposit_leaves_no_blob(people):
    j = people["journalist"]
    vault = make_vault(people)
    note = vs.add_note(db.session, j, vault, "borrador")
    blob_id = note.blob_id
    assert blob_exists(blob_id)
    db.session.rollback()
    assert not blob_exists(blob_id)


def test_a_deletion_during_a_concealed_release_looks_done_but_waits(people, clock):
    """After a duress PIN started a hidden release, a deletion by whoever holds the phone
    must look as it always does without the protection (gone at once), or the delay
    would give the release away; the file still goes to the recipients, the caseworker is told."""
    open_case(people)
    j, cw = people["journalist"], people["caseworker"]
    vault = make_vault(people, schedule=Schedule(duress_action="alert_and_release"))
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA, "a.pdf"))
    db.session.commit()
    vs.check_in(db.session, vault, DURESS)
    db.session.commit()
    assert vault.state == "pending_release" and vs.shown_state(vault) == "armed"
    assert vs.delete_deposit(db.session, j, vault, deposit) == "deleted"
    db.session.commit()
    assert vs.deposits(db.session, j, vault) == []
    kinds = [e.kind for e in vs.timeline(db.session, j, vault)]
    assert kinds[-1] == "deposit_deleted" and "deposit_deletion_scheduled" not in kinds
    assert blob_exists(deposit.blob_id) and deposit.deleted_at is None
    assert {n.user_id for n in notes("vault_deletion_scheduled")} >= {cw.id}


def test_coerced_deletion_is_delayed_and_the_caseworker_told(people, clock):
    open_case(people)
    j, cw = people["journalist"], people["caseworker"]
    vault = make_vault(people, schedule=Schedule(coerced_deletion_protection=True))
    kept = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA, "a.pdf"))
    doomed = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA, "b.pdf"))
    db.session.commit()
    assert vs.delete_deposit(db.session, j, vault, doomed) == "scheduled"
    assert vs.delete_deposit(db.session, j, vault, kept) == "scheduled"
    db.session.commit()
    assert doomed.delete_after == utcnow() + timedelta(hours=72)
    assert {n.user_id for n in notes("vault_deletion_scheduled")} == {cw.id}
    assert [d.delete_after is not None for d in vs.deposits(db.session, j, vault)] == [True, True]
    vs.cancel_deletion(db.session, j, vault, kept)  # the journalist, free again, takes it back
    db.session.commit()
    clock.advance(hours=71)
    assert vs.sweep(db.session).deposits_deleted == 0 and blob_exists(doomed.blob_id)
    blob_id = doomed.blob_id
    clock.advance(hours=1)
    result = vs.sweep(db.session)
    db.session.expire_all()
    assert result.deposits_deleted == 1 and not blob_exists(blob_id)
    assert doomed.deleted_at is not None and doomed.blob_id is None
    assert kept.deleted_at is None and blob_exists(kept.blob_id)
    assert vs.sweep(db.session).deposits_deleted == 0


def test_deposit_and_shred_on_either_blob_store(people, clock, blobs):
    """A file deposited is an age file in the store (local or S3) that the recipient's key
    opens; deleting it removes the blob; the garbage collector then finds nothing to do."""
    key = new_key()
    vault = make_vault(people, key=key)
    deposit = vs.add_file_deposit(db.session, people["journalist"], vault, upload(vault, DATA))
    db.session.commit()
    stored = blob_bytes(deposit.blob_id)
    assert DATA[:20] not in stored and decrypt(stored, [key[0]]) == DATA
    blob_id = deposit.blob_id
    vs.delete_deposit(db.session, people["journalist"], vault, deposit)
    db.session.commit()
    assert not blob_exists(blob_id) and blob_id not in set(blobs.ids())
    assert vs.collect_garbage(db.session) == 0


def test_deleting_a_vault_destroys_its_key_and_blobs(people, clock):
    j = people["journalist"]
    protected = make_vault(people, schedule=Schedule(coerced_deletion_protection=True, deletion_delay_hours=24))
    plain = make_vault(people)
    blobs = {}
    for vault in (protected, plain):
        blobs[vault.id] = [vs.add_file_deposit(db.session, j, vault, upload(vault, DATA)).blob_id,
                           vs.add_note(db.session, j, vault, "nota").blob_id]
    db.session.commit()
    plain_id, protected_id = plain.id, protected.id
    assert vs.delete_vault(db.session, j, plain) == "deleted"
    db.session.commit()
    assert db.session.get(Vault, plain_id) is None
    assert not any(blob_exists(b) for b in blobs[plain_id])
    assert not db.session.execute(select(Deposit).where(Deposit.vault_id == plain_id)).first()
    assert not db.session.execute(select(VaultEvent).where(VaultEvent.vault_id == plain_id)).first()

    assert vs.delete_vault(db.session, j, protected) == "scheduled"
    db.session.commit()
    assert notes("vault_deletion_scheduled")  # the supervisors (no caseworker here)
    clock.advance(hours=23)
    assert vs.sweep(db.session).vaults_deleted == 0
    assert all(blob_exists(b) for b in blobs[protected_id])
    clock.advance(hours=1)
    assert vs.sweep(db.session).vaults_deleted == 1
    db.session.expire_all()
    assert db.session.get(Vault, protected_id) is None
    assert not any(blob_exists(b) for b in blobs[protected_id])
    assert [a.target for a in audits("vault.deleted")] == [plain_id, protected_id]


def test_garbage_collection_waits_an_hour(people, clock):
    j = people["journalist"]
    vault = make_vault(people)
    kept = vs.add_note(db.session, j, vault, "nota")
    db.session.commit()
    store = current_app.extensions["protect.blobs"]
    orphan = store.put(io.BytesIO(b"left by a crash"))
    assert vs.collect_garbage(db.session) == 0
    assert db.session.get(OrphanBlob, orphan) is not None
    clock.advance(minutes=59)
    assert vs.collect_garbage(db.session) == 0 and store.exists(orphan)
    clock.advance(minutes=1)
    assert vs.collect_garbage(db.session) == 1
    assert not store.exists(orphan) and store.exists(kept.blob_id)
    assert db.session.get(OrphanBlob, orphan) is None
    # A blob that finds its row before the hour is over is forgotten, not deleted.
    early = store.put(io.BytesIO(b"row comes late"))
    vs.collect_garbage(db.session)
    db.session.add(Deposit(vault_id=vault.id, kind="note", size=1, blob_id=early, created_at=utcnow()))
    db.session.commit()
    clock.advance(hours=2)
    assert vs.collect_garbage(db.session) == 0 and store.exists(early)
    assert db.session.get(OrphanBlob, early) is None


def test_removing_a_recipient_rewraps_without_them(people):
    j = people["journalist"]
    vault = make_vault(people)
    leaving = new_key()
    gone = vs.add_recipient(db.session, j, vault, name="Se va", email="s@example.org", age_recipient=leaving[1])
    deposit = vs.add_file_deposit(db.session, j, vault, upload(vault, DATA))
    db.session.commit()
    assert decrypt(blob_bytes(deposit.blob_id), [leaving[0]]) == DATA
    with pytest.raises(DomainError, match="Disarm"):
        vs.remove_recipient(db.session, j, vault, gone)
    vs.disarm(db.session, vault, PIN)
    vs.remove_recipient(db.session, j, vault, gone)
    db.session.commit()
    blob = blob_bytes(deposit.blob_id)
    assert len(agefile.read_header(io.BytesIO(blob)).stanzas) == 2
    with pytest.raises(agefile.NoIdentityMatch):
        decrypt(blob, [leaving[0]])
    assert decrypt(blob, [vault.test_key[0]]) == DATA
    # Recipients-only: the server cannot re-encrypt, so deposits go first.
    ro = make_vault(people, recipients_only=True, armed=False)
    vs.add_note(db.session, j, ro, "nota")
    with pytest.raises(DomainError, match="Delete the deposits first"):
        vs.remove_recipient(db.session, j, ro, ro.recipients[0])


def test_a_pasted_secret_key_is_refused(people):
    j = people["journalist"]
    vault = make_vault(people, armed=False)
    secret, _ = new_key()
    with pytest.raises(DomainError, match="secret key"):
        vs.add_recipient(db.session, j, vault, name="Oops", email="o@example.org", age_recipient=secret)


def test_release_links_store_only_a_hash(people, clock):
    vault = make_vault(people)
    clock.advance(days=9, seconds=1)
    vs.sweep(db.session)
    (release,) = vs.releases(db.session, vault)
    token = vs.issue_release_link(db.session, release)
    db.session.commit()
    assert release.token_hash and token not in release.token_hash and release.link_issued_at == utcnow()
    assert vs.find_release(db.session, token) is release
    newer = vs.issue_release_link(db.session, release)  # sending the notice again replaces the link
    db.session.commit()
    with pytest.raises(NotFound):
        vs.find_release(db.session, token)
    assert vs.find_release(db.session, newer) is release
    clock.advance(days=30)
    with pytest.raises(DomainError, match="expired"):
        vs.find_release(db.session, newer)
    with pytest.raises(DomainError, match="expired"):
        vs.issue_release_link(db.session, release)


def test_deleting_during_a_concealed_release_is_delayed(people, clock):
    j = people["journalist"]
    vault = make_vault(people, schedule=Schedule(duress_action="alert_and_release"))
    deposit = vs.add_note(db.session, j, vault, "la prueba")
    db.session.commit()
    vs.check_in(db.session, vault, "739105")  # the duress PIN: the release starts, concealed
    db.session.commit()
    # Without the protection both look done at once (a delay would give the release away)...
    assert vs.delete_deposit(db.session, j, vault, deposit) == "deleted"
    assert vs.delete_vault(db.session, j, vault) == "deleted"
    db.session.commit()
    assert vs.list_vaults(db.session, j) == []
    with pytest.raises(NotFound):
        vs.get_vault(db.session, j, vault.id)
    # ... but wait, so the release goes on.
    assert blob_exists(deposit.blob_id) and db.session.get(Vault, vault.id) is not None
    assert vault.delete_after is not None


def test_rename(people):
    j = people["journalist"]
    vault = make_vault(people, armed=False)
    vs.rename(db.session, j, vault, "Otro nombre")
    db.session.commit()
    assert vault.title == "Otro nombre"
    with pytest.raises(DomainError):
        vs.rename(db.session, j, vault, " ")
