"""gunicorn for protect behind nginx: `gunicorn -c deploy/gunicorn.conf.py` (docs/DEPLOYMENT.md).

Settings come from the environment (/etc/protect/protect.env through the
systemd unit); command-line flags override anything here.
"""
import os

wsgi_app = "app:app"
bind = os.environ.get("PROTECT_BIND", "127.0.0.1:8000")
# gthread: a slow upload or download holds a thread, not a whole process.
worker_class = "gthread"
workers = int(os.environ.get("PROTECT_WORKERS", "2"))
threads = int(os.environ.get("PROTECT_THREADS", "8"))
# No access log: its request line holds the path, and paths carry tokens
# (/release/<token>). The app logs each request by endpoint name, with a
# request id, as JSON (PROTECT_LOG_FORMAT=json), to stderr like this log.
accesslog = None
errorlog = "-"
# Only nginx on this host may say which scheme and client a request came from.
forwarded_allow_ips = "127.0.0.1"
# A restart lets running requests (an upload) finish first.
graceful_timeout = 60
# systemd manages the process; no control socket in the service user's home.
control_socket_disable = True


def post_worker_init(worker):
    # gunicorn's request body (wsgi.input) has read() but no readinto(): every
    # byte of an upload was copied through gunicorn's buffers (BytesIO writes
    # and slices), then by werkzeug into the caller's buffer. With readinto(),
    # protect's form parser (crypto/multipart.py) receives a large upload
    # straight off the socket into the buffer it encrypts from. (gunicorn is
    # pinned in requirements.txt; tests/crypto/test_gunicorn_body.py checks this
    # against it.)
    from gunicorn.http.body import Body
    Body.readinto = _body_readinto


def _body_readinto(self, buffer):
    """A body of known length is received straight into ``buffer`` once the
    bytes gunicorn read ahead (with the headers) are used up; other bodies
    (chunked) through gunicorn's own read()."""
    from gunicorn.http.body import LengthReader
    from gunicorn.http.unreader import SocketUnreader
    view = memoryview(buffer).cast("B")
    reader = self.reader
    if type(reader) is not LengthReader or type(reader.unreader) is not SocketUnreader:
        data = self.read(len(view))
    elif self.buf.tell():
        data = self.read(min(len(view), self.buf.tell()))
    elif held := reader.unreader.buf.seek(0, os.SEEK_END):
        # Only what is held: asking for more would recv() and hold some back again.
        data = reader.read(min(len(view), held))
    else:
        if not reader.length or not view:
            return 0
        try:
            # Never past the body's end: what follows is the next request on the connection.
            n = reader.unreader.sock.recv_into(view, min(len(view), reader.length))
        except Exception:
            self.failed = True  # where the next request starts is unknown: the connection closes
            raise
        reader.length -= n
        return n
    view[:len(data)] = data
    return len(data)
