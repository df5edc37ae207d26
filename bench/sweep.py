"""Deadline sweep at scale: 10 k, 100 k and 1 M running clocks, SQLite and PostgreSQL.

For each backend and size, a fresh database is made by the migrations (SQLite
under bench/out/, PostgreSQL as database ``protect_bench_sweep`` on
127.0.0.1:5432, user postgres), then bulk-loaded with N cases, each assigned
to one of 20 caseworkers and holding one running triage clock due 2 h from
now (spread over 10 minutes). Then, timed with the real ``sweep()`` (commit
included, no e-mail server configured):

  idle        a sweep at "now": nothing is due, nothing changes (median of 5);
  move all    a sweep past every due time: N clocks go overdue, N notifications;
  idle after  the same moment again, at once: nothing changes (median of 5);
  vacuumed    the same after VACUUM ANALYZE / ANALYZE, which autovacuum runs on
              its own within about a minute of a change that large.

Before timing, the tables are analysed (ANALYZE; VACUUM ANALYZE on
PostgreSQL), as autovacuum would have done on a live database.

Targets (issue 5): 100 k in <= 2 s, growth close to linear, idle <= 100 ms.

Usage: .venv/bin/python bench/sweep.py [--sizes 10000,100000,1000000]
           [--backends sqlite,postgresql] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
           [--explain] [--keep] [--sqlite-cache-mb N] [--rounds 3] [--workers 1,2]

On PostgreSQL the sweep moves clocks in batches of 10,000 on --workers connections at
once (2 by default, as `flask protect sweep` does); "--workers 1,2" compares.

Each size up to 100 k is measured --rounds times, each on a fresh database
(the move is destructive), and the medians are shown; 1 M once.

--sqlite-cache-mb sets SQLite's page cache for the run (PRAGMA cache_size;
SQLite's default is 2 MB), to measure what a larger cache would change.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import event, insert, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from protect import create_app  # noqa: E402
from protect.accounts import service as accounts  # noqa: E402
from protect.cases.models import Case  # noqa: E402
from protect.deadlines import service as deadlines  # noqa: E402
from protect.deadlines.models import Clock, DeadlinePolicy  # noqa: E402
from protect.extensions import db, utcnow  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PG_DB = "protect_bench_sweep"
CHUNK = 50_000
CASEWORKERS = 20
IDLE_ROUNDS = 5
SQLITE_CACHE_MB = 0  # 0: SQLite's default (2 MB)


@event.listens_for(Engine, "connect")
def _sqlite_cache(dbapi_connection, _record):
    if SQLITE_CACHE_MB and type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_MB * 1024}")
        cursor.close()


def fresh_url(backend: str, pg_admin: str) -> str:
    if backend == "sqlite":
        OUT.mkdir(exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{OUT / 'sweep.db'}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{OUT / 'sweep.db'}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_DB}"')
    return re.sub(r"/[^/]*$", f"/{PG_DB}", pg_admin)


def make_app(url: str):
    return create_app({"instance_path": str(OUT / "instance"), "database_url": url, "env": "test",
                       "testing": True, "secret_key": secrets.token_urlsafe(32),
                       "argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1})


def analyse() -> None:
    """What autovacuum does on its own: fresh statistics (and dead rows cleared)."""
    if db.engine.dialect.name == "postgresql":
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("cases", "clocks", "notifications"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()


def load(n: int, now) -> None:
    """N cases (non-personal columns only) with one running clock each, in bulk."""
    caseworkers = []
    for i in range(CASEWORKERS):
        user, _ = accounts.create_user(db.session, None, email=f"cw{i}@bench.example", role="caseworker",
                                       password="bench password long enough", enrol_totp=False)
        caseworkers.append(user.id)
    for i in range(2):
        accounts.create_user(db.session, None, email=f"sup{i}@bench.example", role="supervisor",
                             password="bench password long enough", enrol_totp=False)
    db.session.commit()
    policy_id = db.session.execute(select(DeadlinePolicy.id).where(
        DeadlinePolicy.stage == "triage", DeadlinePolicy.version == 1)).scalar_one()
    started = now - timedelta(hours=1)
    case_cols = ("id", "reference", "status", "immediate_danger", "pseudonymous", "intake_step",
                 "assignee_id", "created_at", "submitted_at", "updated_at", "version")
    clock_cols = ("id", "case_id", "policy_id", "stage", "state", "started_at", "warn_at", "due_at",
                  "paused_seconds")
    postgres = db.engine.dialect.name == "postgresql"
    for start in range(0, n, CHUNK):
        cases, clocks = [], []
        for i in range(start, min(n, start + CHUNK)):
            case_id, clock_id = secrets.token_hex(16), secrets.token_hex(16)
            due = now + timedelta(hours=2, seconds=i % 600)
            cases.append((case_id, f"PRT-{i // 10000:04d}-{i % 10000:04d}", "triage", False, False, 5,
                          caseworkers[i % CASEWORKERS], started, started, started, 1))
            clocks.append((clock_id, case_id, policy_id, "triage", "running", started,
                           due - timedelta(minutes=45), due, 0))
        if postgres:
            raw = db.session.connection().connection.driver_connection
            with raw.cursor() as cur:
                for table, cols, rows in (("cases", case_cols, cases), ("clocks", clock_cols, clocks)):
                    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
        else:
            db.session.execute(insert(Case.__table__), [dict(zip(case_cols, r, strict=True)) for r in cases])
            db.session.execute(insert(Clock.__table__), [dict(zip(clock_cols, r, strict=True)) for r in clocks])
        db.session.commit()
    analyse()


def timed_sweep(at, workers: int = 1) -> tuple[float, deadlines.SweepResult]:
    db.session.remove()
    t = time.perf_counter()
    result = deadlines.sweep(db.session, at, workers=workers)
    return time.perf_counter() - t, result


def explain(at) -> None:
    """Print the plans of the sweep's queries for the minute before ``at`` (what an idle sweep costs)."""
    dialect = db.engine.dialect.name
    prefix = "EXPLAIN ANALYZE" if dialect == "postgresql" else "EXPLAIN QUERY PLAN"
    params = {"now": at, "since": at - timedelta(minutes=1), "late": at - timedelta(hours=1),
              "late_since": at - timedelta(hours=1, minutes=1)}
    if dialect == "sqlite":
        params = {k: v.replace(tzinfo=None).isoformat(" ") for k, v in params.items()}
    queries = {
        "overdue": "SELECT id FROM clocks WHERE state = 'running' AND due_at <= :now AND due_at > :since",
        "due soon": "SELECT id FROM clocks WHERE state = 'running' AND warn_at <= :now AND warn_at > :since "
                    "AND due_at > :now",
        "escalated": "SELECT id FROM clocks WHERE state = 'running' AND due_at <= :late AND due_at > :late_since",
    }
    for name, sql in queries.items():
        rows = db.session.execute(text(f"{prefix} {sql}"), params).all()
        print(f"  -- {name}")
        for row in rows:
            print("     " + " | ".join(str(v) for v in row))
    db.session.rollback()


def run(backend: str, n: int, pg_admin: str, show_plans: bool, workers: int) -> dict:
    app = make_app(fresh_url(backend, pg_admin))
    with app.app_context():
        from flask_migrate import upgrade
        upgrade()
        now = utcnow()
        t = time.perf_counter()
        load(n, now)
        loaded = time.perf_counter() - t
        move_at = now + timedelta(hours=2, minutes=10, seconds=1)   # past every due time
        idle = []
        for _ in range(IDLE_ROUNDS):
            seconds, result = timed_sweep(now, workers)
            assert result.overdue == result.due_soon == result.notifications == 0, result
            idle.append(seconds)
        if show_plans:
            print(f"\n[{backend}, {n:,} running clocks, idle]")
            explain(now)
        move, result = timed_sweep(move_at, workers)
        assert result.overdue == n and result.notifications == n and result.escalated == 0, result
        after = []
        for _ in range(IDLE_ROUNDS):
            seconds, again = timed_sweep(move_at, workers)
            assert again.overdue == again.notifications == again.escalated == 0, again
            after.append(seconds)
        if show_plans:
            print(f"\n[{backend}, {n:,} overdue clocks, idle after]")
            explain(move_at)
        db.session.remove()
        analyse()
        vacuumed = []
        for _ in range(IDLE_ROUNDS):
            seconds, again = timed_sweep(move_at, workers)
            assert again.overdue == again.notifications == again.escalated == 0, again
            vacuumed.append(seconds)
        if show_plans:
            print(f"\n[{backend}, {n:,} overdue clocks, idle after VACUUM ANALYZE]")
            explain(move_at)
        db.session.remove()
        db.engine.dispose()
    print(f"  {backend:<10} {n:>9,} ×{workers}: load {loaded:6.1f} s, idle {statistics.median(idle) * 1000:7.1f} ms, "
          f"move all {move:6.2f} s, idle after {statistics.median(after) * 1000:7.1f} ms, "
          f"vacuumed {statistics.median(vacuumed) * 1000:7.1f} ms", file=sys.stderr)
    return {"idle": statistics.median(idle), "move": move, "after": statistics.median(after),
            "vacuumed": statistics.median(vacuumed)}


def ratio(values: list[float], i: int) -> str:
    return "" if i == 0 else f" (×{values[i] / values[i - 1]:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default=os.environ.get("PROTECT_TEST_PG",
                                                       "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--explain", action="store_true", help="print the claim queries' plans")
    parser.add_argument("--keep", action="store_true", help="keep the last databases afterwards")
    parser.add_argument("--sqlite-cache-mb", type=int, default=0, help="SQLite page cache (default: 2 MB)")
    parser.add_argument("--workers", default="2",
                        help="PostgreSQL: the sweep's connections, a comma list to compare (default 2, "
                             "as `flask protect sweep` runs; SQLite always sweeps on one)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh runs per size up to 100 k (medians)")
    args = parser.parse_args()
    global SQLITE_CACHE_MB
    SQLITE_CACHE_MB = args.sqlite_cache_mb
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    results = {}
    for backend in backends:
        for workers in [int(w) for w in args.workers.split(",")] if backend == "postgresql" else [1]:
            label = f"{backend}, {workers} connection{'s' if workers > 1 else ''}" if backend == "postgresql" \
                else backend
            results[label] = []
            for n in sizes:
                rounds = [run(backend, n, args.pg, args.explain and i == 0, workers)
                          for i in range(args.rounds if n <= 100_000 else 1)]
                results[label].append({k: statistics.median(r[k] for r in rounds) for k in rounds[0]})
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{OUT / 'sweep.db'}{suffix}").unlink(missing_ok=True)
        if "postgresql" in backends:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')

    cache = f", SQLite cache {SQLITE_CACHE_MB} MB" if SQLITE_CACHE_MB else ""
    print(f"\nSweep, {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}{cache}; "
          f"ratios are to the size before (linear = ×10)\n")
    print("| backend | clocks | idle sweep (all running) | sweep moving all to overdue "
          "| idle sweep right after | idle sweep after autovacuum |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend, rows in results.items():
        idle, move, after, vacuumed = ([r[k] for r in rows] for k in ("idle", "move", "after", "vacuumed"))
        for i, n in enumerate(sizes):
            print(f"| {backend} | {n:,} | {idle[i] * 1000:.1f} ms{ratio(idle, i)} | "
                  f"{move[i]:.2f} s{ratio(move, i)} | {after[i] * 1000:.1f} ms{ratio(after, i)} | "
                  f"{vacuumed[i] * 1000:.1f} ms{ratio(vacuumed, i)} |")
    print("\nTargets: 100 k moved in <= 2 s, growth close to linear, idle sweep <= 100 ms.")


if __name__ == "__main__":
    main()
