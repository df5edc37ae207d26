"""`flask protect ...`: operator commands."""
from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import text

from .accounts import service as accounts
from .accounts.models import ROLES
from .audit import service as audit
from .crypto import keyring as keyring_mod
from .crypto import rotation
from .deadlines import service as deadlines
from .errors import DomainError
from .extensions import db
from .reports import service as reports
from .vault import service as vaults
from .vault import webhooks

cli = AppGroup("protect", help="protect's operator commands.")

# Demo accounts: fixed, printed credentials for trying protect locally.
DEMO_USERS = [
    ("journalist", "periodista@demo.protect.local", "Periodista demo 2026", None),
    ("caseworker", "caseworker@demo.protect.local", "Caseworker demo 2026", "JBSWY3DPEHPK3PXPCASEWORKER234567"),
    ("supervisor", "supervisor@demo.protect.local", "Supervisor demo 2026", "JBSWY3DPEHPK3PXPSUPERVISOR234567"),
    ("donor", "donante@demo.protect.local", "Donante demo 2026", None),
    ("admin", "admin@demo.protect.local", "Administrador demo 2026", "JBSWY3DPEHPK3PXPADMINISTRATOR234"),
]


@cli.command("create-user")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", default=None)
@click.option("--password-stdin", is_flag=True, required=True,
              help="Read the password from standard input (never from the command line).")
def create_user(email, role, name, password_stdin):
    """Create an account; staff get a TOTP secret, printed once."""
    password = sys.stdin.readline().rstrip("\n")
    try:
        user, secret = accounts.create_user(db.session, None, email=email, role=role,
                                            password=password, name=name, enrol_totp=True)
    except DomainError as exc:
        raise click.ClickException(str(exc.message)) from None
    db.session.commit()
    click.echo(f"created: {user.id} ({role})")
    if secret:
        click.echo(f"totp_secret: {secret}")


@cli.command("reset-2fa")
@click.argument("email")
def reset_2fa(email):
    """Break-glass: remove an account's second factor (staff enrol again at next login)."""
    user = accounts.find_by_email(db.session, email)
    if user is None:
        raise click.ClickException("no such account")
    accounts.reset_totp(db.session, None, user)
    db.session.commit()
    click.echo(f"second factor removed for {user.id}; every session of it ended")


@cli.command("demo")
@click.option("--cases", "cases", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Also top the database up to N cases with synthetic ones (every stage, three years "
                   "of timeline), made for demo caseworker, supervisor and journalist pools. Idempotent: "
                   "only the cases missing to reach N are generated; 0 generates none.")
@click.option("--seed", type=int, default=None, help="Random seed for the synthetic cases.")
@click.option("--clocks", is_flag=True,
              help="Also give the synthetic cases their deadline clocks by replaying their timelines, "
                   "then sweep (about 3 ms a case: 100,000 in some five minutes).")
def demo(cases, seed, clocks):
    """Seed one demo account per role and print the logins (idempotent)."""
    if current_app.extensions["protect.settings"].production:
        raise click.ClickException("demo accounts are refused in production")
    click.echo("Demo logins (development only):")
    for role, email, password, secret in DEMO_USERS:
        user = accounts.find_by_email(db.session, email)
        if user is None:
            user, _ = accounts.create_user(db.session, None, email=email, role=role,
                                           password=password, name=f"Demo {role}")
            if secret:
                user.totp_secret = secret
                user.totp_enabled = True
        line = f"  {role:<11} {email:<32} password: {password}"
        if secret:
            line += f"   totp_secret: {secret}"
        click.echo(line)
    db.session.commit()
    if cases:
        _demo_cases(cases, seed)
    if clocks:
        made = deadlines.rebuild_clocks(db.session)
        result = deadlines.sweep(db.session)
        click.echo(f"deadline clocks for {made} cases; {result.overdue} overdue, {result.due_soon} due soon")


def _demo_cases(target: int, seed: int | None) -> None:
    from .cases import demo as demo_data

    missing = max(0, target - demo_data.count_cases(db.session))
    if missing:
        click.echo(f"Generating {missing} synthetic cases:")

        def progress(done, total, seconds):
            click.echo(f"  {done}/{total} cases, {seconds:.1f} s")

        started = time.perf_counter()
        demo_data.generate_cases(db.session, missing, seed=seed,
                                 progress=progress if missing > 5000 else None)
        seconds = time.perf_counter() - started
        click.echo(f"  {missing} cases in {seconds:.1f} s ({missing / seconds:,.0f} cases/s)")
        # A database filled in one go has no planner statistics until the sweeper's hourly
        # PRAGMA optimize (SQLite) or autovacuum (PostgreSQL) runs: without them SQLite
        # scanned the supervisor's queue (75-100 ms at 100,000 cases instead of 0.2).
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    else:
        demo_data.ensure_pools(db.session)
    click.echo(f"{demo_data.count_cases(db.session)} cases in the database. "
               f"Case pool logins (password for all: {demo_data.POOL_PASSWORD}):")
    for email, role, secret in demo_data.pool_logins(db.session):
        click.echo(f"  {role:<11} {email:<36} totp_secret: {secret}")
    click.echo(f"  journalist  {demo_data.JOURNALISTS[0]} … {demo_data.JOURNALISTS[-1]}")


@cli.command("rotate-keys")
@click.option("--new-key/--no-new-key", default=True,
              help="Make a new master key first (off when keys come from PROTECT_MASTER_KEYS).")
@click.option("--retire", "retire_kid", metavar="KEYID",
              help="Instead of rotating, retire a key that no sealed value uses any more.")
@click.option("--batch", default=500, show_default=True)
def rotate_keys(new_key, retire_kid, batch):
    """Re-seal every encrypted column under the newest master key (resumable)."""
    settings = current_app.extensions["protect.settings"]
    keys_dir = settings.instance / "keys"
    if retire_kid:
        _retire(keys_dir, retire_kid, bool(settings.master_keys))
        return
    if new_key:
        if settings.master_keys:
            raise click.ClickException(
                "keys come from PROTECT_MASTER_KEYS: append a new kid:base64 there, "
                "restart, then run rotate-keys --no-new-key")
        kid = keyring_mod.write_key_file(keys_dir)
        click.echo(f"new master key {kid}")
    ring = keyring_mod.load_keyring(settings.instance, settings.master_keys)
    current_app.extensions["protect.keyring"] = ring

    def progress(column, done, changed):
        click.echo(f"  {column}: {done} rows read, {changed} re-sealed")

    changed = rotation.rotate(db.session, db.Model, ring, batch=batch, progress=progress)
    click.echo(f"done: {changed} values re-sealed under {ring.newest.kid}")


def _retire(keys_dir, kid: str, from_env: bool) -> None:
    ring = current_app.extensions["protect.keyring"]
    if kid == ring.newest.kid:
        raise click.ClickException(f"{kid} is the newest key; rotate to a new key first")
    in_use = rotation.usage(db.session, db.Model).get(kid, 0)
    if in_use:
        raise click.ClickException(f"{kid} still seals {in_use} values; run rotate-keys --no-new-key first")
    if from_env:
        click.echo(f"no value uses {kid}: remove it from PROTECT_MASTER_KEYS")
        return
    path = keys_dir / f"{kid}.key"
    if not path.exists():
        raise click.ClickException(f"no key file for {kid}")
    path.unlink()
    click.echo(f"retired {kid}: its key file is deleted")


@cli.command("sweep")
@click.option("--every", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="Keep running, sweeping every SECONDS (a service instead of a timer: no start-up per run).")
def sweep(every):
    """Notify deadlines falling due soon and overdue, escalate; vaults, webhooks; delay reports made
    again in the background. Safe to run from many hosts."""
    if every is None:
        _sweep_once()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        _sweep_once()
        db.session.remove()
        stop.wait(every)


def _sweep_once() -> None:
    settings = current_app.extensions["protect.settings"]
    result = deadlines.sweep(db.session, escalate_after=timedelta(minutes=settings.escalate_after_minutes),
                             workers=settings.sweep_workers)
    click.echo(f"due soon: {result.due_soon}, overdue: {result.overdue}, "
               f"escalated: {result.escalated}, notifications: {result.notifications}")
    click.echo(f"vaults: {vaults.sweep(db.session)}")
    click.echo(f"vault webhooks: {webhooks.deliver(db.session)}")
    click.echo(f"delay reports made again: {reports.refresh(db.session)}")
    if settings.mail_server:  # the sweep committed: its e-mail may go now
        _send_mail(limit=10000)


@cli.command("collect-garbage")
def collect_garbage():
    """Delete blobs no row points to (older than an hour) and stale upload temporaries."""
    click.echo(f"{vaults.collect_garbage(db.session)}")


@cli.command("send-mail")
@click.option("--limit", default=10000, show_default=True, help="Most e-mails to send in this run.")
@click.option("--retry-failed", is_flag=True, help="First put e-mails that gave up back in the queue.")
def send_mail(limit, retry_failed):
    """Send the outbox's due e-mail (retries with backoff). Safe to run from many hosts."""
    from .notify import mail
    if not current_app.extensions["protect.settings"].mail_server:
        raise click.ClickException("no mail server configured (PROTECT_MAIL_SERVER)")
    if retry_failed:
        click.echo(f"re-queued: {mail.retry_failed(db.session)}")
    _send_mail(limit)


def _send_mail(limit: int) -> None:
    from .notify import mail
    result = mail.deliver(db.session, limit=limit)
    click.echo(f"e-mail sent: {result.sent}, to retry: {result.retrying}, failed: {result.failed}, "
               f"still queued: {mail.pending_count(db.session)}")


@cli.command("audit-verify")
def audit_verify():
    """Check the audit log's hash chain; exit non-zero at the first broken row."""
    result = audit.verify(db.session)
    if result.ok:
        click.echo(f"OK {result.count} entries")
    else:
        click.echo(f"BROKEN at entry {result.broken_id} (after {result.count} good entries)")
        sys.exit(1)


# -- operations (issue 8): doctor, backup, restore ---------------------------------

@cli.command("doctor")
def doctor():
    """Check this deployment's settings and services; exit non-zero if anything is wrong."""
    from .ops.doctor import FAIL, WARN, examine
    findings = examine()
    for finding in findings:
        click.echo(f"{finding.level.upper():<4}  {finding.topic}: {finding.message}")
    failed = sum(f.level == FAIL for f in findings)
    warned = sum(f.level == WARN for f in findings)
    click.echo(f"{failed} problem(s), {warned} warning(s)")
    if failed:
        sys.exit(1)


@cli.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--recipient", "-r", "recipients", multiple=True, required=True, metavar="age1…",
              help="age public key the backup is encrypted to (repeat for several).")
@click.option("--without-keys", is_flag=True,
              help="Leave the master keys out (keep them elsewhere: the backup cannot be read without them).")
def backup(dest, recipients, without_keys):
    """Write a consistent, age-encrypted backup of the database and blobs into DEST (new)."""
    from .ops import backup as backups
    started = time.perf_counter()
    try:
        summary = backups.create_backup(dest, list(recipients), include_keys=not without_keys, echo=click.echo)
    except backups.FAILURES as exc:
        raise click.ClickException(str(exc)) from None
    keys = "included" if summary.keys_included else "NOT included: keep them safe elsewhere"
    click.echo(f"backup in {dest}: {summary.engine} at {summary.revision}, {summary.blobs} blobs, "
               f"master keys {', '.join(summary.key_ids)} {keys} ({time.perf_counter() - started:.1f} s)")
    if summary.missing_blobs:
        click.echo(f"WARNING: {len(summary.missing_blobs)} blobs the database names are missing from the "
                   "blob store; they are not in the backup (ids in its manifest)")
        sys.exit(1)


@cli.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--identity", "-i", "identity_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="age identity file (AGE-SECRET-KEY-1…) of a recipient of the backup.")
def restore(src, identity_file):
    """Restore a backup into this instance, which must be empty (no tables, no blobs)."""
    from .crypto import agefile
    from .ops import backup as backups
    started = time.perf_counter()
    try:
        identities = agefile.parse_identities(identity_file.read_text())
    except (agefile.KeyFormatError, UnicodeDecodeError):
        raise click.ClickException(f"{identity_file} is not an age identity file") from None
    try:
        summary = backups.restore_backup(src, identities, echo=click.echo)
    except backups.FAILURES as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"restored: {summary.engine} at {summary.revision}, {summary.blobs} blobs, master keys "
               f"{', '.join(summary.key_ids)} ({time.perf_counter() - started:.1f} s)")
    if summary.missing_blobs:
        click.echo(f"WARNING: the backup lacked {len(summary.missing_blobs)} blobs its database names")
    if summary.audit_chain.ok:
        click.echo(f"audit chain OK ({summary.audit_chain.count} entries)")
    else:
        click.echo(f"audit chain BROKEN at entry {summary.audit_chain.broken_id}")
        sys.exit(1)
