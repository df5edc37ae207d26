"""Back up, destroy, restore: every row (cases, clocks, audit chain, vault deposits) comes back,
deposits and evidence decrypt, the audit chain verifies; on SQLite and PostgreSQL, with a
local and an S3 blob store. A damaged or altered backup is refused with nothing written."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import psycopg
import pytest
from flask import current_app
from sqlalchemy import inspect, select, update

from protect.accounts import service as accounts
from protect.cases import demo
from protect.cases import service as cases
from protect.cases.models import Case, Evidence
from protect.crypto import agefile, serverkeys
from protect.crypto.uploads import EncryptedUpload
from protect.deadlines import service as deadlines
from protect.extensions import db
from protect.ops import backup as backups
from protect.vault import service as vaults
from protect.vault.models import Deposit, Vault
from tests.conftest import PG_ADMIN_URL, fresh_database, make_app
from tests.notify.test_exactly_once import overdue_clocks
from tests.ops.conftest import backend_of, migrated_app
from tests.vault.conftest import make_vault, open_case, upload

PDF = b"%PDF-1.7 contratos de seguridad " * 5000  # several age chunks
NOTE = "Si me pasa algo: la fuente está en el archivo 3."
PHOTO = b"\xff\xd8\xff foto de la amenaza " * 300


@pytest.fixture(params=["local", "s3"])
def blobs(request):
    """Blob-store settings for an instance: its own directory, or one shared S3 bucket."""
    if request.param == "local":
        return {}
    return {"blob_url": f"s3://{request.getfixturevalue('s3_bucket')}/blobs",
            "s3_endpoint_url": request.getfixturevalue("moto_server")}


@pytest.fixture
def age_key(tmp_path) -> tuple[Path, str]:
    """(identity file, recipient) of the operator's backup key."""
    identity, recipient = agefile.generate_identity()
    path = tmp_path / "backup-key.txt"
    path.write_text(f"# the operator's backup key\n{identity}\n")
    return path, recipient


def seed(app) -> dict:
    """Synthetic cases with clocks and notifications, a case with evidence, a vault with a file and a note."""
    with app.app_context():
        demo.generate_cases(db.session, 12, seed=8)
        deadlines.rebuild_clocks(db.session)
        people = {role: accounts.create_user(db.session, None, email=f"{role}@example.org", role=role,
                                             password=f"a long password for {role}")[0]
                  for role in ("journalist", "caseworker")}
        db.session.commit()
        overdue_clocks([people["caseworker"].id], 5)
        deadlines.sweep(db.session)
        case = open_case(people)
        evidence_key = serverkeys.recipient(db.session, "evidence")
        photo = EncryptedUpload(current_app.extensions["protect.blobs"], [evidence_key], 10**6, "amenaza.jpg",
                                "image/jpeg")
        photo.write(PHOTO)
        photo.seek(0)
        cases.add_evidence(db.session, people["journalist"], case, photo)
        vault = make_vault(people)
        vaults.add_file_deposit(db.session, people["journalist"], vault, upload(vault, PDF, "contratos.pdf"))
        vaults.add_note(db.session, people["journalist"], vault, NOTE)
        db.session.commit()
        result = {"vault": vault.id, "case": case.id, "recipient_identity": vault.test_key[0],
                  "contents": contents()}
        db.session.remove()
        return result


def contents() -> dict[str, list[tuple]]:
    """Every row of every table, in primary-key order."""
    return {table.name: [tuple(row) for row in db.session.execute(
                select(table).order_by(*table.primary_key.columns)).all()]
            for table in db.metadata.sorted_tables}


def destroy(app, url: str, s3_client=None, bucket: str | None = None) -> None:
    """Lose the database, the instance (keys, local blobs) and the bucket's objects."""
    with app.app_context():
        db.engine.dispose()
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    else:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    shutil.rmtree(app.instance_path)
    if bucket:
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3_client.delete_object(Bucket=bucket, Key=obj["Key"])


def run(app, *args):
    return app.test_cli_runner().invoke(args=["protect", *args])


def decrypt(blob_id: str, identity: str) -> bytes:
    out = io.BytesIO()
    with current_app.extensions["protect.blobs"].open(blob_id) as fh:
        agefile.decrypt(fh, out, [identity])
    return out.getvalue()


def test_backup_destroy_restore_brings_everything_back(database_url, tmp_path, blobs, age_key, request):
    backend = backend_of(database_url)
    identity_file, recipient = age_key
    with fresh_database(backend, tmp_path) as source_url, fresh_database(backend, tmp_path) as target_url:
        source = migrated_app(tmp_path / "source", source_url, **blobs)
        seeded = seed(source)
        made = run(source, "backup", str(tmp_path / "backup"), "--recipient", recipient)
        assert made.exit_code == 0, made.output
        assert "master keys" in made.output and "included" in made.output
        assert re.search(r", 3 blobs,", made.output), made.output
        s3 = request.getfixturevalue("s3_client") if blobs else None
        destroy(source, source_url, s3, blobs and blobs["blob_url"].split("/")[2])

        target = make_app(tmp_path / "target", target_url, **blobs)
        restored = run(target, "restore", str(tmp_path / "backup"), "--identity", str(identity_file))
        assert restored.exit_code == 0, restored.output
        assert re.search(r"audit chain OK \(\d+ entries\)", restored.output)

        fresh = make_app(tmp_path / "target", target_url, **blobs)  # loads the restored master keys
        with fresh.app_context():
            back = contents()
            assert back.keys() == seeded["contents"].keys()
            changed = [name for name in back if back[name] != seeded["contents"][name]]
            assert not changed, f"tables that differ after the restore: {changed}"
            assert len(back["cases"]) == 12 + 5 + 1 and back["clocks"] and back["audit_log"] and back["notifications"]
            vault = db.session.get(Vault, seeded["vault"])
            identity = vaults.release_identity(vault)  # unwrapped with the restored master key
            deposits = db.session.execute(select(Deposit).where(Deposit.vault_id == vault.id)
                                          .order_by(Deposit.created_at)).scalars().all()
            assert [d.kind for d in deposits] == ["file", "note"]
            for deposit, plain in zip(deposits, (PDF, NOTE.encode()), strict=True):
                assert decrypt(deposit.blob_id, identity) == plain
                assert decrypt(deposit.blob_id, seeded["recipient_identity"]) == plain
            evidence = db.session.execute(select(Evidence)).scalar_one()
            assert decrypt(evidence.blob_id, serverkeys.identity(db.session, "evidence")) == PHOTO
            assert evidence.filename == "amenaza.jpg"  # a sealed column opens
            assert db.session.get(Case, seeded["case"]).name == "Ana"
        verified = run(fresh, "audit-verify")
        assert verified.exit_code == 0 and verified.output.startswith("OK "), verified.output


def empty(app) -> bool:
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
        db.session.remove()
        return not tables and next(iter(current_app.extensions["protect.blobs"].ids()), None) is None


def keys_of(app) -> list[str]:
    return sorted(p.name for p in (Path(app.instance_path) / "keys").glob("*"))


def test_damaged_or_altered_backups_are_refused_with_nothing_written(database_url, tmp_path, age_key,
                                                                     monkeypatch):
    backend = backend_of(database_url)
    identity_file, recipient = age_key
    with fresh_database(backend, tmp_path) as source_url, fresh_database(backend, tmp_path) as target_url:
        source = migrated_app(tmp_path / "source", source_url)
        seed(source)
        good = tmp_path / "backup"
        assert run(source, "backup", str(good), "-r", recipient).exit_code == 0
        target = make_app(tmp_path / "target", target_url)
        before = keys_of(target)

        def refused(src: Path, message: str, identity: Path = identity_file) -> None:
            result = run(target, "restore", str(src), "--identity", str(identity))
            assert result.exit_code == 1 and message in result.output, result.output
            assert "Traceback" not in result.output
            assert empty(target) and keys_of(target) == before

        def altered(name: str, change) -> Path:
            copy = tmp_path / f"altered-{len(list(tmp_path.glob('altered-*')))}"
            shutil.copytree(good, copy)
            change(copy / name) if name else change(copy)
            return copy

        def flip(path: Path) -> None:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))

        blob = next(good.glob("blobs/*/*")).relative_to(good)
        refused(altered(str(blob), flip), "do not match its manifest (damaged or altered)")
        refused(altered(str(blob), Path.unlink), "are missing or do not match its manifest")
        refused(altered("database.age", flip), "do not match its manifest")
        refused(altered("manifest.age", flip), "manifest.age is damaged or was altered")
        refused(altered("manifest.age", Path.unlink), "manifest.age is missing")
        other = tmp_path / "other-key.txt"
        other.write_text(agefile.generate_identity()[0])
        refused(good, "the identity given does not open", identity=other)

        # A failure at the very end (the database load) takes back the blobs and keys written.
        def fail(*args):
            raise backups.BackupError("the database refused the load")
        monkeypatch.setattr(backups, "_put_sqlite_in_place" if backend == "sqlite" else "_load_postgresql", fail)
        refused(good, "the database refused the load")
        monkeypatch.undo()

        assert run(target, "restore", str(good), "-i", str(identity_file)).exit_code == 0
        again = run(target, "restore", str(good), "-i", str(identity_file))
        assert again.exit_code == 1 and "the database already has tables" in again.output


def test_a_blob_replaced_during_the_backup_takes_a_fresh_snapshot(database_url, tmp_path, age_key,
                                                                  monkeypatch):
    backend = backend_of(database_url)
    identity_file, recipient = age_key
    with fresh_database(backend, tmp_path) as source_url:
        source = migrated_app(tmp_path / "source", source_url)
        seed(source)
        dump = getattr(backups, f"_dump_{backend}")
        replaced = {}

        def dump_then_rewrap(work, recipients):
            # What re-wrapping for a new recipient does between the snapshot and the blob copy:
            # a new blob, the row pointed at it, the old blob deleted after the commit.
            result = dump(work, recipients)
            if not replaced:
                store = current_app.extensions["protect.blobs"]
                deposit = db.session.execute(select(Deposit).where(Deposit.kind == "note")).scalar_one()
                with store.open(deposit.blob_id) as fh:
                    replaced["new"] = store.put(fh)
                replaced["old"] = deposit.blob_id
                db.session.execute(update(Deposit).where(Deposit.id == deposit.id)
                                   .values(blob_id=replaced["new"]))
                db.session.commit()
                store.delete(replaced["old"])
            return result

        monkeypatch.setattr(backups, f"_dump_{backend}", dump_then_rewrap)
        made = run(source, "backup", str(tmp_path / "backup"), "-r", recipient)
        assert made.exit_code == 0, made.output
        assert "1 blobs went away while copying (changed meanwhile): a fresh snapshot" in made.output
        with source.app_context():
            manifest = backups.read_manifest(tmp_path / "backup", agefile.parse_identities(
                identity_file.read_text()))
        names = set(manifest["files"])
        assert f"blobs/{replaced['new'][:2]}/{replaced['new']}" in names
        assert f"blobs/{replaced['old'][:2]}/{replaced['old']}" not in names
        assert manifest["missing_blobs"] == []

        # A blob lost for good is reported (exit 1) and listed; the rest is backed up.
        monkeypatch.undo()
        with source.app_context():
            lost = db.session.execute(select(Evidence.blob_id)).scalar_one()
            current_app.extensions["protect.blobs"].delete(lost)
        partial = run(source, "backup", str(tmp_path / "partial"), "-r", recipient)
        assert partial.exit_code == 1 and "1 blobs the database names are missing" in partial.output
