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

Before each timed run the destination is removed and the system synced, so
that no run pays for the previous run's truncation or writeback.  Besides
wall-clock MB/s, each run's user+system CPU time is recorded (ours from this
process, age's from the waited-for child): on a shared machine it varies far
less with other load than wall time does.

Usage: python bench/vault_throughput.py [--size 1G] [--dir /tmp] [--rounds 3]
"""

from __future__ import annotations

import argparse
import filecmp
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protect.crypto import agefile  # noqa: E402

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


def raw_write_speed(workdir: Path, size: int) -> dict[str, float]:
    """MB/s of dd writing size bytes of zeros, synced to disk and not."""
    target = workdir / "dd.bin"
    count = max(1, size // (1 << 20))
    result = {}
    for label, extra in (("fdatasync", ["conv=fdatasync"]), ("page cache", [])):
        elapsed, _ = timed(
            lambda: subprocess.run(
                ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", *extra],
                check=True,
                capture_output=True,
            ),
            target,
        )
        result[label] = count * (1 << 20) / elapsed / MB
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


def _post_file(port: int, cookie: str, token: str, src: Path | None, size: int) -> tuple[int, float]:
    """Stream a multipart upload of ``src`` (or ``size`` zero bytes); returns (status, seconds)."""
    import http.client
    boundary = "vault-bench-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"src.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    start = time.perf_counter()
    conn.putrequest("POST", "/test-upload")
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
    import http.client
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
    port = _free_port()
    server = subprocess.Popen(
        [str(venv_bin / "gunicorn"), "--workers", "1", "--threads", "2", "--timeout", "900",
         "--bind", f"127.0.0.1:{port}", "tests.upload_app:wsgi()"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/test-upload")
                page = conn.getresponse()
                body = page.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        cookie = page.getheader("Set-Cookie").split(";", 1)[0]
        token = re.search(r'value="([^"]+)"', body).group(1)
        worker = int(subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                    text=True).stdout.split()[0])
        _post_file(port, cookie, token, None, 1 << 20)  # warm up
        before = _peak_rss_mib(worker)
        speeds = []
        for _ in range(rounds):
            status, elapsed = _post_file(port, cookie, token, src, size)
            if status != 200:
                raise RuntimeError(f"upload answered HTTP {status}")
            speeds.append(size / elapsed / MB)
        return {"MB/s": statistics.median(speeds), "rounds": speeds,
                "peak growth MiB": _peak_rss_mib(worker) - before}
    finally:
        server.terminate()
        server.wait(30)


def http_table(http: dict, raw: dict[str, float]) -> str:
    return "\n".join([
        "",
        "| HTTP upload to gunicorn on loopback (encrypted into the blob store) | value |",
        "| --- | ---: |",
        f"| median MB/s ({', '.join(f'{s:.0f}' for s in http['rounds'])}) | {http['MB/s']:.0f} |",
        f"| share of raw write, synced (dd conv=fdatasync) | {http['MB/s'] / raw['fdatasync']:.0%} |",
        f"| share of raw write, page cache | {http['MB/s'] / raw['page cache']:.0%} |",
        f"| server worker peak memory growth | {http['peak growth MiB']:.1f} MiB |",
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
    lines += [
        "",
        "| destination raw write (dd bs=1M) | MB/s |",
        "| --- | ---: |",
        f"| conv=fdatasync (disk ceiling) | {raw['fdatasync']:.0f} |",
        f"| no sync (page-cache ceiling) | {raw['page cache']:.0f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"), help="data size (default 1G)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vault-bench-", dir=args.dir))
    try:
        print(machine(), flush=True)
        speeds, pressure = bench_cli_vs_ours(args.size, workdir, args.rounds)
        raw = raw_write_speed(workdir, args.size)
        print(table(args.size, speeds, pressure, raw), flush=True)
        source = workdir / "src.bin"
        make_source(source, args.size)
        print(http_table(bench_http_upload(source, args.size, workdir, args.rounds), raw))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
