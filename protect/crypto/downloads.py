"""Sending a stored, age-encrypted blob to a person as a decrypted attachment.

The blob is decrypted while it streams out, 64 KiB at a time: plaintext is
never written anywhere and memory stays bounded whatever the file's size.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from urllib.parse import quote

from flask import Response, abort, current_app, stream_with_context

from . import agefile
from .blobs import BlobNotFound

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


def attachment_header(filename: str) -> str:
    """Content-Disposition for a user-supplied name: a safe ASCII fallback and the UTF-8 name."""
    name = "".join(ch for ch in filename if ch.isprintable() and ch not in "/\\\"").strip()[:200]
    name = name.strip(". ") or "file"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = re.sub(r"[^A-Za-z0-9._()-]+", "_", fallback).strip("._") or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def decrypted_attachment(blob_id: str, identities: list[str], filename: str, size: int | None,
                         *, before_first_byte=lambda: None) -> Response:
    """The response streaming blob ``blob_id`` decrypted with ``identities``.

    ``before_first_byte`` runs once the blob is known to open (commit the
    audit row there: no byte leaves unrecorded). Never rendered inline.
    """
    try:
        raw = current_app.extensions["protect.blobs"].open(blob_id)
    except BlobNotFound:
        log.error("blob %s is missing", blob_id)
        abort(404)
    try:
        plain = agefile.open_decrypted(raw, identities)
    except agefile.AgeError as exc:
        raw.close()
        log.error("blob %s does not open: %s", blob_id, type(exc).__name__)
        abort(500)
    before_first_byte()

    def chunks():
        try:
            while chunk := plain.read(CHUNK):
                yield chunk
        finally:
            plain.close()
            raw.close()

    response = Response(stream_with_context(chunks()), mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = attachment_header(filename)
    if size is not None:
        response.headers["Content-Length"] = str(size)
    return response
