"""Operations: load-balancer probes, request ids and structured logs, proxy
headers, and what the operator's commands use (doctor, backup and restore)."""
from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def install(app: Flask) -> None:
    from . import logs
    from .views import bp

    logs.install(app)
    app.register_blueprint(bp)
    hops = app.extensions["protect.settings"].proxy_hops
    if hops > 0:
        # Behind nginx every client would otherwise have nginx's address (and so
        # share one login limit) and every request would look like plain http.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
