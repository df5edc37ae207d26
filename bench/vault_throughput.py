"""Vault throughput: protect.crypto.agefile against the age CLI, and the disk's ceiling.

Parts:
  a. bench_cli_vs_ours: encryption and decryption of the same file, alternating
     our in-process encrypt()/decrypt() (files opened and written in-process,
     no fsync, like age) with Debian's `age` binary, to the same destination.
  b. raw_write_speed: what the destination directory absorbs with dd, synced
     to disk (the device ceiling) and not (the page-cache ceiling, which is
     what unsynced writers like age and ours actually hit).
  c. bench_http_upload: the same file uploaded over HTTP (multipart, on
     loopback) to a gunicorn-served protect whose upload route encrypts into
     the local blob store in the same directory, as MB/s, as a share of the
     raw write speed, and the server worker's peak memory growth.
  d. bench_vault_http: the real vault, served by gunicorn on loopback: the
     file deposited by a signed-in journalist (POST /vault/<id>/files), then,
     once the vault is released, downloaded by a keyless recipient as the ZIP
     the server decrypts while it streams (POST /release/zip); same measures.

Before each timed run the destination is removed and the system synced, so
that no run pays for the previous run's truncation or writeback.  Besides
wall-clock MB/s, each run's user+system CPU time is recorded (ours from this
process, age's from the waited-for child): on a shared machine it varies far
less with other load than wall time does.

Usage: python bench/vault_throughput.py [--size 1G] [--dir /tmp] [--rounds 3] [--parts abcd]
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import functools
import http.client
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protect.crypto import agefile  # noqa: E402
from protect.crypto.blobs import LocalBlobStore  # noqa: E402

AGE = shutil.which("age") or "age"
MB = 1_000_000


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 256M, 1G)")
    return int(match[1]) * 1024 ** " KMG".index(match[2].upper() or " ")


def make_source(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(os.urandom(n))
            left -= n


def cpu_seconds() -> float:
    """User and system time of this process and its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: Callable[[], object], dst: Path) -> tuple[float, float]:
    """Returns (wall, CPU) seconds of run, after removing dst and syncing."""
    dst.unlink(missing_ok=True)
    os.sync()
    cpu, start = cpu_seconds(), time.perf_counter()
    run()
    return time.perf_counter() - start, cpu_seconds() - cpu


def cpu_pressure() -> str:
    """The kernel's share of time that runnable tasks waited for a CPU (last 10 s)."""
    try:
        return Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1] + "%"
    except (OSError, IndexError):
        return "n/a"


def ours_encrypt(src: Path, dst: Path, recipient: str) -> None:
    with open(src, "rb", buffering=0) as s, open(dst, "wb", buffering=0) as d:
        agefile.encrypt(s, d, [recipient])


def ours_decrypt(src: Path, dst: Path, identity: str) -> None:
    with open(src, "rb", buffering=0) as s, open(dst, "wb", buffering=0) as d:
        agefile.decrypt(s, d, [identity])


def age_cli(*args: str) -> None:
    subprocess.run([AGE, *args], check=True)


Speeds = dict[str, dict[str, list[tuple[float, float]]]]


def bench_cli_vs_ours(size: int, workdir: Path, rounds: int) -> tuple[Speeds, list[str]]:
    """Times both tools; returns their speeds and the CPU pressure after each round.

    Speeds are (MB/s, MB per CPU-second) per round: {"encrypt"|"decrypt": {"ours"|"age": [...]}}.
    """
    identity, recipient = agefile.generate_identity()
    key = workdir / "key.txt"
    key.write_text(identity + "\n")
    plain, sealed, out = workdir / "plain.bin", workdir / "sealed.age", workdir / "out.bin"
    make_source(plain, size)
    age_cli("-e", "-r", recipient, "-o", str(sealed), str(plain))

    runs: dict[str, dict[str, Callable[[], object]]] = {
        "encrypt": {
            "ours": lambda: ours_encrypt(plain, out, recipient),
            "age": lambda: age_cli("-e", "-r", recipient, "-o", str(out), str(plain)),
        },
        "decrypt": {
            "ours": lambda: ours_decrypt(sealed, out, identity),
            "age": lambda: age_cli("-d", "-i", str(key), "-o", str(out), str(sealed)),
        },
    }
    speeds: Speeds = {op: {"ours": [], "age": []} for op in runs}
    pressure = []
    for _ in range(rounds):
        for op, tools in runs.items():
            for tool, run in tools.items():
                wall, cpu = timed(run, out)
                speeds[op][tool].append((size / wall / MB, size / cpu / MB))
        pressure.append(cpu_pressure())
    # A fast wrong answer is worth nothing: check ours round-trips (untimed).
    ours_encrypt(plain, sealed, recipient)
    ours_decrypt(sealed, out, identity)
    if not filecmp.cmp(plain, out, shallow=False):
        raise SystemExit("our decryption does not give back the plaintext")
    for path in (plain, sealed, out, key):
        path.unlink(missing_ok=True)
    return speeds, pressure


def raw_write_speed(workdir: Path, size: int, runs: int = 3) -> dict[str, float]:
    """MB/s of dd writing size bytes of zeros, synced to disk and not; the median of
    ``runs`` runs each (one run moved between 440 and 2,060 MB/s on the shared VM)."""
    target = workdir / "dd.bin"
    count = max(1, size // (1 << 20))
    result = {}
    for label, extra in (("fdatasync", ["conv=fdatasync"]), ("page cache", [])):
        run = functools.partial(subprocess.run, ["dd", "if=/dev/zero", f"of={target}", "bs=1M",
                                                 f"count={count}", *extra], check=True, capture_output=True)
        speeds = []
        for _ in range(runs):
            elapsed, _ = timed(run, target)
            speeds.append(count * (1 << 20) / elapsed / MB)
        result[label] = statistics.median(speeds)
    target.unlink(missing_ok=True)
    return result


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def _cpu_seconds_of(pid: int) -> float:
    """User and system time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post_file(port: int, cookie: str, token: str, src: Path | None, size: int,
               path: str = "/test-upload") -> tuple[int, float]:
    """Stream a multipart upload of ``src`` (or ``size`` zero bytes); returns (status, seconds)."""
    boundary = "vault-bench-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"src.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    start = time.perf_counter()
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.putheader("Cookie", cookie)
    conn.endheaders()
    conn.send(head)
    if src is None:
        conn.send(bytes(size))
    else:
        with src.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                conn.send(chunk)
    conn.send(tail)
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    return response.status, elapsed


def bench_http_upload(src: Path, size: int, workdir: Path, rounds: int) -> dict[str, float]:
    """Upload ``src`` to gunicorn on loopback; median MB/s and the worker's peak memory growth."""
    root = Path(__file__).resolve().parents[1]
    venv_bin = Path(sys.executable).parent
    instance = workdir / "instance"
    _secret, recipient = agefile.generate_identity()
    env = dict(os.environ, PROTECT_INSTANCE_PATH=str(instance),
               PROTECT_DATABASE_URL=f"sqlite:///{instance / 'protect.db'}",
               PROTECT_MAX_UPLOAD_MB=str(size // (1 << 20) + 16), PROTECT_SWEEP_INTERVAL_SECONDS="0",
               UPLOAD_RECIPIENT=recipient, UPLOAD_MAX_BYTES=str(size + (1 << 20)), FLASK_APP="app")
    subprocess.run([str(venv_bin / "flask"), "db", "upgrade"], cwd=root, env=env, check=True,
                   capture_output=True)
    with _gunicorn(env, "tests.upload_app:wsgi()", "/test-upload") as (port, worker):
        status, headers, body = _http(port, "GET", "/test-upload")
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        token = re.search(r'value="([^"]+)"', body.decode()).group(1)
        _post_file(port, cookie, token, None, 1 << 20)  # warm up
        before = _peak_rss_mib(worker)
        speeds, cpu_speeds, pressure = [], [], []
        blobs = LocalBlobStore(instance / "blobs")
        for _ in range(rounds):
            # As for parts a and b: no round pays for the page cache the previous one filled
            # (on this VM, first-touched pages cost up to ~2.5 s of kernel time per GiB).
            for blob_id in list(blobs.ids()):
                blobs.delete(blob_id)
            os.sync()
            cpu = _cpu_seconds_of(worker)
            status, elapsed = _post_file(port, cookie, token, src, size)
            if status != 200:
                raise RuntimeError(f"upload answered HTTP {status}")
            speeds.append(size / elapsed / MB)
            cpu_speeds.append(size / (_cpu_seconds_of(worker) - cpu) / MB)
            pressure.append(f"{cpu_pressure()} (load {os.getloadavg()[0]:.1f})")
        return {"MB/s": statistics.median(speeds), "rounds": speeds,
                "MB/CPU-s": statistics.median(cpu_speeds), "pressure": pressure,
                "peak growth MiB": _peak_rss_mib(worker) - before}


@contextlib.contextmanager
def _gunicorn(env: dict, app: str, probe: str):
    """gunicorn with the deployment's settings (deploy/gunicorn.conf.py) but 1 worker and
    2 threads, serving ``app`` on a free loopback port, once ``probe`` answers; yields
    (port, the worker's pid)."""
    root = Path(__file__).resolve().parents[1]
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(root / "deploy" / "gunicorn.conf.py"),
         "--workers", "1", "--threads", "2", "--timeout", "900", "--bind", f"127.0.0.1:{port}", app],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", probe)
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                time.sleep(0.1)
        worker = int(subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                    text=True).stdout.split()[0])
        yield port, worker
    finally:
        server.terminate()
        server.wait(30)


def _http(port: int, method: str, path: str, form: dict | None = None,
          cookie: str = "") -> tuple[int, dict, bytes]:
    """One request on loopback (a form body for POST); returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def _download(port: int, path: str, form: dict, cookie: str) -> tuple[int, int, float]:
    """POST a form and read the (large) answer into a reused buffer; (status, bytes, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    start = time.perf_counter()
    conn.request("POST", path, urlencode(form),
                 {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    response = conn.getresponse()
    buffer, received = bytearray(1 << 20), 0
    while n := response.readinto(buffer):
        received += n
    elapsed = time.perf_counter() - start
    conn.close()
    return response.status, received, elapsed


def _csrf(body: bytes) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', body.decode()).group(1)


def _form_page(port: int, path: str, cookie: str) -> tuple[str, str]:
    """GET a page with a form: (the session cookie, renewed when the page set one, and its CSRF token)."""
    status, headers, body = _http(port, "GET", path, cookie=cookie)
    if status != 200:
        raise RuntimeError(f"{path} answered HTTP {status}")
    return headers.get("Set-Cookie", cookie).split(";", 1)[0], _csrf(body)


def bench_vault_http(src: Path, size: int, workdir: Path, rounds: int) -> dict[str, dict]:
    """Deposit ``src`` through the vault's upload route, release the vault, and
    download it as a keyless recipient's ZIP, each ``rounds`` times, against
    gunicorn on loopback (SQLite, local blobs under ``workdir``)."""
    from protect import create_app
    from protect.accounts.service import create_user
    from protect.extensions import db
    from protect.vault import service as vaults

    root = Path(__file__).resolve().parents[1]
    instance = workdir / "vault-instance"
    url = f"sqlite:///{instance / 'protect.db'}"
    env = dict(os.environ, PROTECT_INSTANCE_PATH=str(instance), PROTECT_DATABASE_URL=url,
               PROTECT_SWEEP_INTERVAL_SECONDS="0", FLASK_APP="app")
    subprocess.run([str(Path(sys.executable).parent / "flask"), "db", "upgrade"], cwd=root, env=env,
                   check=True, capture_output=True)
    email, password, pin, code = "bench@example.org", "bench password for the vault", "482916", "bench-access-code"
    # The people and the vault are made in this process, on the same instance (keys, database).
    app = create_app({"instance_path": str(instance), "database_url": url, "sweep_interval_seconds": 0})
    with app.app_context():
        user, _ = create_user(db.session, None, email=email, role="journalist", password=password)
        vault = vaults.create_vault(db.session, user, "bench")
        vaults.set_pins(db.session, user, vault, pin=pin, duress_pin="739105")
        vaults.add_recipient(db.session, user, vault, name="bench", email="recipient@example.org", access_code=code)
        vaults.arm(db.session, vault, pin)
        vault.downloads_per_file = rounds + 1
        db.session.commit()
        vault_id, user_id = vault.id, user.id

    def keep_one_deposit():
        with app.app_context():
            vault, owner = db.session.get(vaults.Vault, vault_id), db.session.get(vaults.User, user_id)
            for deposit in vaults._live_deposits(db.session, vault)[:-1]:
                vaults.delete_deposit(db.session, owner, vault, deposit)
            db.session.commit()

    with _gunicorn(env, "app:app", "/healthz") as (port, worker):
        cookie, token = _form_page(port, "/login", "")
        status, headers, _ = _http(port, "POST", "/login", {"email": email, "password": password,
                                                            "csrf_token": token}, cookie)
        if status != 302:
            raise RuntimeError(f"sign-in answered HTTP {status}")
        cookie, token = _form_page(port, f"/vault/{vault_id}", headers["Set-Cookie"].split(";", 1)[0])
        deposit_path = f"/vault/{vault_id}/files"
        _post_file(port, cookie, token, None, 1 << 20, deposit_path)  # warm up
        before = _peak_rss_mib(worker)
        uploads = []
        for _ in range(rounds):
            keep_one_deposit()  # (the disk holds one deposit at a time)
            status, elapsed = _post_file(port, cookie, token, src, size, deposit_path)
            if status != 302:
                raise RuntimeError(f"deposit answered HTTP {status}")
            uploads.append(size / elapsed / MB)
        upload_growth = _peak_rss_mib(worker) - before
        keep_one_deposit()

        # Released the normal way: this process's clock moves past the check-in and the grace period.
        with app.app_context():
            vault = db.session.get(vaults.Vault, vault_id)
            app.extensions["protect.now"].advance(hours=vault.interval_hours + vault.grace_hours + 1)
            if vaults.sweep(db.session).released != 1:
                raise RuntimeError("the vault was not released")
            link = vaults.issue_release_link(db.session, vaults.releases(db.session, vault)[0])
            db.session.commit()
        status, headers, _ = _http(port, "GET", f"/release/{link}")
        recipient, token = _form_page(port, "/release/", headers["Set-Cookie"].split(";", 1)[0])
        form = {"csrf_token": token, "code": code}
        before = _peak_rss_mib(worker)
        downloads = []
        for _ in range(rounds):
            status, received, elapsed = _download(port, "/release/zip", form, recipient)
            if status != 200 or received <= size:
                raise RuntimeError(f"release ZIP answered HTTP {status} with {received} bytes")
            downloads.append(size / elapsed / MB)
        download_growth = _peak_rss_mib(worker) - before
    return {
        "deposit (POST /vault/<id>/files)": {"MB/s": statistics.median(uploads), "rounds": uploads,
                                             "peak growth MiB": upload_growth},
        "release ZIP (POST /release/zip)": {"MB/s": statistics.median(downloads), "rounds": downloads,
                                            "peak growth MiB": download_growth},
    }


def vault_http_table(results: dict[str, dict], raw: dict[str, float]) -> str:
    lines = [
        "",
        "| the vault over HTTP, gunicorn on loopback | median MB/s | rounds MB/s | share of raw write, synced "
        "| share of raw write, page cache | worker peak memory growth |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for label, r in results.items():
        lines.append(f"| {label} | {r['MB/s']:.0f} | {', '.join(f'{s:.0f}' for s in r['rounds'])} "
                     f"| {r['MB/s'] / raw['fdatasync']:.0%} | {r['MB/s'] / raw['page cache']:.0%} "
                     f"| {r['peak growth MiB']:.1f} MiB |")
    return "\n".join(lines)


def http_table(http: dict, raw: dict[str, float]) -> str:
    return "\n".join([
        "",
        "| HTTP upload to gunicorn on loopback (encrypted into the blob store) | value |",
        "| --- | ---: |",
        f"| median MB/s ({', '.join(f'{s:.0f}' for s in http['rounds'])}) | {http['MB/s']:.0f} |",
        f"| share of raw write, synced (dd conv=fdatasync) | {http['MB/s'] / raw['fdatasync']:.0%} |",
        f"| share of raw write, page cache | {http['MB/s'] / raw['page cache']:.0%} |",
        f"| server worker peak memory growth | {http['peak growth MiB']:.1f} MiB |",
        f"| server worker MB per CPU-second (user+system, median) | {http['MB/CPU-s']:.0f} |",
        f"| CPU pressure (last 10 s) and load average after each round | {', '.join(http['pressure'])} |",
    ])


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    age_version = subprocess.run([AGE, "--version"], capture_output=True, text=True).stdout.strip()
    import cryptography

    return (
        f"{os.cpu_count()} x {cpu}, Linux {platform.release()}, Python {platform.python_version()}, "
        f"cryptography {cryptography.__version__}, age {age_version}"
    )


def table(size: int, speeds: Speeds, pressure: list[str], raw: dict[str, float]) -> str:
    def median(samples: list[tuple[float, float]], i: int) -> float:
        return statistics.median(sample[i] for sample in samples)

    lines = [
        f"{size / (1 << 20):.0f} MiB, {len(pressure)} alternating rounds; MB = 10^6 bytes; medians;",
        "MB/CPU-s = bytes per second of user+system CPU time (less sensitive to other load);",
        f"CPU pressure (share of time tasks waited for a CPU, last 10 s) after each round: {', '.join(pressure)}",
        "",
        "| operation | ours MB/s | age MB/s | ours / age | ours MB/CPU-s | age MB/CPU-s | ours / age (CPU) "
        "| rounds ours | rounds age |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for op, tools in speeds.items():
        ours, theirs = tools["ours"], tools["age"]
        lines.append(
            f"| {op} | {median(ours, 0):.0f} | {median(theirs, 0):.0f} | {median(ours, 0) / median(theirs, 0):.2f}x "
            f"| {median(ours, 1):.0f} | {median(theirs, 1):.0f} | {median(ours, 1) / median(theirs, 1):.2f}x "
            f"| {', '.join(f'{s[0]:.0f}' for s in ours)} | {', '.join(f'{s[0]:.0f}' for s in theirs)} |"
        )
    return "\n".join(lines) + "\n" + raw_table(raw)


def raw_table(raw: dict[str, float]) -> str:
    return "\n".join([
        "",
        "| destination raw write (dd bs=1M, median of 3) | MB/s |",
        "| --- | ---: |",
        f"| conv=fdatasync (disk ceiling) | {raw['fdatasync']:.0f} |",
        f"| no sync (page-cache ceiling) | {raw['page cache']:.0f} |",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"), help="data size (default 1G)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="abcd", type=lambda text: set(text.lower()),
                        help="which parts to run, e.g. c for the HTTP upload alone (b, the raw "
                        "write speed the HTTP parts are measured against, always runs)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vault-bench-", dir=args.dir))
    try:
        print(machine(), flush=True)
        if "a" in args.parts:
            speeds, pressure = bench_cli_vs_ours(args.size, workdir, args.rounds)
        raw = raw_write_speed(workdir, args.size)
        print(table(args.size, speeds, pressure, raw) if "a" in args.parts else raw_table(raw), flush=True)
        source = workdir / "src.bin"
        make_source(source, args.size)
        if "c" in args.parts:
            print(http_table(bench_http_upload(source, args.size, workdir, args.rounds), raw), flush=True)
        if "d" in args.parts:
            print(vault_http_table(bench_vault_http(source, args.size, workdir, args.rounds), raw))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
