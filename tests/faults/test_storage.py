"""The blob store full (a real 2 MiB tmpfs) or unreachable (the S3 server
stopped): the uploader gets a clear message in their language, and nothing
partial is kept (no row, no blob, no temporary, no unfinished S3 upload)."""
from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import func, select

from protect.cases.models import Evidence, Incident
from protect.crypto.blobs import LocalBlobStore, blob_store_from_url
from protect.extensions import db
from tests.cases.test_intake_web import add_incident, draft_at_step3, sign_in
from tests.crypto.conftest import aws_credentials  # noqa: F401  (fixture)

from .conftest import assert_blobs_whole, free_port

NO_ROOM = "There is no room to store the file right now. Nothing was saved"
UNREACHABLE = "File storage cannot be reached right now. Nothing was saved"


@pytest.fixture
def tiny_disk():
    """A 2 MiB tmpfs (needs root, as the test machines run)."""
    mount = Path(tempfile.mkdtemp(prefix="protect-full-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        mount.rmdir()
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def _rows(app) -> tuple[int, int]:
    with app.app_context():
        counts = tuple(db.session.execute(select(func.count()).select_from(m)).scalar_one()
                       for m in (Incident, Evidence))
        db.session.remove()
    return counts


def _refused_upload(app, client, token, case_id, size: int, message: str) -> None:
    response = add_incident(client, case_id, token, files=[("video.mp4", os.urandom(size))])
    assert response.status_code == 503, response.status_code
    page = response.get_data(as_text=True)
    assert '<html lang="en"' in page and message in page, page[-1500:]
    assert _rows(app) == (0, 0), "a refused upload left rows"


@pytest.mark.parametrize("full", ["fills during the upload", "full before it"])
def test_blob_store_full(app, client, make_account, tiny_disk, full):
    store_dir = tiny_disk / "blobs"
    app.extensions["protect.blobs"] = LocalBlobStore(store_dir)
    if full == "full before it":
        filler = tiny_disk / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
    token = sign_in(client, make_account("journalist"))
    case_id = draft_at_step3(client, token)

    _refused_upload(app, client, token, case_id, 4 * 1024 * 1024, NO_ROOM)
    assert [p for p in store_dir.rglob("*") if p.is_file()] == [], "a refused upload left a file"

    # Room again: the same request goes through.
    if full == "full before it":
        filler.unlink()
    response = add_incident(client, case_id, token, files=[("photo.jpg", os.urandom(256 * 1024))])
    assert response.status_code == 302
    assert _rows(app) == (1, 1)
    assert_blobs_whole(app)


def test_s3_endpoint_unreachable(app, client, make_account, aws_credentials):  # noqa: F811
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"evidence-{uuid.uuid4().hex}"  # moto keeps its buckets for the whole process
    s3.create_bucket(Bucket=bucket)
    app.extensions["protect.blobs"] = blob_store_from_url(f"s3://{bucket}/blobs", endpoint_url=endpoint)
    token = sign_in(client, make_account("journalist"))
    case_id = draft_at_step3(client, token)
    assert add_incident(client, case_id, token, files=[("a.jpg", b"\xff\xd8" * 5000)]).status_code == 302
    assert _rows(app) == (1, 1)

    server.stop()
    try:
        # A small file (sent whole at the end) and a large one (sent in parts as it arrives).
        for size in (64 * 1024, 12 * 1024 * 1024):
            response = add_incident(client, case_id, token, files=[("video.mp4", os.urandom(size))])
            assert response.status_code == 503, (size, response.status_code)
            page = response.get_data(as_text=True)
            assert '<html lang="en"' in page and UNREACHABLE in page, page[-1500:]
            assert _rows(app) == (1, 1), "a refused upload left rows"
    finally:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    try:
        objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert len(objects) == 1, "a refused upload left an object"
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], \
            "a refused upload left an unfinished multipart upload"
        assert_blobs_whole(app)
    finally:
        server.stop()
