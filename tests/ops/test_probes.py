"""/healthz and /readyz, request ids and JSON logs without personal data, proxy headers."""
from __future__ import annotations

import json
import re
import secrets
import socket

from protect.security.access import Who
from tests.conftest import csrf_token, login, make_app


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ready_when_database_and_blob_store_answer(client):
    for path, body in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
        response = client.get(path)
        assert response.status_code == 200 and response.json == body
        assert response.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response.headers
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_database_down_is_live_but_not_ready(tmp_path):
    app = make_app(tmp_path, f"postgresql://postgres@127.0.0.1:{closed_port()}/protect")
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # no database call: no restart loop
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "reasons": ["database"]}


def test_blob_store_unreachable_or_missing_is_not_ready(database_url, tmp_path, moto_server,
                                                         aws_credentials):
    unreachable = make_app(tmp_path / "a", database_url, blob_url="s3://protect/blobs",
                           s3_endpoint_url=f"http://127.0.0.1:{closed_port()}")
    response = unreachable.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["reasons"] == ["blob_store"]
    no_bucket = make_app(tmp_path / "b", database_url, blob_url="s3://no-such-bucket/blobs",
                         s3_endpoint_url=moto_server)
    assert no_bucket.test_client().get("/readyz").json["reasons"] == ["blob_store"]


def test_request_lines_are_json_with_ids_and_no_personal_data(app, database_url, tmp_path, make_account,
                                                              capsys):
    account = make_account("journalist")
    json_app = make_app(tmp_path, database_url, log_format="json")  # the same keys as make_account's
    # A route that fails, to see the error log too (this app's policy only).
    json_app.add_url_rule("/boom/<token>", "boom", lambda token: 1 / 0)
    json_app.extensions["protect.policy"]["boom"] = Who.PUBLIC
    client = json_app.test_client()
    token = secrets.token_urlsafe(24)
    assert login(client, account).status_code == 302
    given = client.get("/account", headers={"X-Request-ID": "lb-7f3a9c-0001"})
    bad = client.get("/account", headers={"X-Request-ID": account.email})
    client.get(f"/release/{token}")
    client.get(f"/nothing/{account.email}?name=Luc%C3%ADa")
    assert client.get(f"/boom/{token}").status_code == 500
    err = capsys.readouterr().err

    assert given.headers["X-Request-ID"] == "lb-7f3a9c-0001"
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-ID"])  # an e-mail is no request id
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [r for r in records if r["logger"] == "protect.request"]
    assert {(r["method"], r["endpoint"], r["status"]) for r in requests} >= {
        ("POST", "accounts.login", 302), ("GET", "accounts.security", 200), ("GET", "release.open_link", 404),
        ("GET", "-", 404), ("GET", "boom", 500)}
    assert all(isinstance(r["duration_ms"], float) and r["time"] for r in requests)
    assert "lb-7f3a9c-0001" in {r["request_id"] for r in requests}
    assert bad.headers["X-Request-ID"] in {r["request_id"] for r in requests}
    failure = [r for r in records if r["level"] == "ERROR"]
    assert failure and "ZeroDivisionError" in failure[0]["exc_info"]
    assert failure[0]["request_id"] == [r for r in requests if r["endpoint"] == "boom"][0]["request_id"]
    for secret in (account.email, account.password, token, "Lucía", "Luc%C3%ADa", "/release", "/account"):
        assert secret not in err


def test_proxy_hops_give_each_client_its_own_address(database_url, app, tmp_path):
    def failures(proxy_hops: int) -> list[int]:
        behind = make_app(tmp_path / f"hops{proxy_hops}", database_url, proxy_hops=proxy_hops,
                          login_limit_per_address="2 per minute")
        codes = []
        for client_address in ("203.0.113.5", "203.0.113.5", "203.0.113.5", "203.0.113.6"):
            client = behind.test_client()
            headers = {"X-Forwarded-For": client_address}
            codes.append(client.post("/login", headers=headers, data={
                "email": f"{secrets.token_hex(4)}@example.org", "password": "wrong password",
                "csrf_token": csrf_token(client)}).status_code)
        return codes

    # Behind one proxy: the third failure from one client is refused, the other client is not.
    assert failures(1) == [401, 401, 429, 401]
    # Without the setting every client has the proxy's address: all share one limit.
    assert failures(0) == [401, 401, 429, 429]


def test_forms_post_over_https_the_way_browsers_send_them(app, database_url, tmp_path):
    """Over https Flask-WTF wants a same-origin Referer on every POST; a browser sends one
    only if the page's Referrer-Policy lets it ("no-referrer" does not)."""
    https = make_app(tmp_path, database_url, env="production", public_url="https://protect.example.org",
                     secret_key=secrets.token_urlsafe(48))
    client = https.test_client()
    page = client.get("/login", base_url="https://protect.example.org")
    policy = page.headers["Referrer-Policy"]
    headers = {} if policy == "no-referrer" else {"Referer": "https://protect.example.org/login"}
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    response = client.post("/login", base_url="https://protect.example.org", headers=headers,
                           data={"email": "nobody@example.org", "password": "wrong", "csrf_token": token})
    assert response.status_code == 401, f"a sign-in form over https was refused (Referrer-Policy: {policy})"
