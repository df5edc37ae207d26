"""Fuzz: every URL rule × every role and anonymous, with malformed requests.

Nothing here names an endpoint. The rules come from the app's URL map, the
fields from the forms the app itself renders (each identity's pages are
crawled first, in a small world with a case at every kind of page) and real
path values from the links on those pages; so routes added later are fuzzed
as soon as they exist. There is a test per identity; each of its Hypothesis
examples walks every rule and sends one malformed request drawn for it: random,
oversized and wrong-typed values for the real fields, repeated and unknown
keys, a missing, forged or foreign CSRF token, a method the rule does not
take, junk path parameters and query strings, invalid UTF-8, NUL bytes, JSON
and raw bodies, files where none belong, large headers.

Checked after every request: never a 5xx. A request the access policy
refuses changes nothing (every table, every file of the blob store). An
allowed request that is refused (4xx, or the form again with a message)
changes nothing but what showing a page records (audit rows, read marks, a
session's last-seen time). Whatever the answer, no temporary is left in the
blob store and every blob a row names is a complete age file; after each
example the audit chain verifies.
"""
from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote_from_bytes, urlsplit

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from sqlalchemy import select, text
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from protect.accounts.models import User
from protect.audit import service as audit
from protect.cases import service as cases
from protect.cases.models import Case
from protect.extensions import db
from protect.security.access import HOME, allowed
from protect.vault import service as vaults
from protect.vault.service import _known_blob_ids
from tests.cases.test_intake_web import add_incident, draft_at_step3, post_step, send
from tests.conftest import csrf_token, login
from tests.web.test_bad_input import assert_error_page

IDENTITIES = ("anonymous", "journalist", "caseworker", "supervisor", "donor", "admin")
FORM_TYPE = "application/x-www-form-urlencoded"
AGE_MAGIC = b"age-encryption.org/v1\n"
EXAMPLES = 6  # each one is a walk of every rule as one identity

# What showing a page may write: read marks, a session's last-seen time, a
# second factor being enrolled. The audit log is checked by verifying its chain.
NOT_COMPARED_TABLES = {"audit_log"}
NOT_COMPARED_COLUMNS = {"login_sessions": {"last_seen_at"}, "case_messages": {"read_at"},
                        "notifications": {"read_at"}, "users": {"totp_pending"}}


# --------------------------------------------------------------------------- the world

@dataclass
class Identity:
    name: str
    client: object
    account: object = None
    token: str = ""


def _sign_in(app, make_account, name: str) -> Identity:
    client = app.test_client()
    if name == "anonymous":
        return Identity(name, client, None, csrf_token(client, "/login"))
    account = make_account(name)
    response = login(client, account)
    assert response.status_code == 302, f"{name} could not sign in"
    return Identity(name, client, account, csrf_token(client, "/account"))


def _sent_request(j: Identity) -> str:
    """A request sent through the five steps, with evidence on its incident and on an online threat."""
    case_id = draft_at_step3(j.client, j.token)
    assert add_incident(j.client, case_id, j.token, files=[("photo.jpg", b"\xff\xd8 photo" * 50)]).status_code == 302
    assert post_step(j.client, case_id, 3, j.token, {"action": "continue"}).status_code == 302
    assert post_step(j.client, case_id, 4, j.token, {
        "platform": "x", "locator": "https://x.com/someone/status/1", "action": "continue",
        "files": [(io.BytesIO(b"\x89PNG screenshot" * 50), "shot.png")]}).status_code == 302
    assert send(j.client, case_id, j.token).location.endswith(f"/requests/{case_id}")
    return case_id


def _build_world(app, identities: dict[str, Identity]) -> None:
    """A journalist's cases at several stages, worked on by the staff identities,
    and a vault: every kind of page, form and link exists for the crawl to find."""
    j = identities["journalist"]
    worked = _sent_request(j)   # taken to implementation below
    _sent_request(j)            # left received, unassigned
    draft_at_step3(j.client, j.token)

    with app.app_context():
        s = db.session
        cw = s.get(User, identities["caseworker"].account.id)
        sup = s.get(User, identities["supervisor"].account.id)
        case = s.get(Case, worked)
        cases.assign(s, sup, case, cw)
        cases.triage(s, cw, case, decision="ordinary")
        cases.record_assessment(s, cw, case, level="high", factors="Threats", recommendation="Cameras")
        cases.record_decision(s, sup, case, outcome="granted", reason="risk_confirmed",
                              decided_on=date.today(), measures=[("cameras", "state"), ("phone", "federal")])
        cases.communicate_decision(s, cw, case)
        cases.send_message(s, cw, case, "We are on it.")
        cases.add_note(s, cw, case, "Called the petitioner.")
        owner = s.get(User, j.account.id)
        vault = vaults.create_vault(s, owner, "Investigation")
        vaults.add_note(s, owner, vault, "Where the documents are.")
        s.commit()
        s.remove()


# --------------------------------------------------------------------------- the crawl

@dataclass
class FormSpec:
    fields: dict[str, list[str]] = field(default_factory=dict)   # name -> values seen (options, hidden)
    files: set[str] = field(default_factory=set)


class _Page(HTMLParser):
    """Links and POST forms of one page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.forms: list[tuple[str, FormSpec]] = []
        self._form: FormSpec | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "form":
            self._form = FormSpec()
            if (a.get("method") or "get").lower() == "post":
                self.forms.append((a.get("action") or "", self._form))
            else:
                self.links.append(a.get("action") or "")
        elif self._form is not None and a.get("name"):
            name = a["name"]
            values = self._form.fields.setdefault(name, [])
            if tag == "input" and (a.get("type") or "").lower() == "file":
                self._form.files.add(name)
            elif tag == "select":
                self._select = name
            elif tag in ("input", "button") and a.get("value") is not None:
                values.append(a["value"])
        elif tag == "option" and self._form is not None and self._select and a.get("value") is not None:
            self._form.fields[self._select].append(a["value"])

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


@dataclass
class Site:
    """What the crawl learnt: forms and real path values per endpoint."""
    rules: list
    forms: dict[str, list[FormSpec]] = field(default_factory=lambda: defaultdict(list))
    values: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # path argument -> values


def _match(app, url: str, method: str = "GET"):
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        return None
    try:
        return app.url_map.bind("localhost").match(parts.path, method=method)
    except (HTTPException, RequestRedirect):
        return None


def _crawl(app, site: Site, identity: Identity, per_endpoint: int = 3, limit: int = 60) -> None:
    todo = [r.rule for r in site.rules if "GET" in r.methods and not r.arguments]
    seen: set[str] = set()
    visits: dict[str, int] = defaultdict(int)
    while todo and len(seen) < limit:
        url = todo.pop(0)
        matched = _match(app, url)
        if url in seen or matched is None or visits[matched[0]] >= per_endpoint:
            continue
        seen.add(url)
        visits[matched[0]] += 1
        response = identity.client.get(url)
        body = response.get_data()
        response.close()  # a download streams inside the request's context until closed
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        page = _Page()
        page.feed(body.decode())
        for href in page.links:
            if (found := _match(app, href)) is not None:
                for name, value in found[1].items():
                    site.values[name].add(str(value))
                todo.append(urlsplit(href).path)
        for action, spec in page.forms:
            if (found := _match(app, action or url, "POST")) is not None:
                site.forms[found[0]].append(spec)
                for name, value in found[1].items():
                    site.values[name].add(str(value))


# --------------------------------------------------------------------------- malformed requests

WRONG_TYPED = ["", " ", "0", "-1", "9" * 40, "1e309", "NaN", "true", "null", "[]", "{}", "2024-02-30",
               "0000-00-00T25:61", "9999-12-31T23:59", "1900-01-01", "a\x00b", "\x00", "%", "&=&",
               "\r\n\t\x1b[31m", "\u202e\ufeff", "<script>x</script>", "' OR 1=1 --", "../../etc/passwd"]
JUNK_ARGS = ["0", "-1", "9" * 40, "a" * 3000, "..", "%00", "\x00", "00000000000000000000000000000000",
             "ffffffffffffffffffffffffffffffff", "null", "<x>", "PRT-0000-0000", "\u202e", " ", "é"]
BAD_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
CONTENT_TYPES = [FORM_TYPE, FORM_TYPE + "; charset=utf-16", "multipart/form-data",
                 "multipart/form-data; boundary=x", "text/plain", "application/octet-stream",
                 "application/json", None]

short_values_st = st.one_of(
    st.sampled_from(WRONG_TYPED),
    st.text(max_size=40),
    st.binary(max_size=30),                       # invalid UTF-8 more often than not
)
values_st = st.one_of(short_values_st, st.sampled_from([1_000, 30_000, 300_000]).map(lambda n: "x" * n))
keys_st = st.one_of(st.text(min_size=1, max_size=20), st.binary(min_size=1, max_size=10),
                    st.just("a" * 5000))


class Attempt:
    """One request to send (a plain class: its repr, short, is what a failure report shows)."""

    def __init__(self, method: str, url: str, body: bytes | None = None, content_type: str | None = None,
                 headers: dict | None = None, what: str = ""):
        self.method, self.url, self.body = method, url, body
        self.content_type, self.headers, self.what = content_type, headers or {}, what

    def __repr__(self):
        body = (self.body or b"")[:200]
        return f"{self.method} {self.url[:200]} [{self.what}] {self.content_type} {body!r}"


def _b(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def _urlencoded(pairs, quoted: bool) -> bytes:
    if quoted:
        return b"&".join(quote_from_bytes(_b(k)).encode() + b"=" + quote_from_bytes(_b(v)).encode()
                         for k, v in pairs)
    return b"&".join(_b(k) + b"=" + _b(v) for k, v in pairs)


def _multipart(pairs, files) -> tuple[bytes, str]:
    boundary = b"fuzzboundary7MA4YWxkTrZu0gW"
    out = io.BytesIO()
    for key, value in pairs:
        out.write(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + _b(key).replace(b'"', b"")
                  + b'"\r\n\r\n' + _b(value) + b"\r\n")
    for key, filename, content in files:
        out.write(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + _b(key).replace(b'"', b"")
                  + b'"; filename="' + _b(filename).replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"")
                  + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + content + b"\r\n")
    out.write(b"--" + boundary + b"--\r\n")
    return out.getvalue(), "multipart/form-data; boundary=" + boundary.decode()


RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^>]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


def _path(rule, args: dict) -> str:
    """The rule's URL with ``args`` put in as they are (no converter checks), percent-encoded."""
    return RULE_ARGUMENT.sub(lambda m: quote_from_bytes(_b(args[m["name"]]),
                                                        safe="/" if m["converter"] == "path" else ""),
                             rule.rule)


@st.composite
def attempts(draw, site: Site, rule, identity: Identity, foreign_token: str):
    methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
    # Hypothesis starts from the smallest draws: make those the ordinary request.
    if draw(st.integers(0, 7)) == 7:
        method = draw(st.sampled_from([m for m in BAD_METHODS if m not in methods] or methods))
    else:
        method = draw(st.sampled_from(methods))
    args = {}
    for name in rule.arguments:
        real = sorted(site.values.get(name, ()))
        if real and draw(st.integers(0, 3)) < 3:
            args[name] = draw(st.sampled_from(real))
        else:
            args[name] = draw(st.one_of(st.sampled_from(JUNK_ARGS), st.text(min_size=1, max_size=30)))
    url = _path(rule, args)
    what = []
    if draw(st.integers(0, 4)) == 4:
        query = draw(st.lists(st.tuples(keys_st, short_values_st), max_size=4))
        url += "?" + _urlencoded(query, quoted=True).decode()
        what.append("query")
    headers = {}
    extra = draw(st.integers(0, 9))
    if extra == 8:
        headers["X-Fuzz"] = "h" * 7000                   # under gunicorn's 8190-byte line limit
    elif extra == 9:
        printable = st.characters(codec="latin-1", categories=["L", "N", "P", "S", "Zs"])
        headers["Accept-Language"] = draw(st.text(printable, max_size=80))
    if method == "GET":
        return Attempt(method, url, headers=headers, what=",".join(what) or "get")

    token = {"valid": identity.token, "missing": None, "forged": "forged", "foreign": foreign_token,
             "nul": identity.token + "\x00"}[draw(st.sampled_from(["valid"] * 5 + ["missing", "forged",
                                                                                    "foreign", "nul"]))]
    specs = site.forms.get(rule.endpoint) or [spec for specs in site.forms.values() for spec in specs]
    spec = draw(st.sampled_from(specs)) if specs else FormSpec()
    pairs = [] if token is None else [("csrf_token", token)]
    names = [n for n in spec.fields if n != "csrf_token" and n not in spec.files]
    # A few fields malformed, the others as the page would send them: bad
    # values then reach the view's own checks rather than the first required field.
    fuzzed = draw(st.sets(st.sampled_from(names), max_size=5)) if names else set()
    for name in names:
        real = [v for v in spec.fields[name] if v]
        if name not in fuzzed:
            pairs.append((name, real[0] if real else ""))
            continue
        for _ in range(draw(st.sampled_from([0, 1, 2, 3]))):    # omitted, once, repeated
            pairs.append((name, draw(st.sampled_from(real)) if real and draw(st.integers(0, 3)) == 3
                          else draw(values_st)))
    pairs += draw(st.lists(st.tuples(keys_st, values_st), max_size=2))
    pairs = draw(st.permutations(pairs))

    kind = draw(st.sampled_from(["urlencoded", "urlencoded", "raw bytes", "multipart", "json", "raw"]))
    what.append(kind)
    if kind in ("urlencoded", "raw bytes"):
        body, content_type = _urlencoded(pairs, quoted=kind == "urlencoded"), FORM_TYPE
    elif kind == "multipart":
        files = [(name, draw(st.text(max_size=30)), draw(st.binary(max_size=3000))) for name in spec.files]
        files += draw(st.lists(st.tuples(keys_st, st.text(max_size=20), st.binary(max_size=500)), max_size=1))
        body, content_type = _multipart(pairs, files)
    elif kind == "json":
        document = {(k.decode("latin-1") if isinstance(k, bytes) else k):
                    draw(st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.text(max_size=20)))
                    for k, _ in pairs}
        body, content_type = json.dumps(document).encode(), "application/json"
        if token:
            headers["X-CSRFToken"] = token
    else:
        body = draw(st.binary(max_size=2000))
        if token and draw(st.booleans()):
            body = b"csrf_token=" + token.encode() + b"&" + body
        content_type = draw(st.sampled_from(CONTENT_TYPES))
    return Attempt(method, url, body, content_type, headers, ",".join(what))


# --------------------------------------------------------------------------- what is stored

def _table_queries() -> dict[str, object]:
    queries = {}
    for table in db.metadata.sorted_tables:
        if table.name in NOT_COMPARED_TABLES:
            continue
        skip = NOT_COMPARED_COLUMNS.get(table.name, set())
        columns = [c for c in table.c if c.name not in skip]
        queries[table.name] = select(*columns).order_by(*(list(table.primary_key.columns) or columns))
    return queries


@cache
def _digest_sql(engine) -> str:
    """PostgreSQL: one statement giving a digest of every table's rows (one round trip)."""
    return " UNION ALL ".join(
        f"SELECT '{name}', md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) "
        f"FROM ({query.compile(engine)}) r" for name, query in _table_queries().items())


def _tables(app) -> dict[str, object]:
    """Every table's rows, or on PostgreSQL a digest of them."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            snapshot = dict(db.session.execute(text(_digest_sql(db.engine))).all())
        else:
            snapshot = {name: db.session.execute(query).all() for name, query in _table_queries().items()}
        db.session.remove()
    return snapshot


def _blob_files(app) -> set[str]:
    root = Path(app.extensions["protect.blobs"].root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _state(app):
    return _tables(app), _blob_files(app)


def _changes(before, after) -> list[str]:
    (tables_a, files_a), (tables_b, files_b) = before, after
    changed = [name for name in tables_a if tables_a[name] != tables_b.get(name)]
    if files_a != files_b:
        changed.append(f"blob files {sorted(files_a ^ files_b)[:4]}")
    return changed


def _assert_blobs_whole(app, what: str) -> None:
    store = app.extensions["protect.blobs"]
    leftovers = list(Path(store.tmp).iterdir())
    assert not leftovers, f"{what}: temporaries left in the blob store: {leftovers[:3]}"
    with app.app_context():
        named = _known_blob_ids(db.session)
        db.session.remove()
    for blob_id in named:
        with store.open(blob_id) as fh:
            assert fh.read(len(AGE_MAGIC)) == AGE_MAGIC, f"{what}: blob {blob_id} is not an age file"


# --------------------------------------------------------------------------- the walk

def _who(identity: Identity):
    if identity.account is None:
        return SimpleNamespace(is_authenticated=False, role=None)
    return SimpleNamespace(is_authenticated=True, role=identity.name)


def _refused(attempt: Attempt, response) -> bool:
    """An answer that says no: an error status, or the form again with a message."""
    if response.status_code >= 400:
        return True
    return attempt.method != "GET" and response.status_code == 200 and \
        b'role="alert"' in response.get_data()


def _keep_signed_in(app, make_account, identities: dict[str, Identity], name: str) -> Identity:
    """The identity, signed in with its role; a fresh account if a fuzzed request
    ended its session or an admin's changed its role."""
    identity = identities[name]
    if identity.account is None:
        return identity
    with app.app_context():
        user = db.session.get(User, identity.account.id)
        intact = user is not None and user.active and user.role == name
        db.session.remove()
    if intact:
        with app.test_request_context():
            from flask import url_for
            home = url_for(HOME[name])
        response = identity.client.get(home)
        response.close()
        if response.status_code == 200:
            return identity
    identities[name] = _sign_in(app, make_account, name)
    return identities[name]


def _send(identity: Identity, attempt: Attempt):
    response = identity.client.open(attempt.url, method=attempt.method, data=attempt.body,
                                    content_type=attempt.content_type, headers=attempt.headers)
    response.get_data()
    response.close()  # a download streams inside the request's context until closed
    return response


class Walk:
    def __init__(self, name: str, site: Site, identities: dict[str, Identity], foreign: str):
        self.name, self.site, self.identities, self.foreign = name, site, identities, foreign

    def __repr__(self):
        return f"<walk as {self.name}>"


@pytest.fixture(params=IDENTITIES)
def site(request, app, make_account):
    """Every identity signed in, the world built, and the pages of the one under test crawled."""
    identities = {name: _sign_in(app, make_account, name) for name in IDENTITIES}
    _build_world(app, identities)
    found = Site(sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)))
    _crawl(app, found, identities[request.param])
    return Walk(request.param, found, identities, csrf_token(app.test_client(), "/login"))


@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_malformed_requests_to_every_rule(app, make_account, site, data):
    name, identities, found = site.name, site.identities, site.site
    if name in ("journalist", "caseworker", "supervisor"):  # or the fuzz would only meet the policy
        assert found.forms and found.values.get("case_id"), f"the crawl as {name} found no forms or cases"
    identity = _keep_signed_in(app, make_account, identities, name)
    drawn = [(rule, data.draw(attempts(found, rule, identity, site.foreign), label=rule.endpoint))
             for rule in found.rules]
    refused = [(r, a) for r, a in drawn if not allowed(r.endpoint, _who(identity))]
    permitted = [(r, a) for r, a in drawn if allowed(r.endpoint, _who(identity))]

    # Refused by the policy: one look at the whole store around all of them.
    before = _state(app)
    for rule, attempt in refused:
        response = _send(identity, attempt)
        what = f"{name} {attempt} ({rule.endpoint}, not allowed)"
        assert response.status_code < 500, f"{what}: {response.status_code}"
        if response.status_code in (301, 308):  # the router tidied the path ("//" -> "/"): nothing ran
            assert not urlsplit(response.location).netloc.strip("localhost"), f"{what}: {response.location}"
        elif identity.account is None and response.status_code == 302:
            assert urlsplit(response.location).path == "/login", f"{what}: {response.location}"
        else:
            assert response.status_code in (400, 403, 404, 405, 413), f"{what}: {response.status_code}"
    changed = _changes(before, _state(app))
    assert not changed, f"{name}: requests the policy refuses changed {changed}: " + \
        "; ".join(str(a) for _, a in refused)[:3000]

    before = _state(app)
    for rule, attempt in permitted:
        response = _send(identity, attempt)
        what = f"{name} {attempt} ({rule.endpoint})"
        assert response.status_code < 500, f"{what}: {response.status_code}"
        after = _state(app)
        if _refused(attempt, response):
            changed = _changes(before, after)
            assert not changed, f"{what}: refused ({response.status_code}) but changed {changed}"
        _assert_blobs_whole(app, what)
        if response.status_code == 302 and urlsplit(response.location).path == "/login" \
                and identity.account is not None:
            identity = _keep_signed_in(app, make_account, identities, name)
            after = _state(app)
        before = after
    with app.app_context():
        assert audit.verify(db.session).ok, "the audit chain no longer verifies"
        db.session.remove()


@pytest.mark.parametrize("header", [b'name="a\rb"', b'filename="f.txt"'], ids=["name cut by a CR", "no name"])
def test_multipart_part_without_a_name_is_a_bad_request(app, client, header):
    # Found by the walk above: Flask-WTF's token lookup failed on such a part (500).
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            + csrf_token(client).encode() + b"\r\n--b0undary\r\nContent-Disposition: form-data; "
            + header + b"\r\n\r\nv\r\n--b0undary--\r\n")
    response = client.post("/login", data=body, content_type="multipart/form-data; boundary=b0undary")
    assert_error_page(app, response, 400, "multipart part without a name")
