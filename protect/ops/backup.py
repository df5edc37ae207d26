"""Backups of the database and the blob store, age-encrypted, with a manifest of checksums.

A backup is a directory (``flask protect backup DEST``)::

    manifest.age    JSON: format, time, engine, schema revision, master key ids, and the
                    size and SHA-256 of every other file; written last
    database.age    gzip of the database, in its engine's own consistent form: SQLite's
                    online-backup copy of the file, PostgreSQL's pg_dump (plain SQL)
    keys.age        the master keys as ``kid:base64,...`` (PROTECT_MASTER_KEYS's form);
                    left out with ``--without-keys``
    blobs/ab/<id>   every blob the database names, copied byte for byte

The ``.age`` parts are encrypted to the operator's recipients (age1...), so
``age -d -i key.txt`` opens them too. Blobs are age files already (to the
vaults' and the server's keys), so they are copied as they are: unchanged
blobs are the same files from one backup to the next, which rsync or restic
then send once. The encrypted manifest still binds each of them.

Consistency: the list of blobs is read in the same snapshot as the database
dump (PostgreSQL: pg_dump runs in the snapshot the listing transaction
exported; SQLite: the listing reads the copy). A blob named there but gone
by the time it is copied (shredded or re-wrapped meanwhile) makes one fresh
snapshot; what is still missing then is recorded and reported.

A restore goes into an empty instance only, checks every checksum before
writing anything that stays, copies the blobs, and makes the database last,
in one step (a file rename for SQLite, one transaction for PostgreSQL);
on any failure it removes the blobs and keys it wrote.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import current_app
from psycopg.conninfo import make_conninfo
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import Session

from ..audit import service as audit
from ..crypto import agefile
from ..crypto.blobs import BlobError, BlobNotFound, BlobStore, fsync_dir, validate_blob_id
from ..extensions import db
from ..vault.service import _known_blob_ids

FORMAT = "protect-backup/1"
MANIFEST, DATABASE, KEYS, BLOBS = "manifest.age", "database.age", "keys.age", "blobs"
CHUNK = 1024 * 1024
_BLOB_PATH_RE = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{32})")
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)

Echo = Callable[[str], None]


class BackupError(Exception):
    """A backup or restore that cannot go on; the message tells the operator why."""


# What a backup or restore may stop on, each with a message for the operator: its own
# refusals, the blob store (unreachable, full) and the disk (no space, no permission).
FAILURES = (BackupError, BlobError, OSError)


@dataclass
class Summary:
    engine: str
    revision: str
    blobs: int
    key_ids: list[str]
    keys_included: bool
    missing_blobs: list[str] = field(default_factory=list)
    audit_chain: audit.Verification | None = None  # of the restored database


def _store() -> BlobStore:
    return current_app.extensions["protect.blobs"]


# -- files ------------------------------------------------------------------------

class _Hashing(io.RawIOBase):
    """Passes writes on to ``fh`` and keeps their size and SHA-256."""

    def __init__(self, fh: Any) -> None:
        super().__init__()
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._fh.write(view)
        self.sha256.update(view)
        self.size += view.nbytes
        return view.nbytes

    def entry(self) -> dict:
        return {"sha256": self.sha256.hexdigest(), "size": self.size}


@contextmanager
def _new_file(path: Path) -> Iterator[BinaryIO]:
    """A new file, readable by this user only, on disk (fsync) when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _write_part(path: Path, recipients: list[str], fill: Callable[[Any], object], *,
                compress: bool) -> dict:
    """Encrypt what ``fill`` writes (gzipped first when ``compress``) into an age file at ``path``."""
    with _new_file(path) as fh:
        hashed = _Hashing(fh)
        with agefile.open_encrypted(hashed, recipients) as age:
            if compress:
                with gzip.GzipFile(fileobj=age, mode="wb", compresslevel=1, mtime=0) as zipped:
                    fill(zipped)
            else:
                fill(age)
    return hashed.entry()


@contextmanager
def _read_part(path: Path, identities: list[str], *, compressed: bool) -> Iterator[BinaryIO]:
    """The plaintext of a part; damage or the wrong identity come out as BackupError
    (also when found by a read inside the ``with`` block)."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise BackupError(f"{path} is missing") from None
    with fh:
        try:
            plain: BinaryIO = agefile.open_decrypted(fh, identities)  # type: ignore[assignment]
            if compressed:
                plain = gzip.GzipFile(fileobj=plain, mode="rb")  # type: ignore[assignment]
            yield plain
        except agefile.NoIdentityMatch:
            raise BackupError(f"the identity given does not open {path}") from None
        except (agefile.AgeError, *_GZIP_ERRORS):
            raise BackupError(f"{path} is damaged or was altered") from None


def _hash_file(path: Path) -> dict:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "size": size}


# -- the database -------------------------------------------------------------------

def _revision(conn: Connection) -> str:
    return ",".join(sorted(MigrationContext.configure(conn).get_current_heads()))


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A connection string for pg_dump/psql, and their environment: the password
    goes in PGPASSWORD, never on a command line others can read in ps."""
    params: dict[str, str | None] = {
        "host": url.host, "port": str(url.port) if url.port else None, "user": url.username,
        "dbname": url.database, **{k: v for k, v in url.query.items() if isinstance(v, str)}}
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return make_conninfo(**{k: v for k, v in params.items() if v is not None}), env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (Debian: apt-get install postgresql-client, "
                          "of the server's major version)")
    return path


def _run_tool(args: list[str], env: dict[str, str], *, stdout=None, stdin=None):
    """Start a PostgreSQL client; its stderr goes to a temporary file (read by ``_tool_error``)."""
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=errors, env=env)  # noqa: S603
    return proc, errors


def _tool_error(name: str, errors: BinaryIO) -> BackupError:
    errors.seek(0)
    lines = errors.read().decode(errors="replace").strip().splitlines()
    return BackupError(f"{name} failed: {' / '.join(lines[-3:]) or 'no message'}")


def _dump_sqlite(work: Path, recipients: list[str]) -> tuple[dict, str, set[str]]:
    copy = work / "database.sqlite"
    raw = db.engine.raw_connection()
    try:
        target = sqlite3.connect(copy)
        try:
            # The online backup API, all pages in one step: one consistent snapshot,
            # while the app keeps reading and writing (WAL).
            raw.driver_connection.backup(target)  # type: ignore[union-attr]
        finally:
            target.close()
    finally:
        raw.close()
    engine = create_engine(f"sqlite:///{copy}")
    try:
        with engine.connect() as conn:
            revision = _revision(conn)
            with Session(bind=conn) as session:
                referenced = _known_blob_ids(session)
    finally:
        engine.dispose()
    with copy.open("rb") as src:
        entry = _write_part(work / DATABASE, recipients, lambda out: shutil.copyfileobj(src, out, CHUNK),
                            compress=True)
    copy.unlink()
    return entry, revision, referenced


def _dump_postgresql(work: Path, recipients: list[str]) -> tuple[dict, str, set[str]]:
    pg_dump = _tool("pg_dump")
    conninfo, env = _libpq(db.engine.url)
    with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        # pg_dump joins this transaction's snapshot, so the blob list read here
        # and the dump see the very same database.
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        revision = _revision(conn)
        with Session(bind=conn) as session:
            referenced = _known_blob_ids(session)
        proc, errors = _run_tool([pg_dump, "--format=plain", "--no-owner", "--no-privileges",
                                  f"--snapshot={snapshot}", f"--dbname={conninfo}"],
                                 env, stdout=subprocess.PIPE)
        with errors:
            try:
                entry = _write_part(work / DATABASE, recipients,
                                    lambda out: shutil.copyfileobj(proc.stdout, out, CHUNK), compress=True)
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.stdout.close()
                proc.wait()
            if proc.returncode:
                raise _tool_error("pg_dump", errors)
    return entry, revision, referenced


def _target_sqlite_path() -> Path:
    name = db.engine.url.database
    if not name or name == ":memory:":
        raise BackupError("restore needs a database file, not an in-memory database")
    return Path(name)


def _stage_sqlite(src: Path, identities: list[str], staged: Path) -> None:
    """Decrypt the database to ``staged`` (beside its final place) and check it."""
    with _read_part(src / DATABASE, identities, compressed=True) as plain, _new_file(staged) as out:
        shutil.copyfileobj(plain, out, CHUNK)
    check = sqlite3.connect(staged)
    try:
        result = check.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        check.close()
    if result != "ok":
        raise BackupError(f"the backup's SQLite database fails its integrity check: {result}")


def _put_sqlite_in_place(staged: Path, target: Path) -> None:
    db.session.remove()
    db.engine.dispose()
    for suffix in ("-wal", "-shm"):  # the empty database's, which would spoil the new one
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(staged, target)
    fsync_dir(target.parent)


def _load_postgresql(src: Path, identities: list[str]) -> None:
    psql = _tool("psql")
    conninfo, env = _libpq(db.engine.url)
    db.session.remove()
    # One transaction: psql commits only at the end of the whole dump; if
    # anything fails before, it is killed and PostgreSQL rolls everything back.
    proc, errors = _run_tool([psql, "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
                              f"--dbname={conninfo}", "--file=-"],
                             env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    with errors:
        try:
            with _read_part(src / DATABASE, identities, compressed=True) as plain:
                shutil.copyfileobj(plain, proc.stdin, CHUNK)
        except BrokenPipeError:
            proc.wait()  # psql stopped at an error: its message says which
            raise _tool_error("psql", errors) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.stdin.close()
        if proc.wait():
            raise _tool_error("psql", errors)
    db.engine.dispose()


# -- keys ---------------------------------------------------------------------------

def _key_map(text_value: str) -> dict[str, str]:
    """``kid:base64,...`` as {kid: base64}."""
    pairs = (item.strip().partition(":") for item in text_value.split(",") if item.strip())
    return {kid: b64 for kid, _, b64 in pairs}


def _current_key_text() -> str:
    settings = current_app.extensions["protect.settings"]
    if settings.master_keys:
        return ",".join(f"{k}:{v}" for k, v in _key_map(settings.master_keys).items())
    files = sorted((settings.instance / "keys").glob("*.key"))
    return ",".join(f"{p.stem}:{p.read_text().strip()}" for p in files)


def _plan_keys(src: Path, manifest: dict, identities: list[str]) -> dict[str, str]:
    """The key files to write ({kid: base64}); refuses when this instance cannot open the data."""
    settings = current_app.extensions["protect.settings"]
    needed: list[str] = manifest["keys"]["ids"]
    included = manifest["keys"]["included"]
    backup_keys: dict[str, str] = {}
    if included:
        with _read_part(src / KEYS, identities, compressed=False) as plain:
            backup_keys = _key_map(plain.read().decode())
    if settings.master_keys:
        have = _key_map(settings.master_keys)
        wrong = [kid for kid in needed if kid not in have or (included and have[kid] != backup_keys.get(kid))]
        if wrong:
            hint = f" (`age -d -i IDENTITY {src / KEYS}` prints them in its form)" if included else ""
            raise BackupError(f"this instance takes its master keys from PROTECT_MASTER_KEYS, which lacks "
                              f"{', '.join(wrong)}: add them{hint} and restore again")
        return {}
    keys_dir = settings.instance / "keys"
    to_write = {}
    for kid in needed:
        path = keys_dir / f"{kid}.key"
        if path.exists():
            if included and path.read_text().strip() != backup_keys.get(kid):
                raise BackupError(f"{path} holds another key than the backup's {kid}")
        elif not included:
            raise BackupError(f"the backup holds no master keys (made with --without-keys) and {path} is "
                              "missing: put the keys back first")
        else:
            to_write[kid] = backup_keys[kid]
    return to_write


# -- backup ---------------------------------------------------------------------------

def _copy_blob(store: BlobStore, blob_id: str, work: Path) -> dict | None:
    try:
        src = store.open(blob_id)
    except BlobNotFound:
        return None
    with src, _new_file(work / BLOBS / blob_id[:2] / blob_id) as out:
        hashed = _Hashing(out)
        shutil.copyfileobj(src, hashed, CHUNK)
    return hashed.entry()


def create_backup(dest: Path, recipients: list[str], *, include_keys: bool = True,
                  echo: Echo = lambda line: None) -> Summary:
    """Write a backup into ``dest`` (new, or an empty directory); needs an app context."""
    if not recipients:
        raise BackupError("give at least one --recipient")
    try:
        agefile.open_encrypted(io.BytesIO(), recipients).abort()
    except agefile.KeyFormatError:
        raise BackupError("a --recipient is not an age public key (age1…)") from None
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    engine = db.engine.dialect.name
    dump = {"sqlite": _dump_sqlite, "postgresql": _dump_postgresql}.get(engine)
    if dump is None:
        raise BackupError(f"backups of {engine} databases are not supported")
    store = _store()
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        copied: dict[str, dict] = {}
        for attempt in (1, 2):
            (work / DATABASE).unlink(missing_ok=True)
            echo(f"database ({engine}): dumping")
            database, revision, referenced = dump(work, recipients)
            todo = sorted(referenced - copied.keys())
            echo(f"blobs: copying {len(todo)}")
            missing = []
            for blob_id in todo:
                entry = _copy_blob(store, blob_id, work)
                if entry is None:
                    missing.append(blob_id)
                else:
                    copied[blob_id] = entry
            if not missing:
                break
            if attempt == 1:
                echo(f"{len(missing)} blobs went away while copying (changed meanwhile): a fresh snapshot")
        for blob_id in set(copied) - referenced:  # named by the first snapshot only
            (work / BLOBS / blob_id[:2] / blob_id).unlink()
            del copied[blob_id]
        files = {DATABASE: database}
        files.update({f"{BLOBS}/{b[:2]}/{b}": entry for b, entry in sorted(copied.items())})
        ring = current_app.extensions["protect.keyring"]
        if include_keys:
            key_text = _current_key_text().encode()
            files[KEYS] = _write_part(work / KEYS, recipients, lambda out: out.write(key_text), compress=False)
        manifest: dict[str, Any] = {
            "format": FORMAT, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "engine": engine, "revision": revision,
            "keys": {"ids": [k.kid for k in ring.keys], "included": include_keys},
            "missing_blobs": missing, "files": files}
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        _write_part(work / MANIFEST, recipients, lambda out: out.write(body), compress=False)
        for directory in [*(p for p in (work / BLOBS).glob("*") if p.is_dir()), work / BLOBS, work]:
            if directory.exists():
                fsync_dir(directory)
        if dest.exists():
            dest.rmdir()
        os.rename(work, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Summary(engine, revision, len(copied), manifest["keys"]["ids"], include_keys, missing)


# -- restore ---------------------------------------------------------------------------

def read_manifest(src: Path, identities: list[str]) -> dict[str, Any]:
    with _read_part(src / MANIFEST, identities, compressed=False) as plain:
        try:
            manifest = json.loads(plain.read())
        except ValueError:
            raise BackupError(f"{src / MANIFEST} is not a protect backup manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src} is not a backup this version of protect reads ({FORMAT})")
    for name in manifest["files"]:
        blob = _BLOB_PATH_RE.fullmatch(name)
        if name not in (DATABASE, KEYS) and not (blob and blob.group(2).startswith(blob.group(1))):
            raise BackupError(f"the manifest names an unexpected file {name!r}")
    if DATABASE not in manifest["files"] or (manifest["keys"]["included"] and KEYS not in manifest["files"]):
        raise BackupError("the manifest lacks the database or the keys")
    return manifest


def _check_target(manifest: dict) -> None:
    engine = db.engine.dialect.name
    if manifest["engine"] != engine:
        raise BackupError(f"the backup is of a {manifest['engine']} database; this instance uses {engine}")
    migrate = current_app.extensions["migrate"]
    scripts = ScriptDirectory.from_config(migrate.migrate.get_config(migrate.directory))
    for revision in filter(None, manifest["revision"].split(",")):
        try:
            known = scripts.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            raise BackupError(f"the backup's schema revision {revision} is unknown to this version of "
                              "protect: restore with the version that made the backup")
    tables = inspect(db.engine).get_table_names()
    db.session.remove()
    if tables:
        raise BackupError("the database already has tables: restore needs a new, empty database")
    if next(iter(_store().ids()), None) is not None:
        raise BackupError("the blob store already holds files: restore needs an empty one")


def _verify(src: Path, manifest: dict, echo: Echo) -> None:
    echo(f"verifying {len(manifest['files'])} files")
    bad = []
    for name, expected in manifest["files"].items():
        try:
            found = _hash_file(src / name)
        except FileNotFoundError:
            found = None
        if found != {"sha256": expected["sha256"], "size": expected["size"]}:
            bad.append(name)
    if bad:
        raise BackupError(f"{len(bad)} file(s) of the backup are missing or do not match its manifest "
                          f"(damaged or altered), first {', '.join(bad[:3])}: nothing was restored")


def _restore_blob(store: BlobStore, path: Path, blob_id: str, expected: str) -> None:
    with path.open("rb") as src, store.writer(validate_blob_id(blob_id)) as writer:
        hashed = _Hashing(writer)
        shutil.copyfileobj(src, hashed, CHUNK)
        if hashed.sha256.hexdigest() != expected:  # changed since _verify: the writer is aborted
            raise BackupError(f"{path} changed while being restored: nothing was restored")


def _write_keys(keys: dict[str, str], written: list[Path]) -> None:
    keys_dir = current_app.extensions["protect.settings"].instance / "keys"
    for kid, b64 in sorted(keys.items()):
        path = keys_dir / f"{kid}.key"
        with _new_file(path) as fh:
            written.append(path)
            fh.write(f"{b64}\n".encode())
    if keys:
        fsync_dir(keys_dir)


def restore_backup(src: Path, identities: list[str], *, echo: Echo = lambda line: None) -> Summary:
    """Restore the backup in ``src`` into this (empty) instance; needs an app context."""
    if not identities:
        raise BackupError("the identity file holds no age identity (AGE-SECRET-KEY-1…)")
    manifest: dict[str, Any] = read_manifest(src, identities)
    _check_target(manifest)
    _verify(src, manifest, echo)
    keys = _plan_keys(src, manifest, identities)
    store = _store()
    blobs = {m.group(2): (src / name, entry["sha256"]) for name, entry in manifest["files"].items()
             if (m := _BLOB_PATH_RE.fullmatch(name))}
    written_blobs: list[str] = []
    written_keys: list[Path] = []
    sqlite_file = _target_sqlite_path() if manifest["engine"] == "sqlite" else None
    staged = sqlite_file.parent / f".{sqlite_file.name}.restore-{secrets.token_hex(4)}" if sqlite_file else None
    try:
        if staged:
            echo("database: decrypting and checking")
            _stage_sqlite(src, identities, staged)
        echo(f"blobs: restoring {len(blobs)}")
        for blob_id, (path, sha) in sorted(blobs.items()):
            _restore_blob(store, path, blob_id, sha)
            written_blobs.append(blob_id)
        _write_keys(keys, written_keys)
        echo("database: loading")
        if staged and sqlite_file:
            _put_sqlite_in_place(staged, sqlite_file)
        else:
            _load_postgresql(src, identities)
    except BaseException:
        if staged:
            staged.unlink(missing_ok=True)
        for blob_id in written_blobs:
            try:
                store.delete(blob_id)
            except BlobError as exc:
                echo(f"could not take back blob {blob_id} ({exc}): delete it before restoring again")
        for path in written_keys:
            path.unlink(missing_ok=True)
        raise
    verification = audit.verify(db.session)
    db.session.remove()
    return Summary(manifest["engine"], manifest["revision"], len(blobs), manifest["keys"]["ids"],
                   manifest["keys"]["included"], manifest["missing_blobs"], verification)
