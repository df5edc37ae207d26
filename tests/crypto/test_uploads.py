"""Uploads are encrypted as they arrive: no plaintext on disk, bounded memory,
nothing left behind by a refused or broken upload."""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
import requests

from protect.audit.models import AuditEntry
from protect.crypto import agefile
from protect.extensions import db
from tests.upload_app import make

MiB = 1024 * 1024
BOUNDARY = "protect-test-boundary-3f9a"


class MultipartStream(io.RawIOBase):
    """A multipart/form-data body made on the fly, so the test itself never
    holds the file: ``size`` bytes of random data with ``marker`` in every MiB."""

    def __init__(self, size: int, marker: bytes, csrf: str = "", filename: str = "evidence.bin",
                 stop_after: int | None = None):
        super().__init__()
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n"
                f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        self.parts = [head, None, f"\r\n--{BOUNDARY}--\r\n".encode()]
        self.size, self.marker, self.sent = size, marker, 0
        self.length = len(head) + size + len(self.parts[2])
        self._pending = b""
        self._file_left = size
        self._stage = 0

    def readable(self):
        return True

    # Werkzeug's test client measures a stream with tell/seek(0, 2)/seek(back):
    # answer from the known length without producing anything.
    def seekable(self):
        return True

    def tell(self):
        return getattr(self, "_told", 0)

    def seek(self, offset, whence=0):
        self._told = self.length if whence == 2 else offset
        return self._told

    def _next(self) -> bytes:
        if self._stage == 0:
            self._stage = 1
            return self.parts[0]
        if self._stage == 1:
            if self._file_left:
                n = min(MiB, self._file_left)
                chunk = self.marker + os.urandom(n - len(self.marker)) if n > len(self.marker) else self.marker[:n]
                self._file_left -= n
                return chunk
            self._stage = 2
            return self.parts[2]
        return b""

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = self._next()
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def __len__(self):
        # Lets requests send a Content-Length body rather than a chunked one.
        return self.length


@pytest.fixture
def identity():
    return agefile.generate_identity()


@pytest.fixture
def upload_app(app, database_url, tmp_path, identity):
    """protect with the test upload route, sharing ``app``'s instance (keys, blobs)."""
    return make(dict(instance_path=str(tmp_path / "instance"), database_url=database_url, env="test",
                     secret_key="s" * 40, argon2_time_cost=1, argon2_memory_kib=1024,
                     max_upload_mb=64), identity[1], 60 * MiB)


def _token(client) -> str:
    return re.search(r'value="([^"]+)"', client.get("/test-upload").get_data(as_text=True)).group(1)


def _post(client, stream: MultipartStream):
    return client.post("/test-upload", input_stream=stream, content_length=stream.length,
                       content_type=f"multipart/form-data; boundary={BOUNDARY}")


def _files_containing(root: Path, marker: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                tail = b""
                while chunk := fh.read(4 * MiB):
                    if marker in tail + chunk:
                        hits.append(path)
                        break
                    tail = chunk[-len(marker):]
    return hits


def _store(app):
    return app.extensions["protect.blobs"]


def _leftovers(app):
    return list(_store(app).ids()), list(Path(_store(app).tmp).iterdir())


def test_round_trip_decrypts_with_the_recipient_key(upload_app, identity):
    client = upload_app.test_client()
    stream = MultipartStream(200 * 1024 + 17, b"ROUNDTRIP", _token(client))
    response = _post(client, stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    blob_id = response.json["blob"]
    assert response.json["size"] == 200 * 1024 + 17
    out = io.BytesIO()
    with _store(upload_app).open(blob_id) as src:
        agefile.decrypt(src, out, [identity[0]])
    assert len(out.getvalue()) == 200 * 1024 + 17 and out.getvalue().startswith(b"ROUNDTRIP")
    with upload_app.app_context():
        assert db.session.query(AuditEntry).filter_by(action="test.upload", target=blob_id).count() == 1


def test_50_mib_upload_leaves_no_plaintext_and_bounded_memory(upload_app, tmp_path, monkeypatch):
    marker = b"MARKER-" + os.urandom(8).hex().encode() + b"-PLAINTEXT"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    client = upload_app.test_client()
    stream = MultipartStream(50 * MiB, marker, _token(client))
    tracemalloc.start()
    try:
        response = _post(client, stream)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    assert peak < 64 * MiB, f"peak Python memory {peak / MiB:.1f} MiB"
    assert _files_containing(tmp_path / "instance", marker) == []
    assert _files_containing(scratch, marker) == []
    assert _store(upload_app).size(response.json["blob"]) > 50 * MiB


def test_oversize_upload_is_413_and_leaves_nothing(upload_app, identity):
    upload_app.config["UPLOAD_MAX_BYTES"] = 1 * MiB
    client = upload_app.test_client()
    response = _post(client, MultipartStream(3 * MiB, b"BIG", _token(client)))
    assert response.status_code == 413
    assert "<h1>" in response.get_data(as_text=True)
    assert _leftovers(upload_app) == ([], [])
    with upload_app.app_context():
        assert db.session.query(AuditEntry).filter_by(action="test.upload").count() == 0


def test_upload_with_bad_csrf_token_is_discarded(upload_app):
    client = upload_app.test_client()
    _token(client)
    response = _post(client, MultipartStream(2 * MiB, b"NOCSRF", "forged-token"))
    assert response.status_code == 400
    assert _leftovers(upload_app) == ([], [])


@pytest.mark.parametrize("size, status", [(100 * 1024, 400), (2 * MiB, 413)])
def test_files_are_refused_where_no_view_takes_them(upload_app, size, status):
    """A form that takes no files refuses a file part, and a body over the
    small-form limit is refused before it is read."""
    client = upload_app.test_client()
    stream = MultipartStream(size, b"STRAY", _token(client))
    response = client.post("/login", input_stream=stream, content_length=stream.length,
                           content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == status
    assert _leftovers(upload_app) == ([], [])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["werkzeug", "gunicorn"])
def live_upload_server(request, app, database_url, tmp_path, identity):
    """The upload app served by werkzeug's server, or by gunicorn as deployed
    (deploy/gunicorn.conf.py: the body read straight off the socket)."""
    port = _free_port()
    scratch = tmp_path / "server-tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    root = Path(__file__).resolve().parents[2]
    if request.param == "werkzeug":
        command = [sys.executable, "-m", "tests.upload_app", "--port", str(port), "--instance",
                   str(tmp_path / "instance"), "--db", database_url, "--recipient", identity[1],
                   "--max-bytes", str(60 * MiB)]
    else:
        command = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(root / "deploy" / "gunicorn.conf.py"),
                   "--workers", "1", "--threads", "2", "--bind", f"127.0.0.1:{port}",
                   "tests.upload_app:wsgi()"]
        env.update(PROTECT_INSTANCE_PATH=str(tmp_path / "instance"), PROTECT_DATABASE_URL=database_url,
                   PROTECT_ENV="test", PROTECT_MAX_UPLOAD_MB="61", UPLOAD_RECIPIENT=identity[1],
                   UPLOAD_MAX_BYTES=str(60 * MiB))
    proc = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # gunicorn accepts while its worker boots
                time.sleep(0.1)
        # With gunicorn, the worker is the process that serves, and whose memory counts.
        server = proc.pid if request.param == "werkzeug" else int(
            Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        yield base, server, scratch
    finally:
        proc.terminate()
        proc.wait(10)


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def test_live_server_50_mib_upload(app, live_upload_server, tmp_path):
    base, server, scratch = live_upload_server
    session = requests.Session()
    token = re.search(r'value="([^"]+)"', session.get(base + "/test-upload").text).group(1)
    # Warm up (imports, first connection) before taking the baseline.
    small = MultipartStream(64 * 1024, b"WARM", token)
    session.post(base + "/test-upload", data=small,
                 headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    before = _peak_rss_kib(server)
    marker = b"LIVE-MARKER-" + os.urandom(8).hex().encode()
    big = MultipartStream(50 * MiB, marker, token)
    response = session.post(base + "/test-upload", data=big,
                            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 200, response.text[:300]
    growth = (_peak_rss_kib(server) - before) / 1024
    assert growth < 64, f"server peak memory grew by {growth:.1f} MiB"
    assert _files_containing(tmp_path / "instance", marker) == []
    assert _files_containing(scratch, marker) == []


def test_live_upload_cut_off_half_way_leaves_no_blob_and_no_row(app, live_upload_server):
    base, _server, _scratch = live_upload_server
    session = requests.Session()
    token = re.search(r'value="([^"]+)"', session.get(base + "/test-upload").text).group(1)
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    stream = MultipartStream(8 * MiB, b"CUT", token)
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"POST /test-upload HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                      f"Content-Length: {stream.length}\r\n\r\n").encode())
        sent = 0
        while sent < stream.length // 2:
            chunk = stream.read(64 * 1024)
            sock.sendall(chunk)
            sent += len(chunk)
    store = _store(app)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and list(Path(store.tmp).iterdir()):
        time.sleep(0.1)
    assert _leftovers(app) == ([], [])
    with app.app_context():
        assert db.session.query(AuditEntry).filter_by(action="test.upload").count() == 0


def test_uploads_into_s3_object_storage(app, database_url, tmp_path, identity, moto_server, s3_bucket,
                                        s3_client):
    s3_app = make(dict(instance_path=str(tmp_path / "instance"), database_url=database_url, env="test",
                       secret_key="s" * 40, blob_url=f"s3://{s3_bucket}/evidence",
                       s3_endpoint_url=moto_server), identity[1], 60 * MiB)
    client = s3_app.test_client()
    response = _post(client, MultipartStream(9 * MiB + 5, b"S3-ROUND-TRIP", _token(client)))
    assert response.status_code == 200
    out = io.BytesIO()
    with _store(s3_app).open(response.json["blob"]) as src:
        agefile.decrypt(src, out, [identity[0]])
    assert len(out.getvalue()) == 9 * MiB + 5 and out.getvalue().startswith(b"S3-ROUND-TRIP")
    s3_app.config["UPLOAD_MAX_BYTES"] = 1 * MiB
    assert _post(client, MultipartStream(12 * MiB, b"TOO-BIG", _token(client))).status_code == 413
    assert list(_store(s3_app).ids()) == [response.json["blob"]]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
