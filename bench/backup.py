"""Backup and restore of the 100,000-case PostgreSQL instance, timed as an operator runs them.

  1. takes the PostgreSQL instance of bench/pages.py (database protect_bench, instance in
     bench/out/postgresql/): upgrades it with the migrations, and builds it with the demo
     generator when absent (or tops it up to --cases);
  2. runs `flask protect backup DEST -r age1…` in a subprocess (a new age key of its own) and
     times it; prints the size of each part;
  3. runs `flask protect restore DEST -i key.txt` into a new, empty database
     (protect_bench_restore) and a new instance directory, and times it;
  4. checks the copy: the same number of rows in every table, the same audit chain head, and
     (printed by restore) the whole audit chain verified.

    .venv/bin/python bench/backup.py            # 100,000 cases
    .venv/bin/python bench/backup.py --keep     # leave the backup and the restored database

The restored database and the backup are removed at the end unless --keep; protect_bench is kept
(bench/pages.py and bench/load.py use it too).
"""
from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pages  # noqa: E402  (bench/pages.py: the instance and its generator)

OUT = ROOT / "bench" / "out" / "backup"
RESTORE_DATABASE = "protect_bench_restore"


def flask(instance: Path, *args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTECT_")}
    env.update(FLASK_APP="app", PROTECT_INSTANCE_PATH=str(instance))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flask", "protect", *args], cwd=ROOT, env=env,  # noqa: S603
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"flask protect {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def table_counts(url: str) -> dict[str, int]:
    import psycopg
    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # noqa: S608


def audit_head(url: str) -> str:
    import psycopg
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()[0]


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    import psycopg

    from protect import create_app
    from protect.crypto import agefile

    instance, url, reused = pages.prepare_instance("postgresql", reuse=True)
    print(f"instance {instance} ({'reused' if reused else 'new'}); migrating, topping up to {args.cases} cases")
    made = pages.generate(create_app({"instance_path": str(instance)}), args.cases, reused)
    print(f"  {made}")

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    identity, recipient = agefile.generate_identity()
    key_file = OUT / "key.txt"
    key_file.write_text(identity + "\n")
    dest = OUT / "backup"
    load = os.getloadavg()[0]
    backup_s, out = flask(instance, "backup", str(dest), "--recipient", recipient)
    print(out.strip())
    parts = {p.name: p.stat().st_size for p in dest.glob("*.age")}
    blobs = size(dest / "blobs") if (dest / "blobs").exists() else 0

    target_url = pages.pg_url(RESTORE_DATABASE)
    with psycopg.connect(pages.PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{RESTORE_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{RESTORE_DATABASE}"')
    target = OUT / "restored" / "instance"
    target.mkdir(parents=True)
    (target / "config.toml").write_text(f'database_url = "{target_url}"\nsecret_key = '
                                        f'"{secrets.token_urlsafe(32)}"\nenv = "development"\n')
    try:
        restore_s, out = flask(target, "restore", str(dest), "--identity", str(key_file))
        print(out.strip())
        source_counts, restored_counts = table_counts(url), table_counts(target_url)
        differ = {t: (n, restored_counts.get(t)) for t, n in source_counts.items() if restored_counts.get(t) != n}
        same_head = audit_head(url) == audit_head(target_url)
    finally:
        if not args.keep:
            with psycopg.connect(pages.PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{RESTORE_DATABASE}" WITH (FORCE)')
            shutil.rmtree(OUT, ignore_errors=True)

    with psycopg.connect(url) as conn:
        db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    rows = sum(source_counts.values())
    print()
    pg_dump = subprocess.run([shutil.which("pg_dump") or "pg_dump", "--version"],  # noqa: S603
                             capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at start {load:.1f}; {pg_dump}")
    print(f"data: {source_counts.get('cases', 0):,} cases, {rows:,} rows in {len(source_counts)} tables, "
          f"database {db_size / 2**20:,.0f} MiB on disk, blobs {blobs / 2**20:,.1f} MiB")
    print("| step | seconds | output |")
    print("|---|---:|---|")
    print(f"| backup (pg_dump → gzip → age, blobs copied) | {backup_s:.1f} | "
          + ", ".join(f"{name} {n / 2**20:,.1f} MiB" for name, n in sorted(parts.items())) + " |")
    print(f"| restore (verify checksums, blobs, psql in one transaction, audit chain) | {restore_s:.1f} | "
          f"{rows:,} rows |")
    print(f"every table has its rows back: {not differ}{'' if not differ else f' {differ}'}; "
          f"audit chain head identical: {same_head}")
    if differ or not same_head:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
