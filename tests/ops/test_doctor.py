"""`flask protect doctor`: a good deployment passes, a bad one is told each thing that is wrong."""
from __future__ import annotations

import secrets

from tests.conftest import make_app
from tests.ops.test_probes import closed_port


def doctor(app):
    return app.test_cli_runner().invoke(args=["protect", "doctor"])


def test_a_good_deployment_passes(database_url, tmp_path, smtp, redis_url, moto_server, s3_bucket):
    app = make_app(tmp_path, database_url, env="production", public_url="https://protect.example.org",
                   secret_key=secrets.token_urlsafe(48), log_format="json", proxy_hops=1,
                   blob_url=f"s3://{s3_bucket}/blobs", s3_endpoint_url=moto_server,
                   mail_server=f"127.0.0.1:{smtp.port}", mail_starttls=False, mail_timeout_seconds=5,
                   ratelimit_storage_url=redis_url)
    result = doctor(app)
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    for line in ("OK    master keys: 1 in ", "OK    blob store: reachable",
                 f"OK    mail: 127.0.0.1:{smtp.port} answers EHLO (no STARTTLS)",
                 "OK    rate limits: counters in redis://127.0.0.1:6379/13", "0 problem(s)"):
        assert line in result.output
    if database_url.startswith("sqlite"):
        assert "WARN  several hosts: fine for one host; several need shared services: SQLite" in result.output
    else:
        assert "OK    database: postgresql reachable, schema up to date" in result.output
        assert "several hosts" not in result.output


def test_a_bad_deployment_is_told_each_problem(tmp_path, aws_credentials):
    closed = closed_port()
    app = make_app(tmp_path, f"postgresql://postgres@127.0.0.1:{closed}/protect", env="development", debug=True,
                   public_url="http://protect.example.org", secret_key="short",
                   blob_url="s3://protect/blobs", s3_endpoint_url=f"http://127.0.0.1:{closed}",
                   mail_server=f"127.0.0.1:{closed}", ratelimit_storage_url=f"redis://127.0.0.1:{closed}/0")
    keys = tmp_path / "instance" / "keys"
    keys.chmod(0o755)
    key_file = next(keys.glob("*.key"))
    key_file.chmod(0o644)
    result = doctor(app)
    assert result.exit_code == 1
    out = result.output
    for line in ("FAIL  environment: PROTECT_ENV is development", "FAIL  debug: debug is on",
                 "FAIL  public URL: PROTECT_PUBLIC_URL is http://protect.example.org",
                 "FAIL  cookies: session cookies are not marked Secure",
                 "FAIL  secret key: PROTECT_SECRET_KEY has 5 characters",
                 f"FAIL  master keys: {keys} has mode 0755", f"FAIL  master keys: {key_file} has mode 0644",
                 "FAIL  database: unreachable: OperationalError", "FAIL  blob store: S3 endpoint unreachable",
                 f"FAIL  mail: 127.0.0.1:{closed}: ConnectionRefusedError",
                 f"FAIL  rate limits: redis://127.0.0.1:{closed}/0 unreachable"):
        assert line in out, out
    assert "11 problem(s)" in out, out


def test_a_long_but_repetitive_secret_key_is_weak(tmp_path):
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", secret_key="ab" * 24)
    assert "FAIL  secret key: PROTECT_SECRET_KEY repeats few characters" in doctor(app).output
