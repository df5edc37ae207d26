"""A test-and-benchmark app: protect plus one route that stores an uploaded file.

The route goes through the real machinery (access policy, CSRF, the
encrypting form parser, blob store, audit row in the same transaction), so
the upload tests and bench/vault_throughput.py exercise what real views use.

Run as a server:  python -m tests.upload_app --port N --instance DIR --db URL --recipient age1...
"""
from __future__ import annotations

import argparse

from flask import Blueprint, current_app, render_template_string, request

from protect import create_app
from protect.audit import service as audit
from protect.crypto.uploads import accepts_uploads, uploaded
from protect.extensions import db
from protect.security.access import Who

bp = Blueprint("uploadtest", __name__)


@bp.route("/test-upload", methods=["GET", "POST"])
@accepts_uploads(recipients=lambda: [current_app.config["UPLOAD_RECIPIENT"]],
                 max_bytes=lambda: current_app.config["UPLOAD_MAX_BYTES"])
def upload():
    if request.method == "GET":
        return render_template_string('<form><input name="csrf_token" value="{{ csrf_token() }}"></form>')
    file = uploaded("file")
    if file is None:
        return {"error": "no file"}, 400
    blob_id = file.commit()
    audit.record(db.session, "test.upload", target=blob_id, size=file.size)
    db.session.commit()
    return {"blob": blob_id, "size": file.size}


def make(overrides: dict, recipient: str, max_bytes: int):
    # No embedded sweeper: it would sweep (and collect the blobs of) the database the
    # tests share, at moments no test chose.
    app = create_app({"sweep_interval_seconds": 0, **overrides})
    app.config.update(UPLOAD_RECIPIENT=recipient, UPLOAD_MAX_BYTES=max_bytes)
    app.register_blueprint(bp)
    app.extensions["protect.policy"]["uploadtest.upload"] = Who.PUBLIC
    return app


def wsgi():
    """For gunicorn (bench/vault_throughput.py): settings from PROTECT_* variables,
    the recipient and limit from UPLOAD_RECIPIENT and UPLOAD_MAX_BYTES."""
    import os
    return make({}, os.environ["UPLOAD_RECIPIENT"], int(os.environ["UPLOAD_MAX_BYTES"]))


def main() -> None:
    from werkzeug.serving import make_server
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--recipient", required=True)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024**3)
    parser.add_argument("--blob-url", default="")
    args = parser.parse_args()
    app = make({"instance_path": args.instance, "database_url": args.db, "env": "test",
                "max_upload_mb": args.max_bytes // 2**20 + 1, "blob_url": args.blob_url},
               args.recipient, args.max_bytes)
    make_server("127.0.0.1", args.port, app, threaded=True).serve_forever()


if __name__ == "__main__":
    main()
