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
