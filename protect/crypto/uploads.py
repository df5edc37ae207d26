"""Uploads that never write plaintext.

Werkzeug's form parser asks the request for a stream for every file part.
protect answers with an ``EncryptedUpload``: the bytes of the part go, 64 KiB
at a time as they arrive, through age encryption straight into a blob
writer. Nothing reaches a temporary file or stays in memory.

A view accepts files only when it says so with ``@accepts_uploads``, naming
who the files are encrypted to; a file sent anywhere else is refused before
a byte of it is stored. Blobs not committed by the view before the request
ends (a failed form, an error, a client gone mid-upload) are aborted.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from flask import Flask, Request, current_app, g, request
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, ServiceUnavailable
from werkzeug.formparser import FormDataParser

from . import agefile
from .blobs import BlobStore, BlobTooLarge, StorageFull, StorageUnavailable
from .multipart import StreamingMultiPartParser


@dataclass(frozen=True)
class UploadPolicy:
    recipients: Callable[[], list[str]]
    max_bytes: Callable[[], int]


def accepts_uploads(recipients: Callable[[], list[str]], *,
                    max_bytes: Callable[[], int] | None = None):
    """Mark a view as taking files, encrypted to ``recipients()`` (age strings),
    each at most ``max_bytes()`` (default: the app's upload limit)."""
    def mark(view):
        view.upload_policy = UploadPolicy(recipients, max_bytes or _default_max)
        return view
    return mark


def _default_max() -> int:
    return current_app.extensions["protect.settings"].max_upload_mb * 1024 * 1024


def blob_store() -> BlobStore:
    return current_app.extensions["protect.blobs"]


class UploadTooLarge(RequestEntityTooLarge):
    description = _l("The file is larger than allowed.")


class StorageProblem(ServiceUnavailable):
    pass


class EncryptedUpload(io.RawIOBase):
    """One uploaded file, encrypted while it arrives into an uncommitted blob."""

    def __init__(self, store: BlobStore, recipients: list[str], max_bytes: int,
                 filename: str | None, content_type: str | None):
        super().__init__()
        self.filename = filename
        self.content_type = content_type
        self.max_bytes = max_bytes
        self.size = 0
        self._blob = store.writer()
        self.blob_id = self._blob.blob_id
        self._age = agefile.open_encrypted(self._blob, recipients)
        self.finished = False
        self.committed = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(data)
        self.size += n
        if self.size > self.max_bytes:
            self.abort()
            raise UploadTooLarge()
        try:
            self._age.write(data)
        except (BlobTooLarge, StorageFull, StorageUnavailable) as exc:
            self.abort()
            raise _storage_error(exc) from None
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        # The form parser rewinds a part once it is complete: that is where
        # the age stream gets its final chunk.
        if offset == 0 and whence == 0 and not self.finished:
            try:
                self._age.close()
            except (StorageFull, StorageUnavailable) as exc:
                self.abort()
                raise _storage_error(exc) from None
            self.finished = True
        return 0

    def commit(self) -> str:
        """Publish the blob; call before committing the row that names it."""
        if not self.finished:
            raise ValueError("upload not complete")
        try:
            self._blob.commit()
        except (StorageFull, StorageUnavailable) as exc:
            raise _storage_error(exc) from None
        self.committed = True
        return self.blob_id

    def abort(self) -> None:
        self._blob.abort()

    def close(self) -> None:
        if not self.committed:
            self.abort()
        super().close()


def _storage_error(exc: Exception):
    if isinstance(exc, StorageFull):
        return StorageProblem(description=str(_l("There is no room to store the file right now. Nothing was saved; the team has been told.")))
    return StorageProblem(description=str(_l("File storage cannot be reached right now. Nothing was saved; please try again in a few minutes.")))


class _UploadFormParser(FormDataParser):
    """Multipart bodies go through StreamingMultiPartParser, read 1 MiB at a
    time: for large uploads every read is a trip through the server's body
    reader (and a GIL hand-over with the age writer thread)."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        parser = StreamingMultiPartParser(stream_factory=self.stream_factory,
                                          max_form_memory_size=self.max_form_memory_size,
                                          max_form_parts=self.max_form_parts, cls=self.cls,
                                          buffer_size=UPLOAD_READ)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        if None in form or None in files:
            # A part with no usable name (Flask-WTF's token lookup fails on it): a
            # malformed body, read as an empty form like the parser's other refusals.
            raise ValueError("multipart part without a name")
        return stream, form, files


UPLOAD_READ = 1024 * 1024

# Bodies of views that take no files are small forms; a large one is refused
# before it is read rather than parsed into memory.
FORM_BODY_LIMIT = 1024 * 1024
# The multipart envelope around a file (boundaries, the CSRF token, the file name).
ENVELOPE_BYTES = 64 * 1024


class ProtectRequest(Request):
    form_data_parser_class = _UploadFormParser

    @property
    def max_content_length(self) -> int | None:
        limit = super().max_content_length
        policy: UploadPolicy | None = getattr(self._view(), "upload_policy", None)
        if policy is None:
            return min(limit or FORM_BODY_LIMIT, FORM_BODY_LIMIT)
        # A view taking one large file (a vault deposit) may go past the app-wide limit.
        return max(limit or 0, policy.max_bytes() + ENVELOPE_BYTES)

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        # mypy sees a property with a setter as an overloaded function, without fset.
        Request.max_content_length.fset(self, value)  # type: ignore[attr-defined]

    def _view(self):
        return current_app.view_functions.get(self.endpoint) if self.endpoint else None

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        policy: UploadPolicy | None = getattr(self._view(), "upload_policy", None)
        if policy is None:
            raise BadRequest(description=str(_l("Files cannot be sent here.")))
        try:
            upload = EncryptedUpload(blob_store(), policy.recipients(), policy.max_bytes(),
                                     filename, content_type)
        except (StorageFull, StorageUnavailable) as exc:
            raise _storage_error(exc) from None
        g.setdefault("uploads", []).append(upload)
        return upload


def uploaded(name: str) -> EncryptedUpload | None:
    """The encrypted upload of form field ``name``, if a file was sent."""
    storage = request.files.get(name)
    if storage is None:
        return None
    # Werkzeug types it IO[bytes]; ProtectRequest._get_file_stream made it.
    upload = cast(EncryptedUpload, storage.stream)
    if not storage.filename and not upload.size:
        return None
    return upload


def _discard_uncommitted(_exc):
    for upload in g.pop("uploads", []):
        if not upload.committed:
            upload.abort()


def install(app: Flask) -> None:
    app.request_class = ProtectRequest
    app.teardown_request(_discard_uncommitted)
