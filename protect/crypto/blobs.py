"""Blob storage for attachments, on the local disk or in S3, behind one interface.

The bytes stored here are age files encrypted elsewhere; this layer treats them
as opaque and streams them both ways, so a blob never has to fit in memory.

Guarantees, for both stores:

* a blob becomes visible under its id only once it was written completely
  (``commit()`` or a ``with`` block left without an exception); a failed,
  aborted or oversized write leaves nothing behind, not even a temporary;
* ids are 32 lowercase hex characters, checked wherever one is accepted, so an
  id can never name a path or key outside the store;
* failures come out as :class:`BlobError` subclasses (:class:`StorageFull`,
  :class:`StorageUnavailable`, ...) that the web layer can map to a response.

Temporaries left by a process killed mid-upload are swept by
``clear_temporaries``; blobs the database no longer knows are found by
``orphans``.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import re
import secrets
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

log = logging.getLogger(__name__)

BLOB_ID_RE = re.compile(r"[0-9a-f]{32}")
COPY_CHUNK = 64 * 1024
# S3 parts must be at least 5 MiB (except the last); 8 MiB bounds the memory a
# writer holds while keeping the part count low for large attachments.
PART_SIZE = 8 * 1024 * 1024
# A local writer hands each such stretch of a blob to writeback as it goes.
WRITEBACK_SIZE = 8 * 1024 * 1024

_FAN_RE = re.compile(r"[0-9a-f]{2}")
_TMP_RE = re.compile(r"([0-9a-f]{32})\.[0-9a-f]{16}\.tmp")
# Not on macOS or Windows, where blobs are then only written back at commit.
_fadvise = getattr(os, "posix_fadvise", None)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_MISSING_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}
_S3_UNAVAILABLE = (
    botocore.exceptions.ConnectionError,  # refused, DNS, connect timeout, TLS
    botocore.exceptions.HTTPClientError,  # read timeout, connection dropped
    botocore.exceptions.IncompleteReadError,
)


class BlobError(Exception):
    """Base of the blob store's errors."""


class InvalidBlobId(BlobError, ValueError):
    """An id that is not 32 lowercase hex characters."""


class BlobNotFound(BlobError, LookupError):
    """No committed blob has this id."""


class BlobTooLarge(BlobError):
    """More bytes were written than the writer's ``max_bytes`` allows."""


class StorageFull(BlobError):
    """The disk (or quota) is full."""


class StorageUnavailable(BlobError):
    """The storage backend cannot be reached."""


def validate_blob_id(blob_id: object) -> str:
    """Return ``blob_id`` if it is a well-formed id, else raise InvalidBlobId."""
    if not isinstance(blob_id, str) or not BLOB_ID_RE.fullmatch(blob_id):
        raise InvalidBlobId(f"invalid blob id: {blob_id!r}")
    return blob_id


class BlobWriter(io.RawIOBase):
    """A write-only stream that publishes its blob only on ``commit()``.

    Used as a context manager it commits on a clean exit and aborts on an
    exception. ``close()`` without ``commit()`` aborts, so a writer dropped on
    the floor never publishes a partial blob.
    """

    def __init__(self, blob_id: str, max_bytes: int | None) -> None:
        super().__init__()
        self.blob_id = blob_id
        self.max_bytes = max_bytes
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed blob writer")
        view = memoryview(data).cast("B")
        n = view.nbytes
        if self.max_bytes is not None and self.size + n > self.max_bytes:
            self.abort()
            raise BlobTooLarge(f"blob exceeds {self.max_bytes} bytes")
        try:
            self._write(view)
        except BaseException:
            self.abort()
            raise
        self.size += n
        return n

    def commit(self) -> None:
        """Make the blob visible under ``blob_id``, atomically."""
        if self.closed:
            raise ValueError("commit of a closed blob writer")
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise
        super().close()

    def abort(self) -> None:
        """Discard everything written; idempotent and never raises.

        A leftover temporary that cannot be removed now (backend down) is
        logged and later swept by ``clear_temporaries``.
        """
        if self.closed:
            return
        try:
            self._abort()
        except Exception:
            log.warning("could not discard temporary for blob %s", self.blob_id, exc_info=True)
        finally:
            super().close()

    def close(self) -> None:
        self.abort()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    @abstractmethod
    def _write(self, view: memoryview) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


class BlobStore(ABC):
    """Opaque, write-once-visible blobs addressed by random ids."""

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    @abstractmethod
    def writer(self, blob_id: str | None = None, *, max_bytes: int | None = None) -> BlobWriter:
        """A writer for ``blob_id`` (a new id if None); an existing blob is replaced on commit."""

    def put(self, src: BinaryIO, blob_id: str | None = None, *,
            max_bytes: int | None = None) -> str:
        """Copy ``src`` into a new blob and return its id."""
        with self.writer(blob_id, max_bytes=max_bytes) as w:
            while chunk := src.read(COPY_CHUNK):
                w.write(chunk)
        return w.blob_id

    @abstractmethod
    def open(self, blob_id: str) -> BinaryIO:
        """A readable stream of the blob; raises BlobNotFound."""

    @abstractmethod
    def delete(self, blob_id: str) -> None:
        """Remove the blob; deleting a missing blob is not an error."""

    @abstractmethod
    def exists(self, blob_id: str) -> bool: ...

    @abstractmethod
    def size(self, blob_id: str) -> int:
        """Size in bytes; raises BlobNotFound."""

    @abstractmethod
    def ids(self) -> Iterator[str]:
        """Ids of all committed blobs."""

    def orphans(self, known_ids: set[str]) -> Iterator[str]:
        """Committed blobs whose id is not in ``known_ids``."""
        return (blob_id for blob_id in self.ids() if blob_id not in known_ids)

    @abstractmethod
    def clear_temporaries(self, older_than: timedelta) -> int:
        """Remove unfinished uploads started before ``now - older_than``; return the count."""


# --- local disk ---------------------------------------------------------------

@contextmanager
def _disk_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise StorageFull(f"storage full: {exc}") from exc
        raise


def fsync_dir(path: Path) -> None:
    """Make a directory's new entries (a renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root/<id[:2]>/<id>``, temporaries in ``root/tmp``.

    Temporaries live under the root so that the final ``os.replace`` stays on
    one filesystem and is atomic.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root_path = Path(root)
        root_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Resolved once, so every later containment check compares real paths.
        self.root = root_path.resolve()
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(mode=0o700, exist_ok=True)
        self._check_inside(self.tmp)

    def _check_inside(self, path: Path) -> None:
        if not path.resolve().is_relative_to(self.root):
            raise BlobError(f"{path} leads outside the blob store root")

    def _path(self, blob_id: str, *, create_dir: bool = False) -> Path:
        validate_blob_id(blob_id)
        fan = self.root / blob_id[:2]
        if create_dir:
            try:
                os.mkdir(fan, 0o700)
                fsync_dir(self.root)
            except FileExistsError:
                pass
        # A planted symlink could point the fan-out directory elsewhere; the
        # leaf itself is never followed (O_NOFOLLOW / lstat).
        self._check_inside(fan)
        return fan / blob_id

    def writer(self, blob_id: str | None = None, *, max_bytes: int | None = None) -> BlobWriter:
        blob_id = self.new_id() if blob_id is None else validate_blob_id(blob_id)
        return _LocalWriter(self, blob_id, max_bytes)

    def open(self, blob_id: str) -> BinaryIO:
        path = self._path(blob_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                raise BlobNotFound(blob_id) from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BlobNotFound(blob_id)
        return os.fdopen(fd, "rb", buffering=COPY_CHUNK)

    def delete(self, blob_id: str) -> None:
        path = self._path(blob_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        # Deleting sensitive material should survive a crash too.
        fsync_dir(path.parent)

    def _stat(self, blob_id: str) -> os.stat_result | None:
        try:
            st = os.lstat(self._path(blob_id))
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return None
            raise
        return st if stat.S_ISREG(st.st_mode) else None

    def exists(self, blob_id: str) -> bool:
        return self._stat(blob_id) is not None

    def size(self, blob_id: str) -> int:
        st = self._stat(blob_id)
        if st is None:
            raise BlobNotFound(blob_id)
        return st.st_size

    def ids(self) -> Iterator[str]:
        with os.scandir(self.root) as fans:
            fan_names = sorted(
                e.name for e in fans
                if _FAN_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
            )
        for fan in fan_names:
            try:
                with os.scandir(self.root / fan) as entries:
                    names = sorted(
                        e.name for e in entries
                        if e.name.startswith(fan) and BLOB_ID_RE.fullmatch(e.name)
                        and e.is_file(follow_symlinks=False)
                    )
            except FileNotFoundError:
                continue
            yield from names

    def clear_temporaries(self, older_than: timedelta) -> int:
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                if not _TMP_RE.fullmatch(entry.name):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue  # its writer finished or aborted meanwhile
        return removed


class _LocalWriter(BlobWriter):
    def __init__(self, store: LocalBlobStore, blob_id: str, max_bytes: int | None) -> None:
        super().__init__(blob_id, max_bytes)
        self._store = store
        self._tmp = store.tmp / f"{blob_id}.{secrets.token_hex(8)}.tmp"
        self._fd = -1
        self._advised = 0  # the end of the bytes handed to writeback
        try:
            with _disk_errors():
                self._fd = os.open(
                    self._tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
        except BaseException:
            self.abort()
            raise

    def _write(self, view: memoryview) -> None:
        end = self.size + view.nbytes
        with _disk_errors():
            while view:
                view = view[os.write(self._fd, view):]
        if _fadvise is not None and end - self._advised >= WRITEBACK_SIZE:
            # Without this a large blob stayed dirty until the fsync at commit,
            # which then wrote it all while the request waited (0.3 s per GiB
            # here). DONTNEED on the new stretch starts its writeback now (its
            # pages, still dirty, stay cached). Only advice: durability, and
            # the report of any writeback error, still come from the fsync at
            # commit.
            try:
                _fadvise(self._fd, self._advised, end - self._advised, os.POSIX_FADV_DONTNEED)
            except OSError:
                log.debug("posix_fadvise failed on a blob temporary", exc_info=True)
            self._advised = end

    def _commit(self) -> None:
        with _disk_errors():
            os.fsync(self._fd)
            fd, self._fd = self._fd, -1
            os.close(fd)
            final = self._store._path(self.blob_id, create_dir=True)
            os.replace(self._tmp, final)
            # Should this fsync fail, the complete blob stays visible but the
            # caller sees an error and never records the id: an orphan, not a
            # partial blob.
            fsync_dir(final.parent)

    def _abort(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


# --- S3 -----------------------------------------------------------------------

@contextmanager
def _s3_errors(blob_id: str | None = None) -> Iterator[None]:
    """Translate botocore errors; a 404 means BlobNotFound when ``blob_id`` is given."""
    try:
        yield
    except _S3_UNAVAILABLE as exc:
        raise StorageUnavailable(f"S3 unreachable: {exc}") from exc
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if blob_id is not None and code in ("NoSuchKey", "404", "NotFound"):
            raise BlobNotFound(blob_id) from exc
        if status >= 500:
            raise StorageUnavailable(f"S3 error {code}") from exc
        raise BlobError(f"S3 request failed: {code}") from exc


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix>/<id>`` in one bucket.

    Small blobs are sent with one ``put_object`` at commit; larger ones as a
    multipart upload whose parts are sent as they fill, so a writer holds at
    most about one part in memory. An S3 object only appears once the upload
    completes, which gives the all-or-nothing visibility.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str = "us-east-1", connect_timeout: float = 2,
                 read_timeout: float = 30, max_attempts: int = 2) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Few attempts: an unreachable endpoint should fail a request in
            # seconds rather than hold a web worker for minutes.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        # A session of our own: boto3's default session is not thread-safe.
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def key(self, blob_id: str) -> str:
        validate_blob_id(blob_id)
        return f"{self.prefix}/{blob_id}" if self.prefix else blob_id

    def _key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _id_of(self, key: str) -> str | None:
        rest = key[len(self._key_prefix()):]
        return rest if BLOB_ID_RE.fullmatch(rest) else None

    def writer(self, blob_id: str | None = None, *, max_bytes: int | None = None) -> BlobWriter:
        blob_id = self.new_id() if blob_id is None else validate_blob_id(blob_id)
        return _S3Writer(self, blob_id, max_bytes)

    def open(self, blob_id: str) -> BinaryIO:
        key = self.key(blob_id)
        with _s3_errors(blob_id):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return io.BufferedReader(_S3Reader(body), buffer_size=COPY_CHUNK)

    def delete(self, blob_id: str) -> None:
        key = self.key(blob_id)
        with _s3_errors():
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def size(self, blob_id: str) -> int:
        key = self.key(blob_id)
        with _s3_errors(blob_id):
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def exists(self, blob_id: str) -> bool:
        try:
            self.size(blob_id)
        except BlobNotFound:
            return False
        return True

    def ids(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key_prefix())
        with _s3_errors():
            for page in pages:
                for obj in page.get("Contents", []):
                    if (blob_id := self._id_of(obj["Key"])) is not None:
                        yield blob_id

    def clear_temporaries(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._key_prefix())
        removed = 0
        with _s3_errors():
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff and self._id_of(upload["Key"]):
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        removed += 1
        return removed


class _S3Writer(BlobWriter):
    def __init__(self, store: S3BlobStore, blob_id: str, max_bytes: int | None) -> None:
        super().__init__(blob_id, max_bytes)
        self._store = store
        self._key = store.key(blob_id)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _write(self, view: memoryview) -> None:
        while view:
            # Send a full part only once more data arrives, so a blob of
            # exactly one part still goes out as a single put_object.
            if len(self._buf) == PART_SIZE:
                self._send_part()
            take = PART_SIZE - len(self._buf)
            self._buf += view[:take]
            view = view[take:]

    def _send_part(self) -> None:
        client, bucket = self._store.client, self._store.bucket
        with _s3_errors():
            if self._upload_id is None:
                self._upload_id = client.create_multipart_upload(
                    Bucket=bucket, Key=self._key)["UploadId"]
            number = len(self._parts) + 1
            resp = client.upload_part(Bucket=bucket, Key=self._key, UploadId=self._upload_id,
                                      PartNumber=number, Body=bytes(self._buf))
        # Part checksums, when the SDK added them, must be echoed at completion.
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"],
                            **{k: v for k, v in resp.items() if k.startswith("Checksum")}})
        self._buf.clear()

    def _commit(self) -> None:
        client, bucket = self._store.client, self._store.bucket
        if self._upload_id is None:
            with _s3_errors():
                client.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._buf))
            return
        if self._buf:
            self._send_part()
        with _s3_errors():
            client.complete_multipart_upload(
                Bucket=bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts})

    def _abort(self) -> None:
        self._buf.clear()
        if self._upload_id is None:
            return
        try:
            self._store.client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id)
        except botocore.exceptions.ClientError as exc:
            # Already aborted (e.g. by clear_temporaries) is what we wanted.
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise


class _S3Reader(io.RawIOBase):
    """Adapts a botocore StreamingBody to ``io`` so reads stream and errors translate."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with _s3_errors():
            data = self._body.read(view.nbytes)
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


# --- factory ------------------------------------------------------------------

def blob_store_from_url(url: str, *, endpoint_url: str | None = None, **options: Any) -> BlobStore:
    """Build a store from ``file:///abs/path``, a plain path, or ``s3://bucket/prefix``.

    ``endpoint_url`` and ``options`` (``region``, ``connect_timeout``,
    ``read_timeout``, ``max_attempts``) apply to S3 only.
    """
    if "://" not in url:
        scheme, path = "file", url
    else:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"file URL must be local: {url!r}")
            path = unquote(parts.path)
        elif scheme == "s3":
            if not parts.netloc:
                raise ValueError(f"S3 URL needs a bucket: {url!r}")
            return S3BlobStore(parts.netloc, unquote(parts.path),
                               endpoint_url=endpoint_url, **options)
        else:
            raise ValueError(f"unsupported blob store URL: {url!r}")
    if endpoint_url is not None or options:
        raise ValueError("endpoint_url and options apply only to s3:// blob stores")
    if not path:
        raise ValueError("empty blob store path")
    return LocalBlobStore(path)
