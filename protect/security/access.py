"""The one access policy.

Every endpoint of the app is declared here with who may reach it. A request
to an endpoint missing from the table is refused (and the test that walks
every URL rule fails), so a new route cannot be open by accident.
Object-level rules (whose case, whose vault) live in each domain's service.
"""
from __future__ import annotations

import logging
from enum import StrEnum

from flask import Flask, abort, current_app, has_app_context, redirect, request, url_for
from flask_login import current_user

log = logging.getLogger(__name__)


class Who(StrEnum):
    PUBLIC = "public"          # anyone, signed in or not
    PASSWORD_OK = "password"   # noqa: S105  (between password and second factor; the view checks)
    SIGNED_IN = "signed-in"    # any role


J, C, S, D, A = "journalist", "caseworker", "supervisor", "donor", "admin"

POLICY: dict[str, Who | frozenset[str]] = {
    "static": Who.PUBLIC,
    "main.index": Who.PUBLIC,
    "main.set_language": Who.PUBLIC,
    "accounts.login": Who.PUBLIC,
    "accounts.second_factor": Who.PASSWORD_OK,
    "accounts.enrol_totp": Who.PASSWORD_OK,
    "accounts.logout": Who.SIGNED_IN,
    "accounts.security": Who.SIGNED_IN,
    "accounts.change_password": Who.SIGNED_IN,
    "accounts.new_recovery_codes": Who.SIGNED_IN,
    "accounts.disable_totp": frozenset({J, D}),
    "accounts.users": frozenset({A}),
    "accounts.new_user": frozenset({A}),
    "accounts.edit_user": frozenset({A}),
    "audit.index": frozenset({A}),
    # Journalists' side of a case (and staff filing a request by phone).
    "intake.my_requests": frozenset({J}),
    "intake.new": frozenset({J, C, S}),
    "intake.step": frozenset({J, C, S}),
    "intake.remove_item": frozenset({J, C, S}),
    "intake.case": frozenset({J}),
    "intake.message": frozenset({J}),
    "intake.add_evidence": frozenset({J}),
    "intake.evidence": frozenset({J}),
    "intake.withdraw": frozenset({J}),
    "intake.appeal": frozenset({J}),
    # Staff side: object-level rules (assigned, queue, supervisor) in cases.service.
    "cases.queue": frozenset({C, S}),
    "cases.case": frozenset({C, S}),
    "cases.act": frozenset({C, S}),
    "cases.measure": frozenset({C, S}),
    "cases.platform_report": frozenset({C, S}),
    "cases.note": frozenset({C, S}),
    "cases.message": frozenset({C, S}),
    "cases.assign": frozenset({C, S}),
    "cases.add_evidence": frozenset({C, S}),
    "cases.evidence": frozenset({C, S}),
    "cases.reveal": frozenset({S}),
    "deadlines.overview": frozenset({S}),
    "deadlines.mine": frozenset({C, S}),
    "deadlines.pause": frozenset({C, S}),
    "deadlines.resume": frozenset({C, S}),
    "deadlines.policies": frozenset({A}),
    "deadlines.closures": frozenset({A}),
    "deadlines.remove_closure": frozenset({A}),
    "notify.index": Who.SIGNED_IN,
    "reports.index": frozenset({D, S}),
    "vault.index": frozenset({J}),
    # Vault release pages: recipients have no account. The link's token (then the
    # session marker it is traded for) is checked in protect/vault/release.py.
    "release.open_link": Who.PUBLIC,
    "release.page": Who.PUBLIC,
    "release.download_file": Who.PUBLIC,
    "release.manifest": Who.PUBLIC,
    "release.download_zip": Who.PUBLIC,
    # Operations (issue 8): probes for load balancers; no personal data, no session needed.
    "ops.healthz": Who.PUBLIC,
    "ops.readyz": Who.PUBLIC,
    # The dead-man's vault, journalist's side (issue 6; vault.index above): the owner's
    # pages; a co-depositor gets vault.add and the two deposit forms. Object-level
    # rules (owner, co-depositor, 404 for anyone else) in vault.service.
    "vault.new": frozenset({J}),
    "vault.vault": frozenset({J}),
    "vault.add": frozenset({J}),
    "vault.add_file": frozenset({J}),
    "vault.add_note": frozenset({J}),
    "vault.delete_deposit": frozenset({J}),
    "vault.cancel_deposit_deletion": frozenset({J}),
    "vault.arm": frozenset({J}),
    "vault.pause": frozenset({J}),
    "vault.disarm": frozenset({J}),
    "vault.check_in": frozenset({J}),
    "vault.refuse_release": frozenset({J}),
    "vault.settings": frozenset({J}),
    "vault.rename": frozenset({J}),
    "vault.webhook": frozenset({J}),
    "vault.pins": frozenset({J}),
    "vault.duress_action": frozenset({J}),
    "vault.recipients": frozenset({J}),
    "vault.remove_recipient": frozenset({J}),
    "vault.codepositors": frozenset({J}),
    "vault.remove_codepositor": frozenset({J}),
    "vault.delete": frozenset({J}),
    "vault.cancel_deletion": frozenset({J}),
    "vault.timeline": frozenset({J}),
    # The vault, staff's side: codes, states and times, never contents. Which
    # journalists (assigned caseworker, any supervisor) is in vault.service.
    "vault_staff.index": frozenset({C, S}),
    "vault_staff.journalist": frozenset({C, S}),
    "vault_staff.confirm_welfare": frozenset({C, S}),
    "vault_staff.request_release": frozenset({C}),
    "vault_staff.report_incident": frozenset({S}),
    "vault_staff.incidents": frozenset({S}),
    "vault_staff.confirm_incident": frozenset({S}),
    # Donor delay reports (issue 7; reports.index above): the report and its PDF, CSV and
    # JSON copies for donors (suppressed, within their scope) and supervisors (whole);
    # the cases behind a figure for supervisors only (checked again in reports.service).
    "reports.report_pdf": frozenset({D, S}),
    "reports.table_csv": frozenset({D, S}),
    "reports.report_json": frozenset({D, S}),
    "reports.cases": frozenset({S}),
}

HOME = {
    J: "intake.my_requests",
    C: "cases.queue",
    S: "deadlines.overview",
    D: "reports.index",
    A: "accounts.users",
}


def home_endpoint(user) -> str:
    return HOME[user.role]


def policy() -> dict:
    """This app's table: POLICY, plus what a test or benchmark app added to it
    (outside an app, the declared POLICY itself)."""
    return current_app.extensions["protect.policy"] if has_app_context() else POLICY


def allowed(endpoint: str, user) -> bool:
    """Whether ``user`` (possibly anonymous) may reach ``endpoint``."""
    rule = policy().get(endpoint)
    if rule is None:
        return False
    if rule in (Who.PUBLIC, Who.PASSWORD_OK):
        return True
    if not user.is_authenticated:
        return False
    return rule is Who.SIGNED_IN or user.role in rule


def _enforce():
    endpoint = request.endpoint
    if endpoint is None:  # no route matched: Flask answers 404/405 itself
        return None
    rule = policy().get(endpoint)
    if rule is None:
        log.error("endpoint %s has no access rule; refused", endpoint)
        abort(403)
    if allowed(endpoint, current_user):
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("accounts.login", next=request.full_path
                                if request.method == "GET" else None))
    abort(403)


def install(app: Flask) -> None:
    app.extensions["protect.policy"] = dict(POLICY)
    app.before_request(_enforce)
