"""gunicorn as deployed (deploy/gunicorn.conf.py) gives the request body a
readinto() that receives straight off the socket. It must read every body
exactly, chunked ones too, and leave the connection at the start of the next
request, pipelined or not."""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READ_SIZES = [1, 7, 4096, 100_003, 65_536]


def echo(environ, start_response):
    """Reads the body with readinto() in changing sizes (at most X-Read-At-Most
    bytes); answers with how much it read and its SHA-256."""
    body = environ["wsgi.input"]
    limit = int(environ.get("HTTP_X_READ_AT_MOST", "0"))
    buffer = memoryview(bytearray(max(READ_SIZES)))
    digest, total, turn = hashlib.sha256(), 0, 0
    while not limit or total < limit:
        view = buffer[:READ_SIZES[turn % len(READ_SIZES)]]
        if limit:
            view = view[:limit - total]
        n = body.readinto(view)
        if not n:
            break
        digest.update(view[:n])
        total, turn = total + n, turn + 1
    answer = f"{total} {digest.hexdigest()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def port():
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
         "--workers", "1", "--threads", "2", "--bind", f"127.0.0.1:{port}",
         "tests.crypto.test_gunicorn_body:echo"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(30)


class _KeepOpen(io.BufferedReader):
    def close(self):  # a response closes its reader once read; the next one needs it
        pass


class _OneReader:
    """Hands every response on a connection the same buffered reader, so that
    pipelined answers are not swallowed by the first one's buffer."""

    def __init__(self, sock: socket.socket):
        self._file = _KeepOpen(socket.SocketIO(sock, "rb"))

    def makefile(self, *_args, **_kwargs):
        return self._file


def _exchange(port: int, raw: bytes, answers: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        reader = _OneReader(sock)
        bodies = []
        for _ in range(answers):
            response = http.client.HTTPResponse(reader)  # type: ignore[arg-type]
            response.begin()
            assert response.status == 200
            bodies.append(response.read())
        return bodies


def _post(body: bytes, *headers: str) -> bytes:
    head = ["POST /echo HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _expected(body: bytes) -> bytes:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


def test_a_body_of_known_length_is_read_exactly(port):
    body = os.urandom(3 * 1024 * 1024 + 11)
    assert _exchange(port, _post(body), 1) == [_expected(body)]


def test_a_chunked_body_is_read_exactly(port):
    body = os.urandom(700_001)
    pieces, pos = [], 0
    for size in [1, 65_536, 3, 300_000] * 3:
        piece = body[pos:pos + size]
        pos += len(piece)
        if piece:
            pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    pieces.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - pos, body[pos:]))
    head = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _exchange(port, head + b"".join(pieces), 1) == [_expected(body)]


def test_pipelined_requests_each_get_their_own_body(port):
    first, second, third = os.urandom(2 * 1024 * 1024), b"ten bytes!", b""
    raw = _post(first) + _post(second) + _post(third)
    assert _exchange(port, raw, 3) == [_expected(first), _expected(second), _expected(third)]


def test_a_body_left_unread_does_not_leak_into_the_next_request(port):
    first, second = os.urandom(1024 * 1024), os.urandom(5000)
    read = len(first) - 20_000
    raw = _post(first, f"X-Read-At-Most: {read}") + _post(second)
    assert _exchange(port, raw, 2) == [_expected(first[:read]), _expected(second)]
