"""Donor report benchmark: the full report over 100,000 synthetic cases, SQLite and PostgreSQL.

Data: the pages benchmark's SQLite database (bench/out/sqlite/), reused when it
holds --cases cases, else made the same way (`generate_cases(seed=4)`), then
given its deadline clocks by replaying each timeline through the deadlines
module (`rebuild_clocks`, batches of 2,000 cases; about 4.5 minutes for 100,000
on this shared machine, done once). PostgreSQL gets a copy of that data (same cases,
same clocks, same keys) in a database of its own, protect_bench_reports
(instance bench/out/postgresql-reports/), rather than a second replay: both
backends report on the same population, and the pages and load benchmarks'
protect_bench is left alone.

Measured, server-side through the Flask test client (in-process, no network),
signed in as a donor and as a supervisor, over every month the data covers:
the report page, the PDF, the CSV of one table and the JSON of all of them
(--rounds times after a warm-up; the median is reported, with the SQL
statements per request), each three ways: afresh (a period and selection
nobody asked for: its figures read from the report's copy of the data), kept
(the figures kept by an earlier look or the sweeper, in a process that has not
made the report yet) and again (made in this process already). Also the
report's copy of the data (protect/reports/facts.py) made from scratch, and
brought up to 100 cases with new events; and the sweeper making the default
reports ahead of the first look. Targets (issue 7): page <= 1 s, PDF <= 5 s.

    .venv/bin/python bench/reports.py                       # both backends
    .venv/bin/python bench/reports.py --backend sqlite --rounds 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pages import OUT, PG_ADMIN, SQLWatch, bench_app, generate, load, login, machine, pg_url, prepare_instance  # noqa: E402

CLOCK_BATCH = 2000
PG_DATABASE = "protect_bench_reports"
PG_INSTANCE = OUT / "postgresql-reports" / "instance"
TARGETS = {"page": 1.0, "pdf": 5.0}


# -- data ---------------------------------------------------------------------------

def counts(app) -> dict:
    from sqlalchemy import func, select

    from protect.cases.models import Case, CaseEvent
    from protect.deadlines.models import Clock
    from protect.extensions import db
    with app.app_context():
        found = {name: db.session.execute(select(func.count()).select_from(model)).scalar_one()
                 for name, model in (("cases", Case), ("events", CaseEvent), ("clocks", Clock))}
        db.engine.dispose()
    return found


def ensure_clocks(app) -> dict:
    """Clocks for every case that has none, by the deadlines module's own replay."""
    from protect.deadlines import service as deadlines
    from protect.extensions import db
    started, made = time.perf_counter(), 0
    with app.app_context():
        while True:
            batch = deadlines.rebuild_clocks(db.session, limit=CLOCK_BATCH)
            db.session.close()  # the identity map would otherwise hold every replayed event
            made += batch
            if batch < CLOCK_BATCH:
                break
            print(f"    clocks for {made:,} cases  {time.perf_counter() - started:6.0f} s", flush=True)
        db.engine.dispose()
    return {"cases_replayed": made, "seconds": time.perf_counter() - started}


def sqlite_data(n: int) -> tuple[Path, dict]:
    instance, _, reused = prepare_instance("sqlite", reuse=True)
    app = bench_app(str(instance))
    print(f"  sqlite: {n:,} cases ({'reusing' if reused else 'new database'})", flush=True)
    made = {"generator": generate(app, n, reused)}
    made["clocks"] = ensure_clocks(app)
    return instance, made


def copy_to_postgresql(source_instance: Path) -> None:
    """A fresh protect_bench_reports made by the migrations, then every table copied from SQLite."""
    import psycopg
    from flask_migrate import upgrade
    from psycopg.types.json import Json
    from sqlalchemy import JSON, Integer, create_engine, select

    from protect.extensions import db

    instance = PG_INSTANCE
    if instance.exists():
        shutil.rmtree(instance)
    instance.mkdir(parents=True)
    # Sealed columns and blind indexes stay readable: the same master keys.
    shutil.copytree(source_instance / "keys", instance / "keys")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    # No embedded sweeper (as in bench/pages.py): its sweeps would change the data mid-run.
    (instance / "config.toml").write_text(f'database_url = "{pg_url(PG_DATABASE)}"\n'
                                          f'secret_key = "{"b" * 40}"\nenv = "development"\n'
                                          'sweep_interval_seconds = 0\n')
    app = bench_app(str(instance))
    source = create_engine(f"sqlite:///{OUT / 'sqlite' / 'protect.db'}")
    with app.app_context():
        upgrade()
        tables = db.metadata.sorted_tables
        db.engine.dispose()
    with psycopg.connect(pg_url(PG_DATABASE)) as target, source.connect() as src:
        target.execute("SET session_replication_role = replica")  # rows arrive parents first anyway
        for table in reversed(tables):
            target.execute(f'DELETE FROM "{table.name}"')  # the migrations' seed rows come back from SQLite
        for table in tables:
            columns = [c.name for c in table.columns]
            json_at = [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]
            started, rows = time.perf_counter(), 0
            with target.cursor().copy(f'COPY "{table.name}" ({", ".join(columns)}) FROM STDIN') as copy:
                for row in src.execution_options(yield_per=20000).execute(select(table)):
                    row = list(row)
                    for i in json_at:
                        row[i] = None if row[i] is None else Json(row[i])
                    copy.write_row(row)
                    rows += 1
            key = list(table.primary_key.columns)
            if len(key) == 1 and isinstance(key[0].type, Integer):
                target.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                               f"COALESCE((SELECT max({key[0].name}) FROM \"{table.name}\"), 0) + 1, false)")
            print(f"    {table.name}: {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        target.commit()
    with psycopg.connect(pg_url(PG_DATABASE), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    source.dispose()


def postgresql_data(n: int, source_instance: Path) -> tuple[Path, dict]:
    import psycopg
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone()
    instance = PG_INSTANCE
    if exists and (instance / "config.toml").exists():
        from flask_migrate import upgrade

        from protect.extensions import db
        app = bench_app(str(instance))
        with app.app_context():
            upgrade()
            db.engine.dispose()
        have = counts(app)
        if have["cases"] >= n and have["clocks"]:
            print(f"  postgresql: reusing {have['cases']:,} cases", flush=True)
            return instance, {"copied": False}
    print("  postgresql: copying the SQLite data", flush=True)
    started = time.perf_counter()
    copy_to_postgresql(source_instance)
    return instance, {"copied": True, "seconds": time.perf_counter() - started}


# -- measuring ----------------------------------------------------------------------------

def donor_account(app) -> tuple[str, str]:
    """A donor of the demo pool (created once, with the pool's password)."""
    from protect.accounts import service as accounts
    from protect.cases import demo
    from protect.extensions import db
    email = "donor01@demo.protect.local"
    with app.app_context():
        if accounts.find_by_email(db.session, email) is None:
            accounts.create_user(db.session, None, email=email, role="donor", password=demo.POOL_PASSWORD)
            db.session.commit()
        db.engine.dispose()
    return email, demo.POOL_PASSWORD


def periods(app) -> dict[str, str]:
    """The query strings measured: every month the data covers, and the default twelve."""
    from sqlalchemy import func, select

    from protect.cases.models import Case
    from protect.deadlines.calendar import TZ
    from protect.extensions import db
    from protect.reports import service
    with app.app_context():
        first = db.session.execute(select(func.min(Case.submitted_at))).scalar_one().astimezone(TZ).date()
        last = service.previous_month(service.this_month())
        db.engine.dispose()
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    twelve = last
    for _ in range(11):
        twelve = service.previous_month(twelve)
    return {f"all {months} months": f"start={first:%Y-%m}&end={last:%Y-%m}",
            "last 12 months": f"start={twelve:%Y-%m}&end={last:%Y-%m}"}


# How a look finds its report (protect/reports/service.py, ``build``).
MODES = {
    "afresh": "a period and selection nobody asked for yet: the aggregates read from the report's copy of "
              "the data (current, as the sweeper keeps it), then kept",
    "kept": "the figures kept (by an earlier look or the sweeper), in a process that has not made "
            "the report yet (another worker, or after a restart)",
    "again": "the same report made in this process already (the PDF after the page)",
}


def forget(app, mode: str) -> None:
    from sqlalchemy import delete

    from protect.extensions import db
    from protect.reports.models import PreparedReport
    if mode == "afresh":
        with app.app_context():
            db.session.execute(delete(PreparedReport))
            db.session.commit()
    if mode in ("afresh", "kept") and "protect.reports" in app.extensions:
        app.extensions["protect.reports"].clear()


def timed(app, client, watch: SQLWatch, path: str, rounds: int, *, mode: str) -> dict:
    """Median server-side seconds of ``path``, its report found as ``mode`` says (``MODES``)."""
    response = client.get(path)  # warm-up: templates compiled, the database's pages cached
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code}")
    seconds, statements = [], []
    for _ in range(rounds):
        forget(app, mode)
        watch.reset()
        started = time.perf_counter()
        response = client.get(path)
        body = response.get_data()
        seconds.append(time.perf_counter() - started)
        statements.append(len(watch.statements))
    slowest = sorted(watch.statements, key=lambda s: -s[0])[:3]
    return {"path": path, "median_s": statistics.median(seconds), "runs_s": seconds, "bytes": len(body),
            "statements": statements[-1],
            "slowest": [(round(s * 1000, 1), " ".join(sql.split())[:160]) for s, sql, _ in slowest]}


def measure(instance: Path, rounds: int) -> list[dict]:
    from protect.cases import demo
    from protect.extensions import db
    app = bench_app(str(instance))
    donor = donor_account(app)
    with app.app_context():
        supervisor = next((e, s) for e, _, s in demo.pool_logins(db.session) if e == demo.SUPERVISORS[0])
        watch = SQLWatch(db.engine)
        db.engine.dispose()
    asked = periods(app)
    out = []
    for role, (email, secret) in (("donor", (donor[0], None)), ("supervisor", supervisor)):
        client = app.test_client()
        login(client, email, demo.POOL_PASSWORD, secret)
        for label, query in asked.items():
            row = {"viewer": role, "period": label}
            for what, path in (("page", f"/reports/?{query}"), ("pdf", f"/reports/report.pdf?{query}"),
                               ("csv", f"/reports/requests.csv?{query}"), ("json", f"/reports/report.json?{query}")):
                # (Afresh, a copy costs what the page does plus its own making: timed for the page.)
                for mode in MODES if what == "page" else ("kept", "again"):
                    key = f"{what} {mode}"
                    row[key] = timed(app, client, watch, path, rounds, mode=mode)
                    print(f"    {role:<10} {label:<16} {key:<10} {row[key]['median_s']:6.2f} s  "
                          f"({row[key]['statements']} statements)", flush=True)
            out.append(row)
    out[0]["refresh"] = refresh(app)
    out[0]["facts"] = facts(app)
    return out


def facts(app, changed: int = 100) -> dict:
    """The report's copy of the data made from scratch (as after the migration), then brought up
    to ``changed`` cases with a new event each (as a look or a sweep does: the cases' rows made
    again). The events are removed afterwards; the copy stays current."""
    from sqlalchemy import delete, select

    from protect.cases.models import Case, CaseEvent
    from protect.extensions import db, utcnow
    from protect.reports import facts as report_facts
    from protect.reports.models import FactsMark
    out = {}
    with app.app_context():
        db.session.execute(delete(FactsMark))
        db.session.commit()
        started = time.perf_counter()
        assert report_facts.refresh(db.session) == "all"
        out["all_s"] = time.perf_counter() - started
        cases = db.session.execute(select(Case.id).where(Case.submitted_at.is_not(None))
                                   .order_by(Case.id).limit(changed)).scalars().all()
        added = [CaseEvent(case_id=c, kind="note_added", at=utcnow(), data={}) for c in cases]
        db.session.add_all(added)
        db.session.flush()
        ids = [e.id for e in added]
        db.session.commit()
        started = time.perf_counter()
        assert report_facts.refresh(db.session) == "cases"
        out["cases_s"] = time.perf_counter() - started
        out["cases"] = len(cases)
        db.session.execute(delete(CaseEvent).where(CaseEvent.id.in_(ids)))
        db.session.commit()
        started = time.perf_counter()
        report_facts.refresh(db.session)
        out["current_s"] = time.perf_counter() - started
        db.engine.dispose()
    print(f"    facts: from scratch {out['all_s']:.1f} s; {changed} cases again {out['cases_s']:.2f} s; "
          f"current {out['current_s'] * 1000:.0f} ms", flush=True)
    return out


def refresh(app) -> dict:
    """The sweeper's part, timed: with nothing kept, it makes the donors' and the supervisors'
    default reports ahead of their first look (``service.refresh``, two reports here)."""
    from protect.extensions import db
    from protect.reports import service
    forget(app, "afresh")
    with app.app_context():
        started = time.perf_counter()
        made = service.refresh(db.session)
        seconds = time.perf_counter() - started
        db.engine.dispose()
    print(f"    sweeper: {made} default reports made in {seconds:.2f} s", flush=True)
    return {"made": made, "seconds": seconds}


def report(results: dict, made: dict, rounds: int) -> None:
    print("\n## reports — results\n")
    print(f"Machine: {machine()}.\n")
    print(f"Server-side seconds per request (Flask test client, in-process; median of {rounds} after a warm-up). "
          "How the look found its report:\n")
    for mode, meaning in MODES.items():
        print(f"- {mode}: {meaning}")
    print("\n| backend | viewer | period | page afresh | afresh / 1 s | page kept | page again "
          "| PDF kept | PDF / 5 s | PDF again | CSV kept | JSON kept | statements (afresh / kept) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for backend, rows in results.items():
        for r in rows:
            # The page's target is judged made afresh, the slowest way a look can find its report.
            page, pdf = r["page afresh"]["median_s"], r["pdf kept"]["median_s"]
            print(f"| {backend} | {r['viewer']} | {r['period']} | {page:.2f} | "
                  f"{page / TARGETS['page']:.2f}{'' if page <= TARGETS['page'] else ' **missed**'} | "
                  f"{r['page kept']['median_s']:.2f} | {r['page again']['median_s']:.2f} | {pdf:.2f} | "
                  f"{pdf / TARGETS['pdf']:.2f}{'' if pdf <= TARGETS['pdf'] else ' **missed**'} | "
                  f"{r['pdf again']['median_s']:.2f} | "
                  f"{r['csv kept']['median_s']:.2f} | {r['json kept']['median_s']:.2f} | "
                  f"{r['page afresh']['statements']} / {r['page kept']['statements']} |")
    print("\nThe report's copy of the data (protect/reports/facts.py): made from scratch (as after the "
          "migration, by the first sweep), brought up to 100 cases with new events, and checked when current:\n")
    for backend, rows in results.items():
        f = rows[0]["facts"]
        print(f"- {backend}: from scratch {f['all_s']:.1f} s; {f['cases']} cases again {f['cases_s']:.2f} s; "
              f"current {f['current_s'] * 1000:.0f} ms")
    print("\nThe sweeper making the default reports (the donors' and the supervisors') with nothing kept:\n")
    for backend, rows in results.items():
        print(f"- {backend}: {rows[0]['refresh']['made']} reports in {rows[0]['refresh']['seconds']:.2f} s")
    print("\nSlowest statements of the donor's page over every month, made afresh, ms:\n")
    for backend, rows in results.items():
        for ms, sql in rows[0]["page afresh"]["slowest"]:
            print(f"- {backend}: {ms} — `{sql}…`")
    print(f"\nData: {json.dumps(made, default=str)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=OUT / "reports.json")
    args = parser.parse_args()
    print(f"load average {load()}", flush=True)
    source, made = sqlite_data(args.cases)
    results = {}
    if args.backend in ("sqlite", "both"):
        print("== sqlite", flush=True)
        results["sqlite"] = measure(source, args.rounds)
    if args.backend in ("postgresql", "both"):
        instance, made["postgresql"] = postgresql_data(args.cases, source)
        print("== postgresql", flush=True)
        results["postgresql"] = measure(instance, args.rounds)
    made["load_after"] = load()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": results, "data": made}, indent=2, default=str))
    report(results, made, args.rounds)


if __name__ == "__main__":
    main()
