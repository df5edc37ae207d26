"""The release pages: what a vault's recipient (no account) reaches from the notice.

The link's token appears in one request only: its first GET trades it for a
marker in the session and redirects to ``/release/``, so the token stays out
of later access-log lines, the browser's history and any Referer. Every
download is a POST (CSRF-checked): a mail scanner's GET never uses one up.
The rules are in ``vault.release``.
"""
from __future__ import annotations

import json
import logging
import shlex

from flask import Blueprint, Response, abort, redirect, render_template, session, url_for
from flask_babel import lazy_gettext as _l
from wtforms import PasswordField
from wtforms.validators import InputRequired, Length

from ..cases.forms import PlainForm
from ..crypto.blobs import BlobError, BlobNotFound
from ..crypto.downloads import CHUNK, attachment_header
from ..errors import DomainError, NotFound
from ..extensions import db
from . import release as service
from .service import ACCESS_CODE_MAX, blob_store

log = logging.getLogger(__name__)
bp = Blueprint("release", __name__, url_prefix="/release")
MARKER = "release"


class CodeForm(PlainForm):
    code = PasswordField(_l("Access code"), validators=[
        InputRequired(message=_l("Enter the access code the journalist gave you.")),
        Length(max=ACCESS_CODE_MAX * 4, message=_l("That access code is not right."))])


def _refused(exc: DomainError):
    """A link that does not work (any more): say why, in a page of its own."""
    db.session.rollback()
    if isinstance(exc, (service.LinkInvalid, service.LinkExpired)):
        session.pop(MARKER, None)
    if isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, (service.LinkExpired, service.UsedUp)):
        status = 410
    else:
        status = 409
    return render_template("vault/release_gone.html", message=exc.message), status


def _page(release, *, form: CodeForm | None = None, error=None, status: int = 200):
    """The release page, after a refusal too (``error``): what is left to download."""
    try:
        view = service.overview(db.session, release)
    except DomainError as exc:
        return _refused(exc)
    commands = {f.id: "age -d -i key.txt -o {} {}".format(shlex.quote(f.download_name),
                                                          shlex.quote(f.download_name + ".age"))
                for f in view.files}
    if view.used_up and status == 200:
        status = 410
    return render_template("vault/release.html", view=view, form=form or CodeForm(), error=error,
                           commands=commands), status


def _current():
    return service.current(db.session, session.get(MARKER))


@bp.get("/<token>")
def open_link(token: str):
    try:
        release = service.open_link(db.session, token)
    except DomainError as exc:
        return _refused(exc)
    session[MARKER] = service.marker(release)
    session.setdefault("locale", service.language(db.session, release))
    db.session.commit()
    return redirect(url_for(".page"), 303)


@bp.get("/")
def page():
    if session.get(MARKER) is None:
        return render_template("vault/release_start.html")
    try:
        release = _current()
    except DomainError as exc:
        return _refused(exc)
    return _page(release)


def _stream(chunks, release_id: str):
    """Yield a download's bytes; a failure half-way is logged by class and
    release id only (a library's message may name a file), and cuts the
    response short, which the client sees as an incomplete download."""
    try:
        yield from chunks
    except Exception as exc:  # noqa: BLE001  (headers are gone: nothing else can be sent)
        log.error("release %s: download stopped: %s", release_id, type(exc).__name__)


def _blob_chunks(raw):
    try:
        while chunk := raw.read(CHUNK):
            yield chunk
    finally:
        raw.close()


def _attachment(chunks, filename: str, size: int, mimetype: str, release_id: str) -> Response:
    response = Response(_stream(chunks, release_id), mimetype=mimetype)
    response.headers["Content-Disposition"] = attachment_header(filename)
    response.headers["Content-Length"] = str(size)
    return response


@bp.post("/files/<deposit_id>")
def download_file(deposit_id: str):
    """One deposit's age file, as stored (a recipient with a key)."""
    try:
        release = _current()
        item = service.age_file(db.session, release, deposit_id)
    except service.UsedUp as exc:
        db.session.rollback()
        return _page(release, error=exc.message, status=410)
    except DomainError as exc:
        return _refused(exc)
    store = blob_store()
    try:
        size = store.size(item.blob_id)
        raw = store.open(item.blob_id)
    except BlobError as exc:
        db.session.rollback()
        log.error("release %s: blob %s cannot be read: %s", release.id, item.blob_id, type(exc).__name__)
        abort(404 if isinstance(exc, BlobNotFound) else 503)
    db.session.commit()  # the count and the audit row before the first byte
    return _attachment(_blob_chunks(raw), item.filename, size, "application/octet-stream", release.id)


@bp.post("/manifest")
def manifest():
    try:
        release = _current()
        data = service.manifest(db.session, release)
    except DomainError as exc:
        return _refused(exc)
    db.session.commit()
    body = (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode()
    return _attachment([body], "manifest.json", len(body), "application/json", release.id)


@bp.post("/zip")
def download_zip():
    """Every file left, decrypted by the server into a streamed ZIP (a keyless recipient)."""
    try:
        release = _current()
    except DomainError as exc:
        return _refused(exc)
    form = CodeForm()
    if not form.validate_on_submit():
        return _page(release, form=form, status=400)
    try:
        archive = service.zip_archive(db.session, release, form.code.data)
    except service.WrongCode as exc:
        db.session.commit()  # the audited failure is what the throttle counts
        form.code.errors.append(exc.message)
        return _page(release, form=form, status=401)
    except (service.CodeThrottled, service.UsedUp) as exc:
        db.session.rollback()
        return _page(release, error=exc.message,
                     status=429 if isinstance(exc, service.CodeThrottled) else 410)
    except DomainError as exc:
        return _refused(exc)
    db.session.commit()  # the counts and the audit row before the first byte
    return _attachment(archive.stream, archive.filename, archive.size, "application/zip", release.id)
