"""The audit log: append in the caller's transaction, verify the whole chain.

Each row's hash is SHA-256 over the previous row's hash and the canonical
JSON of its own content; editing, deleting or reordering any row breaks every
later link, and ``verify`` names the first row that no longer fits.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, func, select, text

from ..extensions import Session, utcnow
from .models import AuditEntry

GENESIS = "0" * 64
# Arbitrary constant naming the PostgreSQL advisory lock that serialises appends.
_LOCK_ID = 0x70726F74


def _content(entry: AuditEntry | Row) -> str:  # (verify reads plain rows)
    return json.dumps({
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor_id": entry.actor_id,
        "actor_role": entry.actor_role,
        "action": entry.action,
        "target": entry.target,
        "details": json.loads(entry.details),
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _hash(prev_hash: str, entry: AuditEntry | Row) -> str:
    return hashlib.sha256((prev_hash + _content(entry)).encode()).hexdigest()


def record(session: Session, action: str, *, actor=None, target: str | None = None,
           **details) -> AuditEntry:
    """Add an audit row to the caller's transaction (committed with the action).

    ``details`` must hold ids and codes only, never personal data.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
    # Rows added earlier in this same transaction must be flushed to be seen.
    session.flush()
    last = session.execute(
        select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar()
    entry = AuditEntry(
        at=utcnow(),
        actor_id=getattr(actor, "id", None),
        actor_role=getattr(actor, "role", None),
        action=action,
        target=target,
        details=json.dumps(details, sort_keys=True, default=str),
        prev_hash=last or GENESIS,
    )
    entry.hash = _hash(entry.prev_hash, entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass
class Verification:
    ok: bool
    count: int
    broken_id: int | None = None


def verify(session: Session, batch: int = 1000) -> Verification:
    prev = GENESIS
    count = 0
    last_id = 0
    while True:
        rows = session.execute(
            select(*AuditEntry.__table__.c).where(AuditEntry.id > last_id)
            .order_by(AuditEntry.id).limit(batch)).all()
        if not rows:
            return Verification(True, count)
        for entry in rows:
            if entry.prev_hash != prev or _hash(prev, entry) != entry.hash:
                return Verification(False, count, entry.id)
            prev = entry.hash
            count += 1
            last_id = entry.id


def entries(session: Session, *, action: str | None = None, actor_id: str | None = None,
            since: datetime | None = None, until: datetime | None = None,
            page: int = 1, per_page: int = 50):
    query = select(AuditEntry)
    if action:
        query = query.where(AuditEntry.action == action)
    if actor_id:
        query = query.where(AuditEntry.actor_id == actor_id)
    if since:
        query = query.where(AuditEntry.at >= since)
    if until:
        query = query.where(AuditEntry.at < until)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(AuditEntry.id.desc())
                           .offset((page - 1) * per_page).limit(per_page)).scalars().all()
    return rows, total


def actions(session: Session) -> list[str]:
    return list(session.execute(select(AuditEntry.action).distinct().order_by(AuditEntry.action)).scalars())
