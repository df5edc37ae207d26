"""Load: a mixed workload of --users concurrent people for --seconds against
gunicorn on PostgreSQL with 100,000 cases, driven by locust (issue 8).

    .venv/bin/python bench/load.py                       # 100 users, 60 s
    .venv/bin/python bench/load.py --users 20 --seconds 15 --workers 2

1. Takes bench/pages.py's PostgreSQL instance (database protect_bench,
   bench/out/postgresql/instance), upgraded to the latest migration and
   topped up to --cases synthetic cases (made by bench/pages.py's generator
   when missing), and readies the people: pool journalists each with an armed
   vault, donors, and the pool's caseworkers and supervisors.
2. Starts gunicorn (--workers gthread workers × --threads threads) on
   127.0.0.1, signs the staff in (TOTP codes are good once, so each account
   signs in here, once), and runs the sweeper as one `flask protect sweep
   --every N` process (N = --sweep-every seconds).
3. Runs locust headless with bench/load/locustfile.py: journalists send
   requests (five steps, a 20 KiB evidence file), follow them and check in at
   their vaults; caseworkers browse their queue and cases and take and triage
   new requests; supervisors read the deadline overview, the queue and the
   report; donors open the report.
4. Prints requests/s, p50/p95/p99 per kind of request, status counts and
   errors, and the sweeper's runs; then checks that everything the app
   acknowledged is in the database: each sent request with its incident and
   its evidence (the blob decrypted, its size checked), each check-in, each
   triage. Exits non-zero if anything acknowledged is missing.

Targets: zero 5xx, p99 <= 500 ms for page views (GET). Results also go to
bench/out/load.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pyotp
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pages import OUT, free_port, generate, load, machine, percentile, prepare_instance  # noqa: E402

LOCUSTFILE = ROOT / "bench" / "load" / "locustfile.py"
PIN, DURESS_PIN = "482916", "739105"
DONOR_PASSWORD = "Load test donor 2026 protect"
TOKEN_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


# -- people -------------------------------------------------------------------------------

def ready_people(app, journalists: int, donors: int) -> dict:
    """Pool journalists with an armed vault each, donor accounts, and the staff pool's logins."""
    from sqlalchemy import select

    from protect.accounts import service as accounts
    from protect.accounts.models import User
    from protect.cases import demo
    from protect.extensions import db
    from protect.vault import service as vaults
    from protect.vault.models import Vault

    with app.app_context():
        s = db.session
        ids = demo._existing(s, demo.JOURNALISTS[:journalists])
        people = {"journalists": [], "donors": [], "staff": []}
        for email, user_id in ids.items():
            vault = s.execute(select(Vault).where(Vault.owner_id == user_id, Vault.state == "armed")
                              .limit(1)).scalar_one_or_none()
            if vault is None:
                owner = s.get(User, user_id)
                vault = vaults.create_vault(s, owner, "Investigación en curso")
                vaults.set_pins(s, owner, vault, pin=PIN, duress_pin=DURESS_PIN)
                vaults.add_recipient(s, owner, vault, name="Editora", email="editora@example.org",
                                     access_code="mesa-azul-1729")
                vaults.arm(s, vault, PIN)
                s.commit()
            people["journalists"].append({"email": email, "password": demo.POOL_PASSWORD,
                                          "vault": vault.id, "pin": PIN})
        for i in range(1, donors + 1):
            email = f"donante{i:02d}@load.protect.local"
            if accounts.find_by_email(s, email) is None:
                accounts.create_user(s, None, email=email, role="donor", password=DONOR_PASSWORD)
                s.commit()
            people["donors"].append({"email": email, "password": DONOR_PASSWORD})
        people["staff"] = [{"email": e, "role": r, "secret": t} for e, r, t in demo.pool_logins(s)]
        db.engine.dispose()
    return people


def sign_in(base: str, email: str, password: str, secret: str | None) -> dict:
    """A session made through the real forms: its cookie and CSRF token."""
    session = requests.Session()
    token = lambda path: TOKEN_RE.search(session.get(base + path, timeout=30).text).group(1)  # noqa: E731
    response = session.post(base + "/login", data={"email": email, "password": password,
                                                   "csrf_token": token("/login")},
                            allow_redirects=False, timeout=30)
    if secret and response.status_code == 302 and "/login/code" in response.headers["Location"]:
        response = session.post(base + "/login/code", data={"code": pyotp.TOTP(secret).now(),
                                                            "csrf_token": token("/login/code")},
                                allow_redirects=False, timeout=30)
    if response.status_code != 302 or "/login" in response.headers["Location"]:
        raise SystemExit(f"could not sign {email} in: {response.status_code}")
    csrf = token("/account")  # first: making the token puts its secret in the session cookie
    return {"cookie": session.cookies["protect_session"], "token": csrf}


# -- processes ------------------------------------------------------------------------------

def start_gunicorn(instance: Path, port: int, workers: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, PROTECT_INSTANCE_PATH=str(instance), PROTECT_SWEEP_INTERVAL_SECONDS="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--worker-class", "gthread", "--threads", str(threads), "--access-logfile", "/dev/null",
         "--error-logfile", str(OUT / "load-gunicorn.log"), "app:app"],
        cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            pass
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit(f"gunicorn did not start (see {OUT / 'load-gunicorn.log'})")
        time.sleep(0.3)


class Sweeper:
    """One `flask protect sweep --every N` process: the sweeper as a service runs it
    (a timer starting the command every few seconds would spend them on start-up)."""

    def __init__(self, instance: Path, every: float):
        self.env = dict(os.environ, PROTECT_INSTANCE_PATH=str(instance), FLASK_APP="app")
        self.every, self.process, self.cpu, self.output = every, None, 0.0, ""

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "protect", "sweep", "--every", str(max(1, round(self.every)))],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self):
        if self.process is None:
            return
        self.cpu = cpu_seconds(self.process)
        self.process.send_signal(signal.SIGTERM)
        self.output = self.process.communicate(timeout=60)[0]

    @property
    def runs(self) -> int:
        return self.output.count("vaults:")


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process (the server is shared: an upper bound for ours)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info["name"] == "postgres" and p.info["cpu_times"] is not None:
            total += p.info["cpu_times"].user + p.info["cpu_times"].system
    return total


def cpu_seconds(process: subprocess.Popen) -> float:
    """CPU seconds of a process and its children (gunicorn's workers)."""
    try:
        parent = psutil.Process(process.pid)
        total = 0.0
        for p in [parent, *parent.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except psutil.Error:
        return float("nan")


# -- checks -----------------------------------------------------------------------------------

def check_accepted(app, accepted: dict, since: float) -> list[str]:
    """What the app acknowledged, looked for in the database; returns the problems."""
    from sqlalchemy import func, select

    from protect.cases.models import Case, CaseEvent, Evidence, Incident
    from protect.crypto import agefile, serverkeys
    from protect.extensions import db
    from protect.vault.models import VaultEvent

    problems = []
    store = app.extensions["protect.blobs"]
    with app.app_context():
        s = db.session
        identity = serverkeys.identity(s, "evidence")
        for case_id, size in accepted["requests"]:
            case = s.get(Case, case_id)
            if case is None or case.status == "draft":
                problems.append(f"request {case_id}: acknowledged but {'missing' if case is None else 'a draft'}")
                continue
            incidents = select(func.count()).select_from(Incident).where(Incident.case_id == case_id)
            if not s.execute(incidents).scalar_one():
                problems.append(f"request {case_id}: no incident")
            evidence = s.execute(select(Evidence).where(Evidence.case_id == case_id)).scalars().all()
            if [e.size for e in evidence] != [size]:
                problems.append(f"request {case_id}: evidence sizes {[e.size for e in evidence]}, sent {size}")
            for e in evidence:
                plain = io.BytesIO()
                try:
                    with store.open(e.blob_id) as src:
                        agefile.decrypt(src, plain, [identity])
                except Exception as exc:  # report every unreadable blob, not only the first
                    problems.append(f"request {case_id}: evidence blob does not open ({type(exc).__name__})")
                    continue
                if len(plain.getvalue()) != e.size:
                    problems.append(f"request {case_id}: evidence blob holds {len(plain.getvalue())} bytes")
        start = datetime.fromtimestamp(since, UTC)
        expected: dict[str, int] = {}
        for vault_id, _ in accepted["check_ins"]:
            expected[vault_id] = expected.get(vault_id, 0) + 1
        for vault_id, n in expected.items():
            found = s.execute(select(func.count()).select_from(VaultEvent).where(
                VaultEvent.vault_id == vault_id, VaultEvent.kind == "checked_in", VaultEvent.at >= start)).scalar_one()
            if found < n:
                problems.append(f"vault {vault_id}: {n} check-ins acknowledged, {found} recorded")
        for case_id in accepted["triages"]:
            if not s.execute(select(func.count()).select_from(CaseEvent).where(
                    CaseEvent.case_id == case_id, CaseEvent.kind == "triaged")).scalar_one():
                problems.append(f"case {case_id}: triage acknowledged, not recorded")
        db.engine.dispose()
    return problems


# -- report -------------------------------------------------------------------------------------

def summarise(results: dict, seconds: float) -> list[dict]:
    rows = []
    for name, times in sorted(results["timings"].items()):
        codes = {int(k): v for k, v in results["statuses"][name].items()}
        rows.append({"kind": name, "count": len(times), "rps": len(times) / seconds,
                     "p50": percentile(times, 0.5), "p95": percentile(times, 0.95),
                     "p99": percentile(times, 0.99), "max": max(times),
                     "5xx": sum(v for k, v in codes.items() if k >= 500),
                     "no answer": codes.get(0, 0), "statuses": codes})
    return rows


def print_report(rows: list[dict], results: dict, args, seconds: float, extra: dict) -> None:
    total = sum(r["count"] for r in rows)
    views = [t for name, times in results["timings"].items() if name.startswith("GET") for t in times]
    mix = "without reports" if args.without_reports else "with reports"
    print(f"\n## load — {args.users} users ({mix}, think {args.think} s), {seconds:.0f} s, "
          f"gunicorn {args.workers}×{args.threads} gthread\n")
    print(f"Machine: {machine()}. Load average before/after: {extra['load_before']} / {extra['load_after']}.\n")
    print("| kind | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | statuses | 5xx |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        statuses = ", ".join(f"{k or 'none'}: {v}" for k, v in sorted(r["statuses"].items()))
        print(f"| {r['kind']} | {r['count']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} "
              f"| {r['max']:.0f} | {statuses} | {r['5xx']} |")
    fivexx = sum(r["5xx"] for r in rows)
    print(f"| **all** | {total} | {total / seconds:.1f} | | | | | | {fivexx} |")
    p99 = percentile(views, 0.99) if views else float("nan")
    print(f"\nPage views (every GET): {len(views)}, p50 {percentile(views, 0.5):.0f} ms, "
          f"p95 {percentile(views, 0.95):.0f} ms, p99 {p99:.0f} ms — target p99 <= 500 ms: "
          f"{'met' if p99 <= 500 else 'MISSED'}; 5xx: {fivexx} — target 0: {'met' if fivexx == 0 else 'MISSED'}.")
    sweeper = extra["sweeper"]
    print(f"Sweeper: {sweeper.runs} sweeps by one `flask protect sweep --every {sweeper.every:g}` process, "
          f"{sweeper.cpu:.1f} CPU s in all, exit code {sweeper.process.returncode}.")
    print(f"CPU seconds during the run: gunicorn {extra['server_cpu']:.0f}, PostgreSQL {extra['database_cpu']:.0f} "
          f"(all its processes: the server is shared), locust {extra['locust_cpu']:.0f}; "
          f"{2 * seconds:.0f} on 2 cores.")
    accepted = results["accepted"]
    print(f"Acknowledged: {len(accepted['requests'])} requests sent, {len(accepted['check_ins'])} check-ins, "
          f"{len(accepted['triages'])} triages.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--spawn-rate", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--journalists", type=int, default=60)
    parser.add_argument("--donors", type=int, default=10)
    parser.add_argument("--sweep-every", type=float, default=5)
    parser.add_argument("--think", default="1,4",
                        help="seconds between a person's requests, min,max (donors read 5-15x the min)")
    parser.add_argument("--without-reports", action="store_true",
                        help="no donors and no report for supervisors: the rest of the workload alone")
    parser.add_argument("--json", type=Path, default=OUT / "load.json")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from protect import create_app
    from protect.cases import demo
    from protect.extensions import db

    instance, _, reused = prepare_instance("postgresql", reuse=True)
    app = create_app({"instance_path": str(instance)})
    with app.app_context():
        upgrade()
        have = demo.count_cases(db.session)
        db.engine.dispose()
    if have < args.cases:
        print(f"topping the database up from {have:,} to {args.cases:,} cases", flush=True)
        generate(app, args.cases, reused)
    print("readying people (vaults are armed once, then reused)", flush=True)
    people = ready_people(app, args.journalists, args.donors)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_gunicorn(instance, port, args.workers, args.threads)
    sweeper = Sweeper(instance, args.sweep_every)
    locust = None
    try:
        sessions = {"caseworker": [], "supervisor": []}
        for person in people.pop("staff"):
            sessions[person["role"]].append(sign_in(base, person["email"], demo.POOL_PASSWORD,
                                                    person["secret"]))
        people.update(caseworkers=sessions["caseworker"], supervisors=sessions["supervisor"])
        people_file, results_file = OUT / "load-people.json", OUT / "load-results.json"
        people_file.write_text(json.dumps(people))
        results_file.unlink(missing_ok=True)
        extra = {"load_before": load(), "locust_cpu": 0.0}
        print(f"running {args.users} users for {args.seconds} s against {base}", flush=True)
        server_cpu, database_cpu = cpu_seconds(server), postgres_cpu()
        sweeper.start()
        started = time.time()
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base,
             "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.seconds}s",
             "--stop-timeout", "10", "--only-summary", "--loglevel", "WARNING", "--csv", str(OUT / "load")],
            cwd=ROOT, env=dict(os.environ, LOAD_PEOPLE=str(people_file), LOAD_RESULTS=str(results_file),
                               LOAD_REPORTS="0" if args.without_reports else "1", LOAD_THINK=args.think))
        while locust.poll() is None:
            extra["locust_cpu"] = cpu_seconds(locust)
            time.sleep(1)
        elapsed = time.time() - started
        extra.update(server_cpu=cpu_seconds(server) - server_cpu, database_cpu=postgres_cpu() - database_cpu,
                     load_after=load())
    finally:
        sweeper.stop()
        if locust is not None and locust.poll() is None:
            locust.kill()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    extra["sweeper"] = sweeper

    results = json.loads(results_file.read_text())
    rows = summarise(results, min(elapsed, args.seconds))
    print_report(rows, results, args, min(elapsed, args.seconds), extra)
    problems = check_accepted(app, results["accepted"], started)
    args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows,
                                     "extra": extra, "problems": problems}, indent=2, default=str))
    if problems:
        print(f"\n{len(problems)} acknowledged items NOT found as acknowledged:")
        for problem in problems[:30]:
            print("  " + problem)
        raise SystemExit(1)
    print("Every acknowledged request is in the database with its evidence (each blob decrypted), "
          "every acknowledged check-in and triage recorded.")


if __name__ == "__main__":
    main()
