"""`flask protect ...`: operator commands."""
from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup

from .accounts import service as accounts
from .accounts.models import ROLES
from .audit import service as audit
from .errors import DomainError
from .extensions import db

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
        raise click.ClickException(str(exc.message))
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
def demo():
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


@cli.command("audit-verify")
def audit_verify():
    """Check the audit log's hash chain; exit non-zero at the first broken row."""
    result = audit.verify(db.session)
    if result.ok:
        click.echo(f"OK {result.count} entries")
    else:
        click.echo(f"BROKEN at entry {result.broken_id} (after {result.count} good entries)")
        sys.exit(1)
