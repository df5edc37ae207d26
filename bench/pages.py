"""Page benchmark: the caseworker queue, a case page and the journalist home
over 100,000 synthetic cases (about a million events), on SQLite and PostgreSQL.

For each backend it
  1. makes (or, with --reuse, keeps) a database of --cases synthetic cases with
     `protect.cases.demo.generate_cases`, timing the generator (cases/s);
     SQLite in bench/out/sqlite/, PostgreSQL in a database of its own
     (protect_bench, dropped and created by this script; `--drop` drops it at the end);
  2. signs a caseworker (with ~5,000 cases, a twentieth of them), a supervisor and a
     journalist with a few requests in through the real login forms (TOTP via pyotp);
  3. times each page server-side (Flask test client, in-process: no network),
     --requests times after a warm-up, and prints p50/p95/max and the SQL
     statements per request, with the slowest statements of each page and their plan;
  4. runs gunicorn on loopback (--workers sync-free gthread workers) and `wrk`
     against the queue page (signed in, with the session cookie) and against a
     hello-world endpoint of the same app under the same settings; prints
     requests/s and the ratio queue/hello.

The hello-world endpoint exists only in this benchmark's app wrapper (`bench_app`),
never in the product. Targets (issue 4): p95 <= 50 ms; queue/hello >= 0.25.

    .venv/bin/python bench/pages.py                      # both backends, 100,000 cases
    .venv/bin/python bench/pages.py --backend sqlite --reuse --no-wrk
    .venv/bin/python bench/pages.py --cases 20000 --requests 50 --wrk-seconds 5

Needs `wrk` (Debian: apt-get install wrk) for step 4; the test suite does not.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
PG_ADMIN = os.environ.get("PROTECT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "protect_bench"
HELLO_PUBLIC = "/_bench/hello"
HELLO_SIGNED = "/_bench/hello-signed-in"


# -- the app under test ----------------------------------------------------------

def bench_app(instance_path: str | None = None):
    """protect's app plus two hello-world endpoints, for the benchmark only.

    ``/_bench/hello`` is public (no session is loaded); ``/_bench/hello-signed-in``
    needs a signed-in user (the session and account are loaded as for any page).
    gunicorn calls this as ``bench.pages:bench_app()`` with PROTECT_INSTANCE_PATH set.
    """
    from flask import Blueprint

    from protect import create_app
    from protect.security.access import Who

    app = create_app({"instance_path": instance_path} if instance_path else None)
    bp = Blueprint("benchhello", __name__)

    @bp.route(HELLO_PUBLIC)
    def hello():
        return "hello, world"

    @bp.route(HELLO_SIGNED)
    def hello_signed_in():
        return "hello, world"

    # This app's own access table (the product's POLICY is left alone).
    app.extensions["protect.policy"].update({"benchhello.hello": Who.PUBLIC,
                                             "benchhello.hello_signed_in": Who.SIGNED_IN})
    app.register_blueprint(bp)
    return app


# -- databases ----------------------------------------------------------------------

def pg_url(database: str) -> str:
    return re.sub(r"/[^/]*$", f"/{database}", PG_ADMIN)


def prepare_instance(backend: str, reuse: bool) -> tuple[Path, str, bool]:
    """The instance directory and database URL of ``backend``; whether the data is reused."""
    instance = OUT / backend / "instance"
    instance.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        db_file = OUT / backend / "protect.db"
        url = f"sqlite:///{db_file}"
        reused = reuse and db_file.exists()
        if not reused:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg
        url = pg_url(PG_DATABASE)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone()
            reused = reuse and exists is not None
            if not reused:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    config = instance / "config.toml"
    secret = None
    if config.exists():
        match = re.search(r'^secret_key = "([^"]+)"', config.read_text(), re.M)
        secret = match and match.group(1)
    # No embedded sweeper: its minutely sweep of 100,000 cases would land in some
    # timings and not others (in every gunicorn worker too).
    config.write_text(f'database_url = "{url}"\nsecret_key = "{secret or secrets.token_urlsafe(32)}"\n'
                      'env = "development"\nsweep_interval_seconds = 0\n')
    return instance, url, reused


def drop_pg() -> None:
    import psycopg
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


def children_cpu() -> float:
    """CPU seconds of finished child processes (the generator's writer process)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generate(app, n: int, reused: bool) -> dict:
    from flask_migrate import upgrade
    from sqlalchemy import func, select, text

    from protect.cases import demo
    from protect.cases.models import CaseEvent
    from protect.extensions import db

    with app.app_context():
        upgrade()
        have = demo.count_cases(db.session)
        missing = max(0, n - have)
        result = {"reused": have if reused else 0, "generated": missing}
        if missing:
            started, cpu, child_cpu = time.perf_counter(), time.process_time(), children_cpu()

            def progress(done, total, seconds):
                print(f"    {done:>7}/{total} cases  {seconds:6.1f} s", flush=True)

            demo.generate_cases(db.session, missing, seed=4, progress=progress)
            seconds = time.perf_counter() - started
            result.update(seconds=seconds, cases_per_s=missing / seconds,
                          client_cpu_s=time.process_time() - cpu, writer_cpu_s=children_cpu() - child_cpu)
        else:
            demo.ensure_pools(db.session)
        result["cases"] = demo.count_cases(db.session)
        result["events"] = db.session.execute(select(func.count()).select_from(CaseEvent)).scalar_one()
        db.session.commit()
        # What `flask protect demo` does after a bulk load (ANALYZE), and on PostgreSQL what
        # autovacuum does soon after one (statistics, and the visibility map that index-only
        # scans need).
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        else:
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        db.engine.dispose()
    return result


# -- people and pages -------------------------------------------------------------------

def pick_people(app) -> dict:
    """A caseworker with a twentieth of the cases (~5,000), a supervisor, a journalist with a few requests,
    and two cases of that caseworker (the longest timeline and a typical one)."""
    from sqlalchemy import func, select

    from protect.cases import demo
    from protect.cases.models import Case, CaseEvent
    from protect.extensions import db

    with app.app_context():
        s = db.session
        logins = {email: secret for email, _, secret in demo.pool_logins(s)}
        ids = demo._existing(s, demo.CASEWORKERS + demo.SUPERVISORS + demo.JOURNALISTS)
        by_id = {v: k for k, v in ids.items()}
        loads = s.execute(select(Case.assignee_id, func.count())
                          .where(Case.assignee_id.in_([ids[e] for e in demo.CASEWORKERS]))
                          .group_by(Case.assignee_id)).all()
        total = sum(n for _, n in loads)
        cw_id, cw_cases = min(loads, key=lambda row: (abs(row[1] - total / 20), row[0]))  # ~5,000 of 100,000
        counts = s.execute(select(Case.petitioner_id, func.count())
                           .where(Case.petitioner_id.in_([ids[e] for e in demo.JOURNALISTS]))
                           .group_by(Case.petitioner_id)).all()
        j_id, j_cases = min(counts, key=lambda row: (abs(row[1] - 4), row[0]))
        per_case = (select(CaseEvent.case_id, func.count().label("n")).join(Case, Case.id == CaseEvent.case_id)
                    .where(Case.assignee_id == cw_id).group_by(CaseEvent.case_id).subquery())
        longest = s.execute(select(per_case.c.case_id, per_case.c.n).order_by(per_case.c.n.desc(),
                                                                             per_case.c.case_id).limit(1)).one()
        typical_n = s.execute(select(func.count()).select_from(CaseEvent).join(Case, Case.id == CaseEvent.case_id)
                              .where(Case.assignee_id == cw_id)).scalar_one() // cw_cases
        typical = s.execute(select(per_case.c.case_id, per_case.c.n).where(per_case.c.n == typical_n)
                            .order_by(per_case.c.case_id).limit(1)).one()
        open_cases = s.execute(select(func.count()).select_from(Case).where(
            Case.assignee_id == cw_id, Case.status.in_(("received", "triage", "urgent_measures", "risk_assessment",
                                                        "board_decision", "implementation", "active", "review",
                                                        "appeal")))).scalar_one()
        db.engine.dispose()
    cw_email, sup_email = by_id[cw_id], demo.SUPERVISORS[0]
    return {
        "caseworker": {"email": cw_email, "secret": logins[cw_email], "cases": cw_cases, "open": open_cases},
        "supervisor": {"email": sup_email, "secret": logins[sup_email]},
        "journalist": {"email": by_id[j_id], "secret": None, "cases": j_cases},
        "case_long": {"id": longest[0], "events": longest[1]},
        "case_typical": {"id": typical[0], "events": typical[1]},
    }


def login(client, email: str, password: str, secret: str | None) -> None:
    import pyotp

    def token(path):
        page = client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or \
            re.search(r'name="csrf_token" value="([^"]+)"', page)
        if not match:
            raise SystemExit(f"no CSRF token on {path}")
        return match.group(1)

    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token("/login")})
    if secret and response.status_code == 302 and "/login/code" in response.location:
        for attempt in range(2):
            response = client.post("/login/code", data={"code": pyotp.TOTP(secret).now(),
                                                        "csrf_token": token("/login/code")})
            if response.status_code != 401 or attempt:
                break
            # A code is accepted once: a sign-in in the same 30 s (an earlier run) used it.
            time.sleep(30.5 - time.time() % 30)
    if response.status_code != 302 or "/login" in (response.location or ""):
        raise SystemExit(f"could not sign {email} in: {response.status_code} {response.location}")


class SQLWatch:
    """Counts and times the statements of each request (a listener on the engine)."""

    def __init__(self, engine):
        from sqlalchemy import event
        self.statements: list[tuple[float, str, object]] = []
        self._start = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._start[id(cursor)] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        started = self._start.pop(id(cursor), None)
        if started is not None:
            self.statements.append((time.perf_counter() - started, statement, parameters))

    def reset(self):
        self.statements = []


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def time_page(client, watch: SQLWatch, path: str, n: int, before=lambda: None) -> dict:
    for _ in range(max(5, n // 20)):  # warm-up: templates compiled, caches filled
        before()
        client.get(path)
    times, codes = [], set()
    watch.reset()
    last = 0
    # CPU time of this process (SQLite's work included, not PostgreSQL's): on a shared
    # machine it moves less than wall time when other work takes the cores.
    cpu = time.process_time()
    for _ in range(n):
        before()
        last = len(watch.statements)
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        codes.add(response.status_code)
        response.close()
    cpu_ms = (time.process_time() - cpu) / n * 1000
    per_request = len(watch.statements) / n
    sql_ms = sum(seconds for seconds, _, _ in watch.statements) / n * 1000
    # The slowest statements (by mean time) of this page.
    by_sql: dict[str, list] = {}
    for seconds, sql, params in watch.statements:
        entry = by_sql.setdefault(sql, [0.0, 0, params])
        entry[0] += seconds
        entry[1] += 1
    slowest = sorted(((total / count * 1000, count / n, sql, params)
                      for sql, (total, count, params) in by_sql.items()), reverse=True)[:3]
    return {"path": path, "min": min(times), "p50": percentile(times, 0.5), "p95": percentile(times, 0.95),
            "max": max(times), "mean": statistics.fmean(times), "cpu_ms": cpu_ms, "codes": sorted(codes),
            "queries": per_request, "sql_ms": sql_ms, "slowest": slowest,
            "sample": [(sql, params) for _, sql, params in watch.statements[last:]]}


def explain(app, sql: str, params) -> str:
    """The plan of one statement as the page ran it (PostgreSQL: with actual times)."""
    from protect.extensions import db
    with app.app_context():
        dialect = db.engine.dialect.name
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if dialect == "postgresql":
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            rows = cursor.fetchall()
            raw.rollback()
        finally:
            raw.close()
    if dialect == "postgresql":
        return "\n".join(r[0] for r in rows)
    return "\n".join(r[-1] for r in rows)


# Indexes the queue could use, tried in a transaction that is rolled back (those that
# helped, `ix_cases_priority` and the id in `ix_cases_assignee_status`, are migrations 0006
# and 0009 now).
WHAT_IF: dict[str, list[str]] = {
    "as migrated": [],
}


def what_if(app, pages: list[dict]) -> list[tuple[str, str, str, float]]:
    """Best-of-5 time of the queue's two statements on ``cases`` under each WHAT_IF candidate."""
    from protect.extensions import db

    statements = []
    for page in pages:
        if page["path"] != "/queue":
            continue
        for sql, params in page["sample"]:
            if "FROM cases" in sql and ("count(" in sql.lower() or "ORDER BY" in sql):
                kind = "count" if "count(" in sql.lower() else "page of 50"
                statements.append((page["label"], kind, sql, params))
    out = []
    with app.app_context():
        sqlite = db.engine.dialect.name == "sqlite"
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for name, ddl in WHAT_IF.items():
                if sqlite:
                    cursor.execute("BEGIN")
                for statement in ddl:
                    cursor.execute(statement)
                for label, kind, sql, params in statements:
                    best = float("inf")
                    for _ in range(5):
                        started = time.perf_counter()
                        cursor.execute(sql, params)
                        cursor.fetchall()
                        best = min(best, time.perf_counter() - started)
                    out.append((name, label, kind, best * 1000))
                raw.rollback()
        finally:
            raw.close()
        db.engine.dispose()
    return out


def measure_pages(app, people: dict, requests: int, password: str) -> tuple[list, dict, list]:
    from protect.extensions import db

    with app.app_context():
        watch = SQLWatch(db.engine)
    clients = {}
    for role in ("caseworker", "supervisor", "journalist"):
        client = app.test_client()
        login(client, people[role]["email"], password, people[role]["secret"])
        clients[role] = client
    # The queue keeps its rendered list while nothing it shows changes (cases.views.Listings):
    # timed as kept (someone looking again) and made afresh (after any change to a case).
    listings = app.extensions["protect.listings"]
    pages = [
        ("caseworker queue (default filters), list kept", "caseworker", "/queue"),
        ("caseworker queue (default filters), list afresh", "caseworker", "/queue", listings.clear),
        ("supervisor queue (all cases), list kept", "supervisor", "/queue"),
        ("supervisor queue (all cases), list afresh", "supervisor", "/queue", listings.clear),
        (f"case page, {people['case_typical']['events']} events", "caseworker",
         f"/cases/{people['case_typical']['id']}"),
        (f"case page, {people['case_long']['events']} events (longest)", "caseworker",
         f"/cases/{people['case_long']['id']}"),
        (f"journalist home ({people['journalist']['cases']} requests)", "journalist", "/my/requests"),
        ("hello world (same app, public)", "caseworker", HELLO_PUBLIC),
    ]
    results = []
    for label, role, path, *before in pages:
        result = time_page(clients[role], watch, path, requests, *before)
        result.update(label=label, role=role)
        results.append(result)
        print(f"    {label:<50} p50 {result['p50']:6.1f} ms  p95 {result['p95']:6.1f} ms  "
              f"CPU {result['cpu_ms']:5.1f} ms  {result['queries']:.0f} SQL ({result['sql_ms']:.1f} ms)  "
              f"HTTP {result['codes']}", flush=True)
    plans = []
    for result in results:
        if result["path"] == HELLO_PUBLIC or not result["slowest"]:
            continue
        ms, per, sql, params = result["slowest"][0]
        try:
            plan = explain(app, sql, params)
        except Exception as exc:  # a plan is a bonus: never fail the run for it
            plan = f"(no plan: {exc.__class__.__name__})"
        plans.append((result["label"], ms, sql, plan))
    cookies = {role: client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
               for role, client in clients.items()}
    with app.app_context():
        db.engine.dispose()
    return results, cookies, plans


# -- gunicorn and wrk -------------------------------------------------------------------

def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_wrk(instance: Path, cookie: str, seconds: int, workers: int, threads: int,
            connections: int) -> list[dict]:
    wrk = shutil.which("wrk")
    if not wrk:
        print("    wrk not found (apt-get install wrk): skipped")
        return []
    port = free_port()
    env = dict(os.environ, PROTECT_INSTANCE_PATH=str(instance), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--worker-class", "gthread", "--threads", str(threads), "--access-logfile", "/dev/null",
           "--error-logfile", str(OUT / "gunicorn.log"), "--chdir", str(ROOT), "bench.pages:bench_app()"]
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    results = []
    try:
        import urllib.request
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + HELLO_PUBLIC, timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit(f"gunicorn did not start (see {OUT / 'gunicorn.log'})") from None
                time.sleep(0.3)
        header = f"Cookie: protect_session={cookie}"
        for label, path, with_cookie in (("queue (caseworker)", "/queue", True),
                                          ("hello world, public", HELLO_PUBLIC, False),
                                          ("hello world, signed in", HELLO_SIGNED, True)):
            args = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
            if with_cookie:
                args += ["-H", header]
            # a short warm-up of every worker, then the measured run
            subprocess.run(args[:3] + ["-d2s"] + args[5:] + [base + path], capture_output=True, timeout=30)
            out = subprocess.run(args + [base + path], capture_output=True, text=True,
                                 timeout=seconds + 30).stdout
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            p50 = re.search(r"50%\s+([\d.]+\w+)", out)
            p99 = re.search(r"99%\s+([\d.]+\w+)", out)
            results.append({"label": label, "path": path, "rps": rps,
                            "non2xx": int(non2xx.group(1)) if non2xx else 0,
                            "p50": p50.group(1) if p50 else "?", "p99": p99.group(1) if p99 else "?"})
            print(f"    wrk {label:<26} {rps:8.1f} req/s  (latency p50 {results[-1]['p50']}, "
                  f"p99 {results[-1]['p99']}; non-2xx {results[-1]['non2xx']})", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return results


# -- reporting -----------------------------------------------------------------------------

def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import sqlite3
    pg = "?"
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(all_results: dict, args) -> None:
    print("\n## pages — results\n")
    print(f"Machine: {machine()}.\n")
    print("### Generator (`generate_cases`)\n")
    print("| backend | cases | events | generated | seconds | cases/s | CPU s: generating process "
          "+ writer process | load average before → after |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for backend, r in all_results.items():
        g = r["generator"]
        if g.get("generated"):
            print(f"| {backend} | {g['cases']:,} | {g['events']:,} | {g['generated']:,} | {g['seconds']:.1f} | "
                  f"{g['cases_per_s']:,.0f} | {g['client_cpu_s']:.1f} + {g['writer_cpu_s']:.1f} | "
                  f"{r['load_before']} → {r['load_after_gen']} |")
        else:
            print(f"| {backend} | {g['cases']:,} | {g['events']:,} | reused | | | | |")
    print(f"\n### Server-side time per page ({args.requests} requests each, in-process test client)\n")
    print("| backend | page | p50 ms | p95 ms | max ms | CPU ms (mean, this process) | SQL statements "
          "| of which in SQL, ms (mean) | HTTP | p95 ≤ 50 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for backend, r in all_results.items():
        for p in r["pages"]:
            ok = "yes" if p["p95"] <= 50 else "**no**"
            print(f"| {backend} | {p['label']} | {p['p50']:.1f} | {p['p95']:.1f} | {p['max']:.1f} | "
                  f"{p['cpu_ms']:.1f} | {p['queries']:.0f} | {p['sql_ms']:.1f} | "
                  f"{','.join(map(str, p['codes']))} | {ok} |")
    if any(r.get("wrk") for r in all_results.values()):
        print(f"\n### wrk against gunicorn on loopback ({args.workers} gthread workers × {args.threads} "
              f"threads; wrk {args.connections} connections, {args.wrk_seconds} s)\n")
        print("| backend | endpoint | req/s | latency p50 | p99 | non-2xx |")
        print("|---|---|---:|---:|---:|---:|")
        for backend, r in all_results.items():
            for w in r.get("wrk", []):
                print(f"| {backend} | {w['label']} | {w['rps']:.0f} | {w['p50']} | {w['p99']} | {w['non2xx']} |")
        print("\n| backend | queue / hello (public) | queue / hello (signed in) | target ≥ 0.25 |")
        print("|---|---:|---:|---|")
        for backend, r in all_results.items():
            w = {x["path"]: x["rps"] for x in r.get("wrk", [])}
            if w:
                ratio = w["/queue"] / w[HELLO_PUBLIC]
                print(f"| {backend} | {ratio:.2f} | {w['/queue'] / w[HELLO_SIGNED]:.2f} | "
                      f"{'yes' if ratio >= 0.25 else '**no**'} |")
    print("\n### The queue's statements with candidate indexes (ms, best of 5; created in a "
          "transaction and rolled back)\n")
    for backend, r in all_results.items():
        rows = r.get("what_if") or []
        columns = list(dict.fromkeys((label, kind) for _, label, kind, _ in rows))
        if not columns:
            continue
        print(f"| {backend} | " + " | ".join(f"{label}: {kind}" for label, kind in columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for name in WHAT_IF:
            cells = {(label, kind): ms for n, label, kind, ms in rows if n == name}
            print(f"| {name} | " + " | ".join(f"{cells[c]:.1f}" for c in columns) + " |")
        print()
    print("\n### Slowest statement of each page\n")
    for backend, r in all_results.items():
        for label, ms, sql, plan in r["plans"]:
            one_line = " ".join(sql.split())
            print(f"- {backend}, {label}: {ms:.1f} ms — `{one_line[:400]}`")
            print("  ```\n  " + plan.replace("\n", "\n  ") + "\n  ```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true", help="keep an existing benchmark database (topped up to --cases)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-wrk", action="store_true")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--drop", action="store_true", help="drop the PostgreSQL database at the end")
    parser.add_argument("--pg-copy", action="store_true",
                        help="PostgreSQL: measure bench/reports.py's copy of the SQLite data (its deadline "
                             "clocks included) instead of generating")
    parser.add_argument("--json", type=Path, default=OUT / "pages.json")
    args = parser.parse_args()
    from protect.cases import demo

    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    all_results = {}
    for backend in backends:
        print(f"== {backend}", flush=True)
        if backend == "postgresql" and args.pg_copy:
            from bench import reports
            instance, reused = reports.PG_INSTANCE, True
        else:
            instance, _, reused = prepare_instance(backend, args.reuse)
        result = {"load_before": load()}
        app = bench_app(str(instance))
        print(f"  generating {args.cases:,} cases ({'reusing' if reused else 'new database'})", flush=True)
        result["generator"] = generate(app, args.cases, reused)
        result["load_after_gen"] = load()
        g = result["generator"]
        if g.get("generated"):
            print(f"  {g['generated']:,} cases in {g['seconds']:.1f} s = {g['cases_per_s']:,.0f} cases/s "
                  f"({g['events']:,} events in the database)", flush=True)
        people = pick_people(app)
        result["people"] = {k: {kk: vv for kk, vv in v.items() if kk != "secret"} for k, v in people.items()}
        print(f"  caseworker {people['caseworker']['email']} ({people['caseworker']['cases']} cases, "
              f"{people['caseworker']['open']} open); journalist {people['journalist']['email']} "
              f"({people['journalist']['cases']} requests)", flush=True)
        app = bench_app(str(instance))  # a fresh app: nothing cached from the generation
        result["pages"], cookies, result["plans"] = measure_pages(app, people, args.requests, demo.POOL_PASSWORD)
        result["what_if"] = what_if(app, result["pages"])
        for page in result["pages"]:
            page.pop("sample", None)
        if not args.no_wrk:
            result["wrk"] = run_wrk(instance, cookies["caseworker"], args.wrk_seconds, args.workers,
                                    args.threads, args.connections)
        result["load_after"] = load()
        all_results[backend] = result
        if backend == "postgresql" and args.drop:
            drop_pg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(all_results, indent=2, default=str))
    report(all_results, args)


if __name__ == "__main__":
    main()
