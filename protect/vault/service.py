"""The dead-man's vault: keys, deposits, the check-in schedule, duress, triggers.

Plain functions taking a session and an actor (DESIGN.md, "Dead-man's vault"),
callable from views, the sweep and tests. They never commit (except ``sweep``
and ``collect_garbage``); every state change writes its audit row and its
timeline event in the caller's transaction.

States, as implemented::

    draft ──arm(PIN)──▶ armed ◀──arm(PIN)── disarmed
    armed ──sweep: a reminder threshold──▶ reminded (again at each threshold)
    armed|reminded ──sweep: next_due_at──▶ grace
    grace ──sweep: grace_until, after_grace=release──▶ pending_release
    grace ──sweep: grace_until, after_grace=welfare_hold──▶ welfare_hold
    welfare_hold ──confirm_welfare(caseworker)──▶ armed
    welfare_hold ──sweep: hold_until──▶ pending_release
    armed|reminded|grace|welfare_hold|paused ──check_in(PIN)──▶ armed
    armed|reminded|grace|welfare_hold ──pause(PIN, until)──▶ paused ──sweep: paused_until──▶ armed
    armed|…|paused ──request_release──▶ pending_release (veto window: release_after = now + veto)
    pending_release (request) ──refuse_release(PIN) / check_in(PIN)──▶ armed
    armed|…|paused|pending_release (request) ──disarm(PIN)──▶ disarmed
    armed|…|paused|pending_release (request) ──confirm_incident (2nd supervisor)──▶ pending_release
    any PIN action with the duress PIN, duress_action=alert_and_release ──▶ pending_release
    pending_release ──sweep: release_after──▶ released

The duress PIN does everything the PIN does, and also (silently) writes the
``vault.duress`` audit row, alerts every supervisor, and with
``alert_and_release`` starts the release. Releases started by duress or by a
confirmed incident are *concealed* from the owner: ``shown_state`` keeps
showing what the last PIN action would have produced (``cover_state``), so a
captor holding the journalist's phone learns nothing.
"""
from __future__ import annotations

import functools
import hashlib
import io
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast, overload
from urllib.parse import urlsplit

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, Row, Table, bindparam, case, delete, event, func, select, true, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm.exc import StaleDataError

from ..accounts.models import User
from ..accounts.service import find_by_email
from ..audit import service as audit
from ..cases.codes import OPEN_STATUSES
from ..cases.models import Case
from ..crypto import agefile
from ..crypto.blobs import BlobError, BlobStore
from ..errors import DomainError, NotFound, PermissionDenied
from ..extensions import Session, rowcount, utcnow
from ..notify.service import notify_many
from ..security.passwords import hash_password, verify_password
from . import webhooks
from .models import (
    AFTER_GRACE,
    DURESS_ACTIONS,
    INCIDENT_KINDS,
    CoDepositor,
    Deposit,
    OrphanBlob,
    PinFailure,
    Recipient,
    Release,
    Vault,
    VaultEvent,
    VaultIncident,
)

log = logging.getLogger(__name__)

PIN_MIN, PIN_MAX = 6, 32
ACCESS_CODE_MIN, ACCESS_CODE_MAX = 8, 128
THROTTLE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)
RELEASE_LINK_DAYS = 30
VETO_REMINDER = timedelta(hours=24)
GC_GRACE = timedelta(hours=1)
MAX_NOTE_CHARS = 200_000
MAX_REASON = 2000

# States from which the schedule runs (a check-in is due at some point).
RUNNING = ("armed", "reminded", "grace", "welfare_hold", "paused")
# Causes of release the owner is not shown (a captor may hold the phone).
CONCEALED_CAUSES = ("duress", "incident")

# Bounds of the settings, in hours: (min, max).
BOUNDS = {
    "interval_hours": (24, 90 * 24),
    "grace_hours": (1, 30 * 24),
    "welfare_hold_hours": (1, 30 * 24),
    "max_pause_hours": (1, 90 * 24),
    "veto_hours": (24, 30 * 24),
    "deletion_delay_hours": (24, 30 * 24),
}
MAX_REMINDERS = 5
DOWNLOADS_PER_FILE = (1, 10)
RECIPIENT_LANGUAGES = ("es", "en")
WEBHOOK_URL_MAX = 500

SHOWN_STATES = {
    "draft": _l("Draft"),
    "armed": _l("Armed"),
    "reminded": _l("Check-in due soon"),
    "grace": _l("Check-in overdue (grace period)"),
    "welfare_hold": _l("Waiting for a welfare check"),
    "pending_release": _l("Release requested"),
    "released": _l("Released"),
    "paused": _l("Paused"),
    "disarmed": _l("Disarmed"),
}


# -- errors and outcomes ---------------------------------------------------

class WrongPin(DomainError):
    """Neither PIN matched. The failure is already recorded (it survives a rollback)."""

    def __init__(self):
        super().__init__(_l("That PIN is not right."))


class PinThrottled(DomainError):
    def __init__(self, retry_after: datetime, now: datetime):
        self.retry_after = retry_after
        minutes = max(1, -(-int((retry_after - now).total_seconds()) // 60))
        super().__init__(_l("Too many wrong PINs. For your safety, PIN entry is blocked for "
                            "%(minutes)d more minutes.", minutes=minutes))


class StaleVault(DomainError):
    def __init__(self):
        super().__init__(_l("This vault changed meanwhile (perhaps a scheduled step ran). "
                            "Nothing was done; please try again."))


@dataclass(frozen=True)
class PinOutcome:
    """What a PIN action shows. Equal for the normal and the duress PIN."""

    action: str  # checked_in | armed | paused | disarmed | release_refused
    state: str   # the state the owner is shown
    next_due_at: datetime | None
    paused_until: datetime | None


@dataclass
class Schedule:
    """A vault's settings (hours)."""

    interval_hours: int = 7 * 24
    reminder_hours: tuple[int, ...] = (24, 2)
    grace_hours: int = 48
    after_grace: str = "release"
    welfare_hold_hours: int = 48
    max_pause_hours: int = 30 * 24
    veto_hours: int = 72
    duress_action: str = "alert"
    coerced_deletion_protection: bool = False
    deletion_delay_hours: int = 72
    downloads_per_file: int = 1

    def validate(self) -> None:
        messages = {
            "interval_hours": _l("Check in every 1 to 90 days (in whole hours)."),
            "grace_hours": _l("The grace period is 1 hour to 30 days."),
            "welfare_hold_hours": _l("The welfare-check hold is 1 hour to 30 days."),
            "max_pause_hours": _l("The longest pause is 1 hour to 90 days."),
            "veto_hours": _l("The time to refuse a release request is 1 to 30 days."),
            "deletion_delay_hours": _l("The deletion delay is 1 to 30 days."),
        }
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise DomainError(messages[name])
        hours = list(self.reminder_hours or ())
        if (len(hours) > MAX_REMINDERS or len(set(hours)) != len(hours)
                or any(not isinstance(h, int) or isinstance(h, bool) or not 1 <= h < self.interval_hours
                       for h in hours)):
            raise DomainError(_l("Reminders are up to %(n)d different numbers of hours before the "
                                 "check-in is due, each shorter than the interval.", n=MAX_REMINDERS))
        low, high = DOWNLOADS_PER_FILE
        if (not isinstance(self.downloads_per_file, int) or isinstance(self.downloads_per_file, bool)
                or not low <= self.downloads_per_file <= high):
            raise DomainError(_l("Each recipient may download each file %(low)d to %(high)d times.",
                                 low=low, high=high))
        if self.after_grace not in AFTER_GRACE:
            raise DomainError(_l("Choose what happens after the grace period."))
        if self.duress_action not in DURESS_ACTIONS:
            raise DomainError(_l("Choose what the duress PIN does."))

    @classmethod
    def of(cls, vault: Vault) -> Schedule:
        return cls(**{name: getattr(vault, name) for name in cls.__dataclass_fields__
                      if name != "reminder_hours"}, reminder_hours=tuple(vault.reminder_hours or ()))


@dataclass(frozen=True)
class DepositInfo:
    """A deposit as listed: ``name`` is None when it must show as "encrypted"."""

    id: str
    kind: str
    name: str | None
    size: int
    created_at: datetime
    delete_after: datetime | None
    mine: bool


@dataclass(frozen=True)
class OwnerView:
    """What the owner's pages may show of a vault (a concealed release hidden)."""

    state: str
    next_due_at: datetime | None
    grace_until: datetime | None
    paused_until: datetime | None
    last_checkin_at: datetime | None
    release_after: datetime | None  # only while a release request waits for a veto
    delete_after: datetime | None


# -- small helpers -----------------------------------------------------------

def blob_store() -> BlobStore:
    return current_app.extensions["protect.blobs"]


def _postgres(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def _stamp(at: datetime | None, micro: bool = False) -> str:
    if at is None:
        return "-"
    return at.strftime("%Y%m%dT%H%M%S%f" if micro else "%Y%m%dT%H%M%S")


@overload
def _text(value: str | None, message, *, limit: int, required: Literal[True] = ...) -> str: ...
@overload
def _text(value: str | None, message, *, limit: int, required: bool) -> str | None: ...
def _text(value: str | None, message, *, limit: int, required: bool = True) -> str | None:
    value = (value or "").strip()
    if (required and not value) or len(value) > limit:
        raise DomainError(message)
    return value or None


def _event(db: Session, vault_id: str, kind: str, /, *, actor=None, at: datetime | None = None,
           concealed: bool = False, **data) -> None:
    db.add(VaultEvent(vault_id=vault_id, kind=kind, at=at or utcnow(), actor_id=getattr(actor, "id", None),
                      concealed=concealed, data=data))


def _audit(db: Session, verb: str, target: str, actor=None, /, **codes) -> None:
    audit.record(db, f"vault.{verb}", actor=actor, target=target, **codes)


def _touch(vault: Vault, now: datetime | None = None) -> None:
    vault.updated_at = now or utcnow()


def _guarded(function):
    """A vault changed by someone else (a sweep) since it was loaded: StaleVault,
    whichever flush (an audit row's, the final one) finds out."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except StaleDataError:
            raise StaleVault() from None
    return wrapper


def _flush(db: Session) -> None:
    try:
        db.flush()
    except StaleDataError:
        raise StaleVault() from None


def _lock(db: Session, vault: Vault) -> None:
    """Serialise changes to a vault's recipients and deposits (PostgreSQL row lock)."""
    if _postgres(db):
        db.execute(select(Vault.id).where(Vault.id == vault.id).with_for_update(key_share=True))


def _age_bytes(data: bytes, recipients: list[str]) -> bytes:
    out = io.BytesIO()
    agefile.encrypt(io.BytesIO(data), out, recipients)
    return out.getvalue()


def _valid_age_recipient(key: str) -> bool:
    try:
        _age_bytes(b"", [key])
    except (agefile.AgeError, ValueError):
        return False
    return True


# Blobs to delete once the transaction ends: the old ones after a commit, the
# new ones after a rollback. Blobs left by a crash in between are orphans that
# ``collect_garbage`` removes.
_BLOB_KEY = "protect.vault.blobs"


def _delete_blob_later(db: Session, blob_id: str, *, on: str) -> None:
    db.info.setdefault(_BLOB_KEY, []).append((blob_store(), blob_id, on))


def _delete_blobs(items, on: str) -> None:
    for store, blob_id, when in items:
        if when == on:
            try:
                store.delete(blob_id)
            except (BlobError, OSError) as exc:
                log.warning("could not delete blob %s: %s", blob_id, type(exc).__name__)


@event.listens_for(OrmSession, "after_commit")
def _blobs_after_commit(session):
    items = session.info.pop(_BLOB_KEY, None)
    if items:
        _delete_blobs(items, "commit")


@event.listens_for(OrmSession, "after_transaction_end")
def _blobs_after_rollback(session, transaction):
    if transaction.parent is None and transaction.nested is False:
        items = session.info.pop(_BLOB_KEY, None)  # still here: the transaction did not commit
        if items:
            _delete_blobs(items, "rollback")


# -- people ------------------------------------------------------------------

def assigned_caseworkers(db: Session, journalist_ids) -> dict[str, str | None]:
    """Each journalist's caseworker: the assignee of their most recent open case."""
    ids = sorted(set(journalist_ids))
    found: dict[str, str | None] = {j: None for j in ids}
    for start in range(0, len(ids), 500):
        rows = db.execute(select(Case.petitioner_id, Case.assignee_id)
                          .join(User, User.id == Case.assignee_id)
                          .where(Case.petitioner_id.in_(ids[start:start + 500]),
                                 Case.status.in_(OPEN_STATUSES), User.active)
                          .order_by(Case.petitioner_id, Case.created_at.desc())).all()
        for journalist, assignee in rows:
            if journalist is not None and found.get(journalist) is None:
                found[journalist] = assignee
    return found


def assigned_caseworker(db: Session, journalist_id: str) -> str | None:
    return assigned_caseworkers(db, [journalist_id])[journalist_id]


def _supervisors(db: Session) -> list[str]:
    return list(db.execute(select(User.id).where(User.role == "supervisor", User.active)
                           .order_by(User.id)).scalars())


class _Staff:
    """Who gets a journalist's staff notices: the caseworker, else every supervisor."""

    def __init__(self, db: Session, journalist_ids):
        self.caseworkers = assigned_caseworkers(db, journalist_ids)
        self._supervisors: list[str] | None = None
        self.db = db

    def __call__(self, journalist_id: str) -> list[str]:
        caseworker = self.caseworkers.get(journalist_id)
        if caseworker:
            return [caseworker]
        if self._supervisors is None:
            self._supervisors = _supervisors(self.db)
        return self._supervisors


# -- access ------------------------------------------------------------------

def _valid_id(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value) is not None


def is_owner(user, vault: Vault) -> bool:
    return user is not None and getattr(user, "id", None) == vault.owner_id


def is_codepositor(db: Session, user, vault: Vault) -> bool:
    return user is not None and db.execute(select(CoDepositor.id).where(
        CoDepositor.vault_id == vault.id, CoDepositor.user_id == user.id)).first() is not None


def _looks_deleted(vault: Vault) -> bool:
    """Deleted by its owner during a concealed release: kept until the release is done,
    but to whoever holds the phone it must look gone, as an unprotected deletion is."""
    return vault.delete_after is not None and concealed(vault) and not vault.coerced_deletion_protection


def get_vault(db: Session, user, vault_id: str) -> Vault:
    """The vault, for its owner only; anyone else (staff included) gets NotFound."""
    vault = db.get(Vault, vault_id) if _valid_id(vault_id) else None
    if vault is None or not is_owner(user, vault) or user.role != "journalist" or _looks_deleted(vault):
        raise NotFound(_l("No such vault."))
    return vault


def get_vault_for_deposit(db: Session, user, vault_id: str) -> Vault:
    """The vault, for its owner or a co-depositor (who may only add deposits)."""
    vault = db.get(Vault, vault_id) if _valid_id(vault_id) else None
    if vault is None or user is None or user.role != "journalist" or _looks_deleted(vault) or not (
            is_owner(user, vault) or is_codepositor(db, user, vault)):
        raise NotFound(_l("No such vault."))
    return vault


def list_vaults(db: Session, user) -> list[Vault]:
    if user.role != "journalist":
        return []
    return [vault for vault in db.execute(select(Vault).where(Vault.owner_id == user.id)
                                          .order_by(Vault.created_at)).scalars() if not _looks_deleted(vault)]


def codeposit_vaults(db: Session, user) -> list[Vault]:
    """Vaults ``user`` may add to without owning them (show no title: it is the owner's)."""
    return list(db.execute(select(Vault).join(CoDepositor, CoDepositor.vault_id == Vault.id)
                           .where(CoDepositor.user_id == user.id).order_by(Vault.created_at)).scalars())


def _require_owner(user, vault: Vault) -> None:
    if not is_owner(user, vault) or user.role != "journalist":
        raise NotFound(_l("No such vault."))


def staff_vaults(db: Session, actor: User, journalist: User) -> list[tuple[str, str, datetime | None]]:
    """(id, real state, next due) of a journalist's vaults, for a supervisor or their
    caseworker: no title, no deposit, nothing to read."""
    rows, _total = staff_overview(db, actor, journalist=journalist, per_page=None)
    return [(row.id, row.state, row.next_due_at) for row in rows]


@dataclass(frozen=True)
class StaffVault:
    """A vault as staff see it: codes, the real state and its times; nothing to read."""

    id: str
    journalist_id: str
    reference: str | None  # of the journalist's most recent open case
    case_id: str | None
    state: str
    release_cause: str | None
    next_due_at: datetime | None
    grace_until: datetime | None
    hold_until: datetime | None
    release_after: datetime | None


# Vaults needing someone first: a welfare check, a missed check-in, a release under way.
_ATTENTION = {"welfare_hold": 0, "grace": 1, "pending_release": 2, "reminded": 3}


def _latest_open_case(column, journalist=Vault.owner_id, *, active_assignee: bool = False):
    """``column`` of the most recent open case of ``journalist`` (a column of the
    outer query: a correlated subquery)."""
    query = select(column).where(Case.petitioner_id == journalist, Case.status.in_(OPEN_STATUSES))
    if active_assignee:  # as assigned_caseworkers: the latest case with an active assignee
        query = query.join(User, User.id == Case.assignee_id).where(User.active)
    return query.order_by(Case.created_at.desc()).limit(1).correlate(journalist.class_).scalar_subquery()


def staff_overview(db: Session, actor: User, *, journalist: User | None = None, page: int = 1,
                   per_page: int | None = 50) -> tuple[list[StaffVault], int]:
    """The vaults a supervisor (all) or a caseworker (their journalists') may
    watch, those needing attention first; one journalist's with ``journalist``.
    Returns (one page of rows, how many in all)."""
    where: ColumnElement[bool]
    if actor.role == "supervisor":
        where = true()
    elif actor.role == "caseworker":
        where = _latest_open_case(Case.assignee_id, active_assignee=True) == actor.id
    else:
        raise PermissionDenied(_l("You cannot see this journalist's vaults."))
    if journalist is not None:
        if not (actor.role == "supervisor" or assigned_caseworker(db, journalist.id) == actor.id):
            raise PermissionDenied(_l("You cannot see this journalist's vaults."))
        where = Vault.owner_id == journalist.id
    total = db.execute(select(func.count()).select_from(Vault).where(where)).scalar_one()
    query = (select(Vault.id, Vault.owner_id, _latest_open_case(Case.reference), _latest_open_case(Case.id),
                    Vault.state, Vault.release_cause, Vault.next_due_at, Vault.grace_until, Vault.hold_until,
                    Vault.release_after)
             .where(where)
             .order_by(case(_ATTENTION, value=Vault.state, else_=len(_ATTENTION)),
                       Vault.next_due_at.is_(None), Vault.next_due_at, Vault.created_at, Vault.id))
    if per_page is not None:
        query = query.limit(per_page).offset((max(page, 1) - 1) * per_page)
    return [StaffVault(*row) for row in db.execute(query)], total


def staff_journalist(db: Session, actor: User, journalist_id: str) -> User:
    """A journalist whose vaults ``actor`` may watch; NotFound otherwise (no probing)."""
    journalist = db.get(User, journalist_id) if _valid_id(journalist_id) else None
    if journalist is None or journalist.role != "journalist" or not (
            actor.role == "supervisor"
            or (actor.role == "caseworker" and assigned_caseworker(db, journalist.id) == actor.id)):
        raise NotFound(_l("No such journalist."))
    return journalist


def staff_vault(db: Session, actor: User, vault_id: str) -> Vault:
    """A vault for a supervisor or its owner's caseworker to act on (not to read)."""
    vault = db.get(Vault, vault_id) if _valid_id(vault_id) else None
    if vault is None:
        raise NotFound(_l("No such vault."))
    staff_journalist(db, actor, vault.owner_id)
    return vault


# -- what the owner is shown -------------------------------------------------

def concealed(vault: Vault) -> bool:
    return (vault.state in ("pending_release", "released") and vault.release_cause in CONCEALED_CAUSES
            and vault.cover_state is not None)


def shown_state(vault: Vault) -> str:
    cover = vault.cover_state
    return cover if cover is not None and concealed(vault) else vault.state


def owner_view(vault: Vault) -> OwnerView:
    state = shown_state(vault)
    return OwnerView(
        state=state,
        next_due_at=vault.next_due_at if state in RUNNING else None,
        grace_until=vault.grace_until if state in ("grace", "welfare_hold") else None,
        paused_until=vault.paused_until if state == "paused" else None,
        last_checkin_at=vault.last_checkin_at,
        release_after=vault.release_after if state == "pending_release" and (
            vault.release_cause == "request" or concealed(vault)) else None,
        delete_after=vault.delete_after)


def timeline(db: Session, user, vault: Vault) -> list[VaultEvent]:
    """The owner's timeline: concealed events left out."""
    _require_owner(user, vault)
    return list(db.execute(select(VaultEvent).where(VaultEvent.vault_id == vault.id,
                                                    VaultEvent.concealed.is_(False))
                           .order_by(VaultEvent.at, VaultEvent.id)).scalars())


# -- creating and configuring ------------------------------------------------

def _apply_schedule(vault: Vault, schedule: Schedule) -> None:
    schedule.validate()
    for name in Schedule.__dataclass_fields__:
        value = getattr(schedule, name)
        setattr(vault, name, sorted(value, reverse=True) if name == "reminder_hours" else value)


def create_vault(db: Session, owner: User, title: str, *, recipients_only: bool = False,
                 schedule: Schedule | None = None) -> Vault:
    if owner.role != "journalist":
        raise PermissionDenied(_l("Only journalists keep vaults."))
    title = _text(title, _l("Give the vault a name (up to 200 characters)."), limit=200)
    vault = Vault(owner_id=owner.id, state="draft", recipients_only=bool(recipients_only))
    vault.title = title
    _apply_schedule(vault, schedule or Schedule())
    if not recipients_only:
        secret, recipient = agefile.generate_identity()
        vault.release_secret = secret.encode()
        vault.release_recipient = recipient
    now = utcnow()
    vault.created_at = vault.updated_at = now
    db.add(vault)
    _event(db, vault.id, "created", actor=owner, at=now, recipients_only=vault.recipients_only)
    _audit(db, "created", vault.id, owner, recipients_only=vault.recipients_only)
    return vault


@_guarded
def rename(db: Session, owner: User, vault: Vault, title: str) -> None:
    _require_owner(owner, vault)
    vault.title = _text(title, _l("Give the vault a name (up to 200 characters)."), limit=200)
    _touch(vault)
    _flush(db)


@_guarded
def update_settings(db: Session, owner: User, vault: Vault, schedule: Schedule) -> None:
    """Change the schedule and protections: only while the vault is not armed."""
    _require_owner(owner, vault)
    if shown_state(vault) not in ("draft", "disarmed"):
        raise DomainError(_l("Disarm the vault (with your PIN) before changing its schedule; "
                             "arm it again afterwards."))
    _apply_schedule(vault, schedule)
    _touch(vault)
    _event(db, vault.id, "settings_changed", actor=owner)
    _audit(db, "settings_changed", vault.id, owner, interval_hours=vault.interval_hours,
           after_grace=vault.after_grace, duress_action=vault.duress_action,
           coerced_deletion_protection=vault.coerced_deletion_protection,
           downloads_per_file=vault.downloads_per_file)
    _flush(db)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def valid_webhook_url(url: str | None) -> str | None:
    """A messaging bridge's address: https (plain http only to this machine, outside
    production), no user or password in it; None when empty (no webhook)."""
    url = (url or "").strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        parts = None
    local = current_app.extensions["protect.settings"].env in ("development", "test")
    if (parts is None or len(url) > WEBHOOK_URL_MAX or not url.isprintable() or " " in url
            or not parts.hostname or parts.username is not None or parts.password is not None
            or not (parts.scheme == "https" or (parts.scheme == "http" and local and _loopback(parts.hostname)))):
        raise DomainError(_l("Give the messaging bridge's full address, starting with https:// "
                             "(up to %(n)d characters).", n=WEBHOOK_URL_MAX))
    return url


@_guarded
def set_webhook(db: Session, owner: User, vault: Vault, url: str | None) -> None:
    """Set (or, empty, remove) the messaging bridge the owner's notices are also posted to."""
    _require_owner(owner, vault)
    url = valid_webhook_url(url)
    vault.webhook_url = url
    _touch(vault)
    kind = "webhook_set" if url else "webhook_removed"
    _event(db, vault.id, kind, actor=owner)
    _audit(db, kind, vault.id, owner)
    _flush(db)


def _valid_pin(pin: str | None) -> str:
    pin = (pin or "").strip()
    if not PIN_MIN <= len(pin) <= PIN_MAX:
        raise DomainError(_l("A PIN has %(min)d to %(max)d digits or characters.", min=PIN_MIN, max=PIN_MAX))
    return pin


@_guarded
def set_pins(db: Session, owner: User, vault: Vault, *, pin: str, duress_pin: str,
             current_pin: str | None = None) -> None:
    """Set both PINs. Once set, changing them needs a current PIN; given the
    duress PIN, the change is made too (as every PIN action) and the
    supervisors are silently alerted."""
    _require_owner(owner, vault)
    new, duress = _valid_pin(pin), _valid_pin(duress_pin)
    if new == duress:
        raise DomainError(_l("The duress PIN must differ from the PIN."))
    which = _check_pin(db, vault, current_pin) if vault.pin_hash is not None else "normal"
    vault.pin_hash = hash_password(new)
    vault.duress_pin_hash = hash_password(duress)
    _touch(vault)
    _event(db, vault.id, "pins_set", actor=owner)
    if which == "normal":
        _audit(db, "pins_set", vault.id, owner)
    else:
        _alert_duress(db, vault, "set_pins", utcnow(), cover_state=shown_state(vault))
    _flush(db)


# -- recipients and co-depositors ----------------------------------------------

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _live_deposits(db: Session, vault: Vault) -> list[Deposit]:
    return list(db.execute(select(Deposit).where(Deposit.vault_id == vault.id, Deposit.deleted_at.is_(None))
                           .order_by(Deposit.created_at)).scalars())


def deposit_recipients(vault: Vault) -> list[str]:
    """The age recipients every deposit is encrypted to: the release identity
    (unless recipients-only) and each recipient's own key."""
    keys = [] if vault.recipients_only or not vault.release_recipient else [vault.release_recipient]
    keys += [r.age_recipient for r in vault.recipients if r.age_recipient]
    keys = list(dict.fromkeys(keys))
    if not keys:
        raise DomainError(_l("This vault is recipients-only: add a recipient with an age key "
                             "(age1…) before depositing anything."))
    return keys


def release_identity(vault: Vault) -> str | None:
    """The vault's AGE-SECRET-KEY (unwrapped with the master key); None in recipients-only mode."""
    secret = vault.release_secret
    return secret.decode() if secret is not None else None


@_guarded
def add_recipient(db: Session, owner: User, vault: Vault, *, name: str, email: str,
                  age_recipient: str | None = None, access_code: str | None = None,
                  language: str = "es") -> Recipient:
    """Add a recipient. With a key, existing deposits are re-wrapped for it
    (their headers rewritten, payloads copied unchanged) — or, in a
    recipients-only vault holding deposits, refused: the server cannot.
    ``language`` is that of their release e-mail and pages (they have no account).
    During a concealed release the owner's page must go on looking normal: the
    recipient is kept, but nothing already deposited is re-wrapped for them."""
    _require_owner(owner, vault)
    if shown_state(vault) == "released":
        raise DomainError(_l("This vault was released; its recipients can no longer change."))
    name = _text(name, _l("Give the recipient's name (up to 200 characters)."), limit=200)
    email = _text(email, _l("Give the recipient's e-mail address."), limit=254)
    if not EMAIL_RE.fullmatch(email):
        raise DomainError(_l("Give the recipient's e-mail address."))
    if language not in RECIPIENT_LANGUAGES:
        raise DomainError(_l("Choose the language of the recipient's e-mail."))
    key = (age_recipient or "").strip() or None
    if key is not None:
        if key.upper().startswith("AGE-SECRET-KEY-"):
            raise DomainError(_l("That is a secret key: it was not kept. Never share it; give the "
                                 "public key, which starts with age1."))
        if not _valid_age_recipient(key):
            raise DomainError(_l("That is not an age public key. It starts with age1 and is one line, "
                                 "as printed by age-keygen."))
        if key == vault.release_recipient or key in {r.age_recipient for r in vault.recipients}:
            raise DomainError(_l("That key is already one of this vault's recipients."))
    elif vault.recipients_only:
        raise DomainError(_l("In a recipients-only vault every recipient needs an age key: the "
                             "server cannot decrypt anything for a recipient without one."))
    code = (access_code or "").strip() or None
    if key is None and code is None:
        raise DomainError(_l("A recipient without an age key needs an access code, which you give "
                             "them yourself (not by e-mail)."))
    if code is not None and not ACCESS_CODE_MIN <= len(code) <= ACCESS_CODE_MAX:
        raise DomainError(_l("An access code has %(min)d to %(max)d characters.",
                             min=ACCESS_CODE_MIN, max=ACCESS_CODE_MAX))
    _lock(db, vault)
    deposits = _live_deposits(db, vault) if key is not None and not concealed(vault) else []
    if deposits and vault.recipients_only:
        raise DomainError(_l("This vault is recipients-only, so the server cannot re-encrypt what is "
                             "already inside for a new recipient. Delete the deposits, add the "
                             "recipient, then deposit the files again."))
    recipient = Recipient(vault_id=vault.id, age_recipient=key, language=language, created_at=utcnow())
    recipient.name = name
    recipient.email = email
    recipient.access_code_hash = hash_password(code) if code is not None else None
    vault.recipients.append(recipient)
    if deposits:
        _rewrap(db, vault, deposits, deposit_recipients(vault))
    _touch(vault)
    _event(db, vault.id, "recipient_added", actor=owner, recipient=recipient.id, keyed=key is not None)
    _audit(db, "recipient_added", vault.id, owner, recipient=recipient.id, keyed=key is not None,
           rewrapped=len(deposits))
    _flush(db)
    return recipient


def recipient_of(vault: Vault, recipient_id: str) -> Recipient:
    for recipient in vault.recipients:
        if recipient.id == recipient_id:
            return recipient
    raise NotFound(_l("No such recipient."))


@_guarded
def remove_recipient(db: Session, owner: User, vault: Vault, recipient: Recipient) -> None:
    """Remove a recipient while the vault is not armed. Re-wrapping drops their
    stanza, but whoever already holds a file key keeps it (age cannot revoke)."""
    _require_owner(owner, vault)
    if recipient.vault_id != vault.id:
        raise NotFound(_l("No such recipient."))
    if shown_state(vault) not in ("draft", "disarmed") or concealed(vault):
        raise DomainError(_l("Disarm the vault (with your PIN) before removing a recipient."))
    _lock(db, vault)
    deposits = _live_deposits(db, vault) if recipient.age_recipient else []
    if deposits and vault.recipients_only:
        raise DomainError(_l("This vault is recipients-only, so the server cannot re-encrypt what is "
                             "already inside. Delete the deposits first, then the recipient."))
    vault.recipients.remove(recipient)
    if deposits:
        _rewrap(db, vault, deposits, deposit_recipients(vault))
    _touch(vault)
    _event(db, vault.id, "recipient_removed", actor=owner, recipient=recipient.id)
    _audit(db, "recipient_removed", vault.id, owner, recipient=recipient.id, rewrapped=len(deposits))
    _flush(db)


def _rewrap(db: Session, vault: Vault, deposits: list[Deposit], recipients: list[str]) -> None:
    """New headers for ``recipients`` on every deposit; payload bytes copied as they are."""
    secret = release_identity(vault)
    if secret is None:  # (callers refuse recipients-only vaults: the server cannot re-wrap)
        raise ValueError("a recipients-only vault cannot be re-wrapped")
    identity = [secret]
    store = blob_store()
    for deposit in deposits:
        old_blob = deposit.blob_id
        if old_blob is None:  # (a tombstone: nothing left to re-wrap)
            continue
        writer = store.writer()
        try:
            with store.open(old_blob) as src:
                agefile.rewrite_header(src, writer, identity, recipients)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        _delete_blob_later(db, writer.blob_id, on="rollback")
        _delete_blob_later(db, old_blob, on="commit")
        deposit.blob_id = writer.blob_id
        if deposit.name_age is not None:
            out = io.BytesIO()
            agefile.rewrite_header(io.BytesIO(deposit.name_age), out, identity, recipients)
            deposit.name_age = out.getvalue()


@_guarded
def add_codepositor(db: Session, owner: User, vault: Vault, user: User) -> CoDepositor:
    _require_owner(owner, vault)
    if user.role != "journalist" or user.id == owner.id or not user.active:
        raise DomainError(_l("Only another journalist's account can be a co-depositor."))
    if is_codepositor(db, user, vault):
        raise DomainError(_l("This person is already a co-depositor."))
    row = CoDepositor(vault_id=vault.id, user_id=user.id, created_at=utcnow())
    db.add(row)
    _event(db, vault.id, "codepositor_added", actor=owner, user=user.id)
    _audit(db, "codepositor_added", vault.id, owner, user=user.id)
    return row


@_guarded
def remove_codepositor(db: Session, owner: User, vault: Vault, user_id: str) -> None:
    _require_owner(owner, vault)
    gone = rowcount(db.execute(delete(CoDepositor).where(CoDepositor.vault_id == vault.id,
                                                         CoDepositor.user_id == user_id)))
    if not gone:
        raise NotFound(_l("No such co-depositor."))
    _event(db, vault.id, "codepositor_removed", actor=owner, user=user_id)
    _audit(db, "codepositor_removed", vault.id, owner, user=user_id)


def invite_codepositor(db: Session, owner: User, vault: Vault, email: str) -> None:
    """Make the journalist account with this e-mail a co-depositor. Whether the
    e-mail names an account is not told: one that names no other active
    journalist (or one already invited) changes nothing and raises nothing."""
    _require_owner(owner, vault)
    email = _text(email, _l("Give the e-mail address of their account."), limit=254)
    user = find_by_email(db, email)
    if (user is None or user.role != "journalist" or not user.active or user.id == owner.id
            or is_codepositor(db, user, vault)):
        return
    add_codepositor(db, owner, vault, user)


def codepositors(db: Session, owner: User, vault: Vault) -> list[tuple[User, datetime]]:
    """(account, invited at) of each co-depositor, for the owner."""
    _require_owner(owner, vault)
    return [(user, at) for user, at in db.execute(
        select(User, CoDepositor.created_at).join(CoDepositor, CoDepositor.user_id == User.id)
        .where(CoDepositor.vault_id == vault.id).order_by(CoDepositor.created_at))]


# -- deposits ---------------------------------------------------------------

def _may_deposit(db: Session, actor: User, vault: Vault) -> None:
    if actor is None or actor.role != "journalist" or not (
            is_owner(actor, vault) or is_codepositor(db, actor, vault)):
        raise NotFound(_l("No such vault."))
    if shown_state(vault) == "released":  # a concealed release takes deposits as if armed
        raise DomainError(_l("This vault was released; nothing more can be added."))


def _filename(value: str | None) -> str:
    name = (value or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or "file"


@_guarded
def add_file_deposit(db: Session, actor: User, vault: Vault, upload) -> Deposit:
    """Keep an upload already encrypted (by the uploads layer) to ``deposit_recipients(vault)``.

    The header is checked against the vault's current recipients: when they
    changed while the file was arriving, the server re-wraps it (or, in a
    recipients-only vault, refuses: the file must be sent again).
    """
    _may_deposit(db, actor, vault)
    if not getattr(upload, "finished", False):
        raise DomainError(_l("The file did not arrive completely. Nothing was kept; please send it again."))
    _lock(db, vault)
    db.expire(vault, ["recipients"])
    recipients = deposit_recipients(vault)
    blob_id = upload.commit()  # the blob before the row: a crash leaves an orphan, never a dangling row
    _delete_blob_later(db, blob_id, on="rollback")
    blob_id = _ensure_encrypted_to(db, vault, blob_id, recipients)
    name = _filename(upload.filename)
    deposit = Deposit(vault_id=vault.id, kind="file", size=upload.size, blob_id=blob_id,
                      created_by_id=actor.id, created_at=utcnow())
    if not vault.recipients_only:
        deposit.filename = name
    deposit.name_age = _age_bytes(name.encode(), recipients)
    db.add(deposit)
    _event(db, vault.id, "deposit_added", actor=actor, deposit=deposit.id, kind="file")
    _audit(db, "deposit_added", vault.id, actor, deposit=deposit.id, kind="file", size=upload.size)
    return deposit


def _ensure_encrypted_to(db: Session, vault: Vault, blob_id: str, recipients: list[str]) -> str:
    store = blob_store()
    with store.open(blob_id) as src:
        header = agefile.read_header(src)
    identity = release_identity(vault)
    ok = len(header.stanzas) == len(recipients) and all(s.type == "X25519" for s in header.stanzas)
    if ok and identity is not None:
        try:
            agefile.unwrap_file_key(header, [identity])
        except agefile.AgeError:
            ok = False
    if ok:
        return blob_id
    if identity is None:
        raise DomainError(_l("The vault's recipients changed while the file was being sent. "
                             "Nothing was kept; please send the file again."))
    writer = store.writer()
    try:
        with store.open(blob_id) as src:
            agefile.rewrite_header(src, writer, [identity], recipients)
        writer.commit()
    except agefile.AgeError:
        writer.abort()
        raise DomainError(_l("The file was not encrypted for this vault. Nothing was kept.")) from None
    except BaseException:
        writer.abort()
        raise
    _delete_blob_later(db, writer.blob_id, on="rollback")
    _delete_blob_later(db, blob_id, on="commit")
    return writer.blob_id


@_guarded
def add_note(db: Session, actor: User, vault: Vault, text: str) -> Deposit:
    """A text note, age-encrypted into a blob like any deposit."""
    _may_deposit(db, actor, vault)
    text = _text(text, _l("Write the note (up to %(n)d characters).", n=MAX_NOTE_CHARS),
                 limit=MAX_NOTE_CHARS)
    _lock(db, vault)
    db.expire(vault, ["recipients"])
    recipients = deposit_recipients(vault)
    data = text.encode()
    store = blob_store()
    writer = store.writer()
    try:
        with agefile.open_encrypted(writer, recipients) as age:
            age.write(data)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    _delete_blob_later(db, writer.blob_id, on="rollback")
    deposit = Deposit(vault_id=vault.id, kind="note", size=len(data), blob_id=writer.blob_id,
                      created_by_id=actor.id, created_at=utcnow())
    db.add(deposit)
    _event(db, vault.id, "deposit_added", actor=actor, deposit=deposit.id, kind="note")
    _audit(db, "deposit_added", vault.id, actor, deposit=deposit.id, kind="note", size=len(data))
    return deposit


def deposit_of(db: Session, vault: Vault, deposit_id: str) -> Deposit:
    """A live deposit of ``vault``; NotFound otherwise."""
    deposit = db.get(Deposit, deposit_id) if _valid_id(deposit_id) else None
    if deposit is None or deposit.vault_id != vault.id or deposit.deleted_at is not None:
        raise NotFound(_l("No such deposit."))
    return deposit


def deposits(db: Session, user: User, vault: Vault) -> list[DepositInfo]:
    """What is inside. The owner sees names (none in a recipients-only vault:
    the server cannot read them); a co-depositor sees every name as encrypted."""
    owner = is_owner(user, vault) and user.role == "journalist"
    if not owner and not (user.role == "journalist" and is_codepositor(db, user, vault)):
        raise NotFound(_l("No such vault."))
    show_names = owner and not vault.recipients_only
    # Deletions a concealed release holds back look done (delete_deposit).
    held_back = concealed(vault) and not vault.coerced_deletion_protection
    return [DepositInfo(d.id, d.kind, d.filename if show_names and d.kind == "file" else None, d.size,
                        d.created_at, d.delete_after, d.created_by_id == user.id)
            for d in _live_deposits(db, vault) if not (held_back and d.delete_after is not None)]


def _staff_notes(db: Session, vault: Vault, kind: str, key: str, **data) -> list[dict]:
    staff = _Staff(db, [vault.owner_id])
    return [{"key": f"{key}:{user}", "user_id": user, "kind": kind,
             "data": {"vault": vault.id, "journalist": vault.owner_id, **data}}
            for user in staff(vault.owner_id)]


def _shred_deposit(db: Session, deposit: Deposit, now: datetime) -> None:
    """Crypto-shred: the blob is the only copy of the file's key (wrapped in its
    header) and of its payload; deleting it leaves nothing to decrypt."""
    if deposit.blob_id:
        _delete_blob_later(db, deposit.blob_id, on="commit")
    deposit.blob_id = None
    deposit.filename = None
    deposit.name_age = None
    deposit.deleted_at = now
    deposit.delete_after = None


@_guarded
def delete_deposit(db: Session, actor: User, vault: Vault, deposit: Deposit) -> str:
    """Delete a deposit now ("deleted") or, with coerced-deletion protection,
    after the delay, telling the caseworker ("scheduled")."""
    _require_owner(actor, vault)
    if deposit.vault_id != vault.id or deposit.deleted_at is not None:
        raise NotFound(_l("No such deposit."))
    now = utcnow()
    if vault.coerced_deletion_protection or concealed(vault):
        # During a concealed release the deletion waits too; without the protection on, it
        # must look done at once to whoever holds the phone (a delay would give the release away).
        looks_done = not vault.coerced_deletion_protection
        if deposit.delete_after is None:
            deposit.delete_after = now + timedelta(hours=vault.deletion_delay_hours)
            notify_many(db, _staff_notes(db, vault, "vault_deletion_scheduled",
                                         f"vault:{vault.id}:delete:{deposit.id}:{_stamp(now)}",
                                         deposit=deposit.id, delete_after=deposit.delete_after.isoformat()))
            _event(db, vault.id, "deposit_deleted" if looks_done else "deposit_deletion_scheduled",
                   actor=actor, at=now, deposit=deposit.id)
            _audit(db, "deposit_deletion_scheduled", vault.id, actor, deposit=deposit.id,
                   delay_hours=vault.deletion_delay_hours)
        return "deleted" if looks_done else "scheduled"
    _shred_deposit(db, deposit, now)
    _event(db, vault.id, "deposit_deleted", actor=actor, at=now, deposit=deposit.id)
    _audit(db, "deposit_deleted", vault.id, actor, deposit=deposit.id)
    return "deleted"


@_guarded
def cancel_deletion(db: Session, owner: User, vault: Vault, deposit: Deposit | None = None) -> None:
    """Stop a delayed deletion (of one deposit, or of the vault when ``deposit`` is None)."""
    _require_owner(owner, vault)
    if deposit is None:
        if vault.delete_after is None:
            raise DomainError(_l("Nothing is waiting to be deleted."))
        vault.delete_after = None
        _touch(vault)
    else:
        if deposit.vault_id != vault.id or deposit.delete_after is None or deposit.deleted_at is not None:
            raise DomainError(_l("Nothing is waiting to be deleted."))
        deposit.delete_after = None
    _event(db, vault.id, "deletion_cancelled", actor=owner, deposit=getattr(deposit, "id", None))
    _audit(db, "deletion_cancelled", vault.id, owner, deposit=getattr(deposit, "id", None))
    _flush(db)


@_guarded
def delete_vault(db: Session, owner: User, vault: Vault) -> str:
    """Crypto-shred the vault: its wrapped release secret, every blob, every row
    ("deleted"); with coerced-deletion protection, after the delay ("scheduled")."""
    _require_owner(owner, vault)
    now = utcnow()
    if vault.coerced_deletion_protection or concealed(vault):
        looks_done = not vault.coerced_deletion_protection  # as for a deposit (delete_deposit)
        if vault.delete_after is None:
            vault.delete_after = now + timedelta(hours=vault.deletion_delay_hours)
            _touch(vault, now)
            notify_many(db, _staff_notes(db, vault, "vault_deletion_scheduled",
                                         f"vault:{vault.id}:delete:{_stamp(now)}",
                                         delete_after=vault.delete_after.isoformat()))
            _event(db, vault.id, "deletion_scheduled", actor=owner, at=now)
            _audit(db, "deletion_scheduled", vault.id, owner, delay_hours=vault.deletion_delay_hours)
            _flush(db)
        return "deleted" if looks_done else "scheduled"
    _flush(db)
    vault_id, version = vault.id, vault.version
    claimed = rowcount(db.execute(update(V).where(V.c.id == vault_id, V.c.version == version)
                                  .values(version=version + 1, release_secret=None)))
    if claimed != 1:
        raise StaleVault()
    db.expunge(vault)
    _destroy(db, [vault_id])
    _audit(db, "deleted", vault_id, owner)
    return "deleted"


def _destroy(db: Session, vault_ids: list[str]) -> None:
    """Delete claimed vaults' deposits (blobs after commit) and rows."""
    blob_ids = db.execute(delete(D).where(D.c.vault_id.in_(vault_ids)).returning(D.c.blob_id)).scalars().all()
    for blob_id in blob_ids:
        if blob_id:
            _delete_blob_later(db, blob_id, on="commit")
    db.execute(delete(V).where(V.c.id.in_(vault_ids)))


# -- PINs ------------------------------------------------------------------

def _check_pin(db: Session, vault: Vault, pin: str | None) -> str:
    """"normal" or "duress"; raises WrongPin (recorded) or PinThrottled.

    Both hashes are always verified, so the time taken does not tell which
    PIN matched.
    """
    now = utcnow()
    recent = list(db.execute(select(PinFailure.at).where(
        PinFailure.vault_id == vault.id, PinFailure.at > now - THROTTLE_WINDOW)
        .order_by(PinFailure.at.desc()).limit(THROTTLE_FAILURES)).scalars())
    if len(recent) >= THROTTLE_FAILURES:
        raise PinThrottled(recent[-1] + THROTTLE_WINDOW, now)
    pin = (pin or "").strip()[:PIN_MAX * 4]
    normal = verify_password(vault.pin_hash, pin)
    duress = verify_password(vault.duress_pin_hash, pin)
    if not (normal or duress):
        _record_failure(db, vault.id, now)
        raise WrongPin()
    db.execute(delete(PinFailure).where(PinFailure.vault_id == vault.id))
    return "normal" if normal else "duress"


def _record_failure(db: Session, vault_id: str, now: datetime) -> None:
    """Write the failure in its own transaction, so the caller's rollback (views
    roll back on errors) cannot erase it and lift the throttle."""
    bind = db.get_bind()
    if bind.dialect.name == "sqlite":
        raw = db.connection().connection.dbapi_connection
        if raw is not None and raw.in_transaction:  # our own write lock would block a second connection
            db.add(PinFailure(vault_id=vault_id, at=now))
            return
    try:
        with OrmSession(bind=bind) as own:
            if bind.dialect.name == "postgresql":
                own.execute(select(func.set_config("lock_timeout", "2000", True)))
            own.add(PinFailure(vault_id=vault_id, at=now))
            own.commit()
    except OperationalError:
        log.warning("PIN failure for vault %s recorded in the caller's transaction", vault_id)
        db.add(PinFailure(vault_id=vault_id, at=now))


def _alert_duress(db: Session, vault: Vault, action: str, now: datetime, *, cover_state: str | None) -> None:
    """The duress PIN was used: the security record, every supervisor told, and
    (when the journalist chose so) the release started, concealed."""
    _audit(db, "duress", vault.id, None, via=action, duress_action=vault.duress_action)
    notify_many(db, [{"key": f"vault:{vault.id}:duress:{_stamp(now, micro=True)}:{user}", "user_id": user,
                      "kind": "vault_duress",
                      "data": {"vault": vault.id, "journalist": vault.owner_id, "via": action}}
                     for user in _supervisors(db)])
    if (vault.duress_action == "alert_and_release" and cover_state is not None and vault.recipients
            and vault.state not in ("pending_release", "released")):
        _start_release(db, vault, "duress", now, cover_state=cover_state)


def _schedule(vault: Vault, start: datetime, now: datetime) -> None:
    """Next check-in due ``interval`` after ``start``; the later steps follow from it."""
    vault.next_due_at = start + timedelta(hours=vault.interval_hours)
    vault.grace_until = vault.next_due_at + timedelta(hours=vault.grace_hours)
    vault.hold_until = vault.grace_until + timedelta(hours=vault.welfare_hold_hours)
    vault.next_reminder_at = _next_reminder(vault.next_due_at, vault.reminder_hours, now)


def _next_reminder(due: datetime, hours, after: datetime) -> datetime | None:
    for at in sorted(due - timedelta(hours=h) for h in hours or ()):
        if at > after:
            return at
    return None


def _clear_request(vault: Vault) -> None:
    vault.release_cause = None
    vault.release_after = None
    vault.release_reason = None
    vault.release_requested_by_id = None
    vault.release_requested_by_recipient_id = None


def _start_release(db: Session, vault: Vault, cause: str, now: datetime, *, cover_state: str | None = None,
                   release_after: datetime | None = None, actor=None) -> None:
    if cause != "request":
        _clear_request(vault)
    vault.state = "pending_release"
    vault.release_cause = cause
    vault.release_after = release_after or now
    vault.cover_state = cover_state if cause in CONCEALED_CAUSES else None
    vault.next_reminder_at = None
    _touch(vault, now)
    _event(db, vault.id, "release_started", actor=actor, at=now, concealed=cause in CONCEALED_CAUSES,
           cause=cause)
    _audit(db, "release_started", vault.id, actor, cause=cause)


# PIN actions: allowed from which shown states, and what the owner then sees.
_PIN_ACTIONS = {
    "arm": ({"draft", "disarmed"}, "armed"),
    "check_in": ({"armed", "reminded", "grace", "welfare_hold", "paused", "pending_release"}, "armed"),
    "pause": ({"armed", "reminded", "grace", "welfare_hold"}, "paused"),
    "disarm": ({"armed", "reminded", "grace", "welfare_hold", "paused", "pending_release"}, "disarmed"),
    "refuse_release": ({"pending_release"}, "armed"),
}
_NOT_NOW = {
    "arm": _l("This vault is already armed."),
    "check_in": _l("This vault is not armed, so there is nothing to check in to."),
    "pause": _l("Only an armed vault can be paused."),
    "disarm": _l("This vault is not armed."),
    "refuse_release": _l("No release request is waiting for your answer."),
}


def _pin_action(db: Session, vault: Vault, pin: str | None, action: str, *, actor=None,
                until: datetime | None = None) -> PinOutcome:
    allowed, target = _PIN_ACTIONS[action]
    shown = shown_state(vault)
    covered = concealed(vault)
    if shown not in allowed:
        raise DomainError(_NOT_NOW[action])
    if shown == "pending_release" and not covered and vault.release_cause != "request":
        raise DomainError(_l("The release has started and cannot be stopped. Your caseworker can tell you more."))
    if action == "arm":
        _ready_to_arm(vault)
    now = utcnow()
    if action == "pause":
        if until is None or until.tzinfo is None or until <= now or until > now + timedelta(hours=vault.max_pause_hours):
            raise DomainError(_l("Choose an end for the pause, at most %(hours)d hours from now.",
                                 hours=vault.max_pause_hours))
    which = _check_pin(db, vault, pin)
    actor = actor or db.get(User, vault.owner_id)
    request_refused = shown == "pending_release"
    requester = vault.release_requested_by_id if request_refused and not covered else None

    # The visible effect: the same fields whichever PIN, concealed or not.
    if target in ("armed", "paused"):
        vault.last_checkin_at = now
        _schedule(vault, until if target == "paused" and until is not None else now, now)
        vault.paused_until = until if target == "paused" else None
    else:  # disarmed
        vault.next_due_at = vault.grace_until = vault.hold_until = vault.next_reminder_at = None
        vault.paused_until = None
    if covered:
        vault.cover_state = target
    else:
        if request_refused:
            _clear_request(vault)
        vault.state = target
    _touch(vault, now)
    kind = {"arm": "armed", "check_in": "checked_in", "pause": "paused", "disarm": "disarmed",
            "refuse_release": "release_refused"}[action]
    _event(db, vault.id, kind, actor=actor, at=now)
    if request_refused and action != "refuse_release":
        _event(db, vault.id, "release_refused", actor=actor, at=now)
    if which == "normal":
        _audit(db, kind, vault.id, actor, concealed_release=covered,
               **({"release_refused": True} if request_refused else {}))
        if requester and not covered:
            notify_many(db, [{"key": f"vault:{vault.id}:refused:{_stamp(now, micro=True)}", "user_id": requester,
                              "kind": "vault_release_refused",
                              "data": {"vault": vault.id, "journalist": vault.owner_id}}])
    else:
        _alert_duress(db, vault, action, now, cover_state=target)
    _flush(db)
    return PinOutcome(action=kind, state=target, next_due_at=vault.next_due_at,
                      paused_until=vault.paused_until)


def _ready_to_arm(vault: Vault) -> None:
    if vault.pin_hash is None or vault.duress_pin_hash is None:
        raise DomainError(_l("Set the PIN and the duress PIN before arming the vault."))
    if not vault.recipients:
        raise DomainError(_l("Add at least one recipient before arming the vault."))
    if vault.recipients_only and not any(r.age_recipient for r in vault.recipients):
        raise DomainError(_l("A recipients-only vault needs a recipient with an age key."))


@_guarded
def arm(db: Session, vault: Vault, pin: str, *, actor=None) -> PinOutcome:
    return _pin_action(db, vault, pin, "arm", actor=actor)


@_guarded
def check_in(db: Session, vault: Vault, pin: str, *, actor=None) -> PinOutcome:
    """Check in: the next check-in is due one interval from now. From a pause it
    ends the pause; during a release request's veto window it refuses the request."""
    return _pin_action(db, vault, pin, "check_in", actor=actor)


@_guarded
def pause(db: Session, vault: Vault, pin: str, until: datetime, *, actor=None) -> PinOutcome:
    """Pause until ``until`` (at most max_pause_hours away); the sweep re-arms it
    then, with the next check-in due one interval later."""
    return _pin_action(db, vault, pin, "pause", actor=actor, until=until)


@_guarded
def disarm(db: Session, vault: Vault, pin: str, *, actor=None) -> PinOutcome:
    return _pin_action(db, vault, pin, "disarm", actor=actor)


@_guarded
def refuse_release(db: Session, vault: Vault, pin: str, *, actor=None) -> PinOutcome:
    """Refuse a release request in its veto window (also a check-in)."""
    return _pin_action(db, vault, pin, "refuse_release", actor=actor)


# -- triggers ----------------------------------------------------------------

@_guarded
def confirm_welfare(db: Session, actor: User, vault: Vault) -> None:
    """The caseworker (or a supervisor) reached the journalist: re-arm."""
    if not (actor.role == "supervisor" or (
            actor.role == "caseworker" and assigned_caseworker(db, vault.owner_id) == actor.id)):
        raise PermissionDenied(_l("Only the journalist's caseworker or a supervisor can confirm a welfare check."))
    if vault.state != "welfare_hold":
        raise DomainError(_l("This vault is not waiting for a welfare check."))
    now = utcnow()
    vault.state = "armed"
    _schedule(vault, now, now)
    _touch(vault, now)
    _event(db, vault.id, "welfare_confirmed", actor=actor, at=now)
    _audit(db, "welfare_confirmed", vault.id, actor)
    _flush(db)


def _reason(reason: str | None) -> str:
    return _text(reason, _l("Give the reason (up to %(n)d characters).", n=MAX_REASON), limit=MAX_REASON)


@_guarded
def request_release(db: Session, actor, vault: Vault, reason: str) -> None:
    """Ask for release: the journalist is told and may refuse (with the PIN)
    within their veto window; silence releases."""
    if isinstance(actor, Recipient):
        if actor.vault_id != vault.id:
            raise NotFound(_l("No such vault."))
        requester_id, recipient_id, role = None, actor.id, "recipient"
    elif getattr(actor, "role", None) == "caseworker" and assigned_caseworker(db, vault.owner_id) == actor.id:
        requester_id, recipient_id, role = actor.id, None, "caseworker"
    else:
        raise PermissionDenied(_l("Only the journalist's caseworker or a recipient can ask for release."))
    reason = _reason(reason)
    if vault.state in ("pending_release", "released"):
        raise DomainError(_l("The release of this vault has already started."))
    if vault.state not in RUNNING:
        raise DomainError(_l("This vault is not armed."))
    now = utcnow()
    release_after = now + timedelta(hours=vault.veto_hours)
    _start_release(db, vault, "request", now, release_after=release_after,
                   actor=actor if role == "caseworker" else None)
    vault.release_reason = reason
    vault.release_requested_by_id = requester_id
    vault.release_requested_by_recipient_id = recipient_id
    if release_after - VETO_REMINDER > now:
        vault.next_reminder_at = release_after - VETO_REMINDER
    _audit(db, "release_requested", vault.id, actor if role == "caseworker" else None, by=role,
           recipient=recipient_id, reason_length=len(reason), veto_hours=vault.veto_hours)
    owner_note = {"key": f"vault:{vault.id}:request:{_stamp(now)}:{vault.owner_id}", "user_id": vault.owner_id,
                  "kind": "vault_release_requested",
                  "data": {"vault": vault.id, "release_after": release_after.isoformat()}}
    notes = [owner_note]
    if role == "recipient":
        notes += _staff_notes(db, vault, "vault_release_requested", f"vault:{vault.id}:request:{_stamp(now)}",
                              release_after=release_after.isoformat())
    notify_many(db, notes)
    webhooks.enqueue(db, [owner_note], now)  # every channel: the veto window is short
    _flush(db)


def _supervisor(user: User) -> None:
    if user.role != "supervisor" or not user.active:
        raise PermissionDenied(_l("Only supervisors record and confirm incidents."))


def report_incident(db: Session, supervisor: User, journalist: User, kind: str, reason: str) -> VaultIncident:
    """One supervisor records an incident; nothing is released until a second confirms."""
    _supervisor(supervisor)
    if journalist.role != "journalist":
        raise DomainError(_l("Incidents are recorded for journalists."))
    if kind not in INCIDENT_KINDS:
        raise DomainError(_l("Choose what happened: disappearance, killing or detention."))
    reason = _reason(reason)
    waiting = db.execute(select(VaultIncident.id).where(VaultIncident.journalist_id == journalist.id,
                                                        VaultIncident.state == "reported")).first()
    if waiting:
        raise DomainError(_l("An incident for this journalist is already waiting for a second supervisor."))
    now = utcnow()
    incident = VaultIncident(journalist_id=journalist.id, kind=kind, state="reported",
                             reported_by_id=supervisor.id, reported_at=now)
    incident.report_reason = reason
    db.add(incident)
    _audit(db, "incident_reported", incident.id, supervisor, journalist=journalist.id, kind=kind,
           reason_length=len(reason))
    notify_many(db, [{"key": f"vault-incident:{incident.id}:{user}", "user_id": user,
                      "kind": "vault_incident_reported",
                      "data": {"incident": incident.id, "journalist": journalist.id, "kind": kind}}
                     for user in _supervisors(db) if user != supervisor.id])
    return incident


@_guarded
def confirm_incident(db: Session, supervisor: User, incident: VaultIncident, reason: str) -> int:
    """A second, different supervisor confirms: the journalist's running vaults
    go to release (concealed from their owner's pages). Returns how many."""
    _supervisor(supervisor)
    if supervisor.id == incident.reported_by_id:
        raise PermissionDenied(_l("A different supervisor must confirm the incident."))
    if incident.state != "reported":
        raise DomainError(_l("This incident was already confirmed."))
    reason = _reason(reason)
    now = utcnow()
    incident.state = "confirmed"
    incident.confirmed_by_id = supervisor.id
    incident.confirmed_at = now
    incident.confirm_reason = reason
    vaults = list(db.execute(select(Vault).where(Vault.owner_id == incident.journalist_id)
                             .order_by(Vault.created_at)).scalars())
    started = 0
    for vault in vaults:
        if vault.state in RUNNING or (vault.state == "pending_release" and vault.release_cause == "request"):
            _start_release(db, vault, "incident", now, cover_state=shown_state(vault), actor=supervisor)
            started += 1
    _audit(db, "incident_confirmed", incident.id, supervisor, journalist=incident.journalist_id,
           kind=incident.kind, reason_length=len(reason), vaults=started)
    _flush(db)
    return started


def pending_incidents(db: Session, supervisor: User, journalist: User | None = None
                      ) -> list[tuple[VaultIncident, str | None]]:
    """Incidents waiting for a second supervisor, with the reference of each
    journalist's most recent open case."""
    _supervisor(supervisor)
    query = (select(VaultIncident, _latest_open_case(Case.reference, VaultIncident.journalist_id))
             .where(VaultIncident.state == "reported").order_by(VaultIncident.reported_at, VaultIncident.id))
    if journalist is not None:
        query = query.where(VaultIncident.journalist_id == journalist.id)
    return [tuple(row) for row in db.execute(query)]


def get_incident(db: Session, supervisor: User, incident_id: str) -> VaultIncident:
    _supervisor(supervisor)
    incident = db.get(VaultIncident, incident_id) if _valid_id(incident_id) else None
    if incident is None:
        raise NotFound(_l("No such incident."))
    return incident


# -- release links (the download pages come later) ---------------------------

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_release_link(db: Session, release: Release) -> str:
    """A new one-time link token for a release notice (call when sending it:
    the token then exists only in that message). A previous token stops working."""
    now = utcnow()
    if now >= release.expires_at:
        raise DomainError(_l("This release link has expired."))
    token = secrets.token_urlsafe(32)
    release.token_hash = _token_hash(token)
    release.link_issued_at = now
    return token


def find_release(db: Session, token: str) -> Release:
    """The release a link token opens; NotFound (unknown) or DomainError (expired)."""
    release = None
    if isinstance(token, str) and 20 <= len(token) <= 100:
        release = db.execute(select(Release).where(Release.token_hash == _token_hash(token))).scalar_one_or_none()
    if release is None:
        raise NotFound(_l("This link is not valid. It may have been replaced by a newer one."))
    if utcnow() >= release.expires_at:
        raise DomainError(_l("This link has expired."))
    return release


def releases(db: Session, vault: Vault) -> list[Release]:
    return list(db.execute(select(Release).where(Release.vault_id == vault.id)
                           .order_by(Release.created_at)).scalars())


# -- the sweep -----------------------------------------------------------------

@dataclass
class SweepResult:
    resumed: int = 0
    reminded: int = 0
    veto_reminded: int = 0
    grace: int = 0
    welfare_hold: int = 0
    pending_release: int = 0
    released: int = 0
    deposits_deleted: int = 0
    vaults_deleted: int = 0
    notifications: int = 0


V = cast(Table, Vault.__table__)
D = cast(Table, Deposit.__table__)


def _claim(db: Session, where, values: dict, *returning) -> list[Row]:
    """UPDATE the vaults matching ``where``; return the rows this call changed.

    The UPDATE re-checks ``where`` row by row, so of several sweeps at once each
    change is made (and notified) by one only; on PostgreSQL rows another sweep
    holds are skipped, not waited for. The version goes up, so a person's
    concurrent change to the same vault fails as stale instead of undoing this.
    """
    ids = select(V.c.id).where(where)
    if _postgres(db):
        ids = ids.with_for_update(skip_locked=True)
    statement = (update(V).where(V.c.id.in_(ids.scalar_subquery()), where)
                 .values(version=V.c.version + 1, **values)
                 .returning(V.c.id, V.c.owner_id, *returning))
    return list(db.execute(statement).all())


def sweep(db: Session, now: datetime | None = None) -> SweepResult:
    """Move every vault whose time came; one notification per transition; commits."""
    now = now or utcnow()
    result = SweepResult()
    notes: list[dict] = []
    events: list[dict] = []
    owners: set[str] = set()

    def record(rows, kind: str, **data):
        for row in rows:
            events.append({"vault_id": row.id, "kind": kind, "data": data})
            owners.add(row.owner_id)

    resumed = _claim(db, (V.c.state == "paused") & (V.c.paused_until <= now),
                     {"state": "armed", "paused_until": None, "updated_at": now}, V.c.next_due_at)
    record(resumed, "resumed")
    for row in resumed:
        notes.append({"key": f"vault:{row.id}:resumed:{_stamp(row.next_due_at)}", "user_id": row.owner_id,
                      "kind": "vault_resumed",
                      "data": {"vault": row.id, "due": row.next_due_at.isoformat()}})

    grace = _claim(db, V.c.state.in_(("armed", "reminded")) & (V.c.next_due_at <= now),
                   {"state": "grace", "next_reminder_at": None, "updated_at": now},
                   V.c.next_due_at, V.c.grace_until)
    record(grace, "grace")
    staff_grace = []
    for row in grace:
        notes.append({"key": f"vault:{row.id}:grace:{_stamp(row.next_due_at)}:{row.owner_id}",
                      "user_id": row.owner_id, "kind": "vault_grace",
                      "data": {"vault": row.id, "grace_until": row.grace_until.isoformat()}})
        staff_grace.append(row)

    reminded = _claim(db, V.c.state.in_(("armed", "reminded")) & (V.c.next_reminder_at <= now)
                      & (V.c.next_due_at > now), {"state": "reminded", "updated_at": now},
                      V.c.next_due_at, V.c.reminder_hours)
    followups = []
    for row in reminded:
        hours = [h for h in (row.reminder_hours or ()) if row.next_due_at - timedelta(hours=h) <= now]
        followups.append({"b_id": row.id, "b_next": _next_reminder(row.next_due_at, row.reminder_hours, now)})
        if hours:
            h = min(hours)
            events.append({"vault_id": row.id, "kind": "reminded", "data": {"hours": h}})
            notes.append({"key": f"vault:{row.id}:remind:{_stamp(row.next_due_at)}:{h}", "user_id": row.owner_id,
                          "kind": "vault_reminder",
                          "data": {"vault": row.id, "hours": h, "due": row.next_due_at.isoformat()}})
    if followups:
        db.execute(update(V).where(V.c.id == bindparam("b_id")).values(next_reminder_at=bindparam("b_next")),
                   followups)

    veto = _claim(db, (V.c.state == "pending_release") & (V.c.release_cause == "request")
                  & (V.c.next_reminder_at <= now) & (V.c.release_after > now),
                  {"next_reminder_at": None}, V.c.release_after)
    for row in veto:
        notes.append({"key": f"vault:{row.id}:veto-reminder:{_stamp(row.release_after)}", "user_id": row.owner_id,
                      "kind": "vault_veto_reminder",
                      "data": {"vault": row.id, "release_after": row.release_after.isoformat()}})

    held = _claim(db, (V.c.state == "grace") & (V.c.grace_until <= now) & (V.c.after_grace == "welfare_hold"),
                  {"state": "welfare_hold", "updated_at": now}, V.c.next_due_at, V.c.hold_until)
    record(held, "welfare_hold")

    missed = _claim(db, (V.c.state == "grace") & (V.c.grace_until <= now) & (V.c.after_grace == "release"),
                    {"state": "pending_release", "release_cause": "missed_checkin", "cover_state": None,
                     "release_after": V.c.grace_until, "updated_at": now})
    missed += _claim(db, (V.c.state == "welfare_hold") & (V.c.hold_until <= now),
                     {"state": "pending_release", "release_cause": "missed_checkin", "cover_state": None,
                      "release_after": V.c.hold_until, "updated_at": now})
    record(missed, "release_started", cause="missed_checkin")

    released = _claim(db, (V.c.state == "pending_release") & (V.c.release_after <= now),
                      {"state": "released", "released_at": now, "next_reminder_at": None, "updated_at": now},
                      V.c.release_cause)
    for row in released:
        events.append({"vault_id": row.id, "kind": "released", "data": {"cause": row.release_cause},
                       "concealed": row.release_cause in CONCEALED_CAUSES})
        owners.add(row.owner_id)
    recipients_released = _create_releases(db, [row.id for row in released], now)

    staff = _Staff(db, owners)
    for row in staff_grace:
        for user in staff(row.owner_id):
            notes.append({"key": f"vault:{row.id}:grace:{_stamp(row.next_due_at)}:{user}", "user_id": user,
                          "kind": "vault_grace",
                          "data": {"vault": row.id, "journalist": row.owner_id,
                                   "grace_until": row.grace_until.isoformat()}})
    for row in held:
        for user in [row.owner_id, *staff(row.owner_id)]:
            notes.append({"key": f"vault:{row.id}:hold:{_stamp(row.next_due_at)}:{user}", "user_id": user,
                          "kind": "vault_welfare_hold",
                          "data": {"vault": row.id, "journalist": row.owner_id,
                                   "hold_until": row.hold_until.isoformat()}})
    for row in released:
        told = staff(row.owner_id) if row.release_cause in CONCEALED_CAUSES else [row.owner_id, *staff(row.owner_id)]
        for user in told:
            notes.append({"key": f"vault:{row.id}:released:{user}", "user_id": user, "kind": "vault_released",
                          "data": {"vault": row.id, "journalist": row.owner_id, "cause": row.release_cause,
                                   "recipients": recipients_released.get(row.id, 0)}})

    deleted_deposits = _sweep_deposit_deletions(db, now, events)
    deleted_vaults = _sweep_vault_deletions(db, now)

    if events:
        db.execute(cast(Table, VaultEvent.__table__).insert(),
                   [{"vault_id": e["vault_id"], "kind": e["kind"], "at": now, "actor_id": None,
                     "concealed": e.get("concealed", False), "data": e["data"]}
                    for e in events if e["vault_id"] not in deleted_vaults])
    for rows, action in ((resumed, "resumed"), (grace, "grace"), (held, "welfare_hold")):
        for row in rows:
            _audit(db, action, row.id)
    for row in missed:
        _audit(db, "release_started", row.id, cause="missed_checkin")
    for row in released:
        _audit(db, "released", row.id, cause=row.release_cause, recipients=recipients_released.get(row.id, 0))

    result.resumed, result.grace, result.reminded = len(resumed), len(grace), len(reminded)
    result.veto_reminded, result.welfare_hold = len(veto), len(held)
    result.pending_release, result.released = len(missed), len(released)
    result.deposits_deleted, result.vaults_deleted = deleted_deposits, len(deleted_vaults)
    result.notifications = notify_many(db, notes)
    # The owner's notices also go to their messaging bridge, if they set one.
    owner_of = {row.id: row.owner_id for rows in (resumed, grace, reminded, veto, held, released) for row in rows}
    webhooks.enqueue(db, [n for n in notes if owner_of.get(n["data"]["vault"]) == n["user_id"]], now)
    db.commit()
    return result


def _create_releases(db: Session, vault_ids: list[str], now: datetime) -> dict[str, int]:
    """One Release per recipient of each newly released vault (no token yet)."""
    counts: dict[str, int] = {}
    if not vault_ids:
        return counts
    rows = []
    for start in range(0, len(vault_ids), 500):
        for recipient_id, vault_id in db.execute(select(Recipient.id, Recipient.vault_id).where(
                Recipient.vault_id.in_(vault_ids[start:start + 500]))):
            rows.append({"id": secrets.token_hex(16), "vault_id": vault_id, "recipient_id": recipient_id,
                         "created_at": now, "expires_at": now + timedelta(days=RELEASE_LINK_DAYS)})
            counts[vault_id] = counts.get(vault_id, 0) + 1
    if rows:
        db.execute(cast(Table, Release.__table__).insert(), rows)
    return counts


def _sweep_deposit_deletions(db: Session, now: datetime, events: list[dict]) -> int:
    due = (D.c.delete_after <= now) & D.c.deleted_at.is_(None)
    ids = select(D.c.id).where(due)
    if _postgres(db):
        ids = ids.with_for_update(skip_locked=True)
    rows = db.execute(update(D).where(D.c.id.in_(ids.scalar_subquery()), due)
                      .values(deleted_at=now).returning(D.c.id, D.c.vault_id, D.c.blob_id)).all()
    if not rows:
        return 0
    db.execute(update(D).where(D.c.id.in_([r.id for r in rows]))
               .values(blob_id=None, filename=None, name_age=None, delete_after=None))
    for row in rows:
        if row.blob_id:
            _delete_blob_later(db, row.blob_id, on="commit")
        events.append({"vault_id": row.vault_id, "kind": "deposit_deleted", "data": {"deposit": row.id}})
        _audit(db, "deposit_deleted", row.vault_id, deposit=row.id, delayed=True)
    return len(rows)


def _sweep_vault_deletions(db: Session, now: datetime) -> set[str]:
    due = V.c.delete_after <= now
    ids = select(V.c.id).where(due)
    if _postgres(db):
        ids = ids.with_for_update(skip_locked=True)
    claimed = list(db.execute(update(V).where(V.c.id.in_(ids.scalar_subquery()), due)
                              .values(version=V.c.version + 1, release_secret=None)
                              .returning(V.c.id)).scalars())
    if claimed:
        _destroy(db, claimed)
        for vault_id in claimed:
            _audit(db, "deleted", vault_id, delayed=True)
    return set(claimed)


# -- garbage collection ------------------------------------------------------

def _known_blob_ids(db: Session) -> set[str]:
    """Every blob id a row names, in any table with a ``blob_id`` column."""
    from ..extensions import db as flask_db
    known: set[str] = set()
    for table in flask_db.metadata.sorted_tables:
        column = table.c.get("blob_id")
        if column is not None and table is not OrphanBlob.__table__:
            known.update(db.execute(select(column).where(column.is_not(None))).scalars())
    return known


def collect_garbage(db: Session, now: datetime | None = None, *, older_than: timedelta = GC_GRACE) -> int:
    """Delete blobs no row has named for ``older_than`` (an upload commits its
    blob just before its row) and unfinished uploads as old; commits; returns
    how many blobs went. Lists the whole store: run it hourly, not every minute."""
    now = now or utcnow()
    store = blob_store()
    listed = set(store.ids())
    orphans = listed - _known_blob_ids(db)
    seen = dict(db.execute(select(OrphanBlob.blob_id, OrphanBlob.seen_at)).all())
    doomed = [b for b in orphans if b in seen and seen[b] <= now - older_than]
    # Forget candidates that found a row (or vanished), remember the new ones.
    forget = [b for b in seen if b not in orphans] + doomed
    for start in range(0, len(forget), 500):
        db.execute(delete(OrphanBlob).where(OrphanBlob.blob_id.in_(forget[start:start + 500])))
    new = [{"blob_id": b, "seen_at": now} for b in sorted(orphans - set(seen))]
    if new:
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if _postgres(db) else sqlite.insert
        db.execute(insert(cast(Table, OrphanBlob.__table__)).on_conflict_do_nothing(), new)
    db.commit()
    for blob_id in doomed:
        try:
            store.delete(blob_id)
        except (BlobError, OSError) as exc:
            log.warning("could not delete orphan blob %s: %s", blob_id, type(exc).__name__)
    store.clear_temporaries(older_than)
    return len(doomed)
