"""Notifications: written idempotently, read by their owner."""
from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CompoundSelect, Select, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from ..extensions import Session, utcnow
from . import mail
from .bulk import insert_new
from .models import Notification


def notify_many(db: Session, rows: list[dict]) -> int:
    """Insert notifications, skipping any whose key exists; returns how many were new.

    When a mail server is configured, each new notification also queues its
    e-mail in the outbox (same key, same transaction): the e-mail exists
    exactly when the notification committed, and is sent after that commit.
    """
    if not rows:
        return 0
    now = utcnow()
    values = [{"key": row["key"], "user_id": row["user_id"], "kind": row["kind"],
               "case_id": row.get("case_id"), "data": row.get("data") or {}} for row in rows]
    table = cast(Table, Notification.__table__)
    if not mail.enabled():
        return insert_new(db, table, values, {"created_at": now}, keys=False)
    new = set(insert_new(db, table, values, {"created_at": now}))
    if new:
        mail.enqueue(db, [row for row in values if row["key"] in new], now)
    return len(new)


NOTE_COLUMNS = ("key", "user_id", "kind", "case_id", "data")


def insert_selected(db: Session, notes: Select | CompoundSelect, now: datetime) -> Insert:
    """The INSERT of the notifications ``notes`` selects (``NOTE_COLUMNS``), skipping keys that
    exist: set-based, for writers that find their recipients in SQL (the deadline sweep).

    With a mail server configured it returns the new rows, for ``queue_mail``.
    """
    postgres = db.get_bind().dialect.name == "postgresql"
    rows = notes.subquery()
    found = (select(*[rows.c[name] for name in NOTE_COLUMNS],
                    bindparam("created_at", now, type_=Notification.created_at.type))
             .where(rows.c.key.is_not(None)))  # (a WHERE: SQLite's rule for an upsert after a SELECT)
    if not postgres:
        # In key order, SQLite's unique index grows page by page instead of at random places: a
        # million notifications at once took 26 s instead of 31 (bench/RESULTS.md "sweep").
        found = found.order_by(rows.c.key)
    statement = ((postgresql if postgres else sqlite).insert(Notification)
                 .from_select([*NOTE_COLUMNS, "created_at"], found)
                 .on_conflict_do_nothing(index_elements=["key"]))
    if mail.enabled():
        return statement.returning(*[Notification.__table__.c[name] for name in NOTE_COLUMNS])
    return statement


def queue_mail(db: Session, new: list[dict], now: datetime) -> None:
    """The e-mails of notifications ``insert_selected`` returned (same transaction)."""
    if new and mail.enabled():
        mail.enqueue(db, new, now)


def unread_counted(user_id: str | ColumnElement[str]):
    """The number of ``user_id``'s unread notifications, as a scalar subquery."""
    return select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None)).scalar_subquery()


def for_user(db: Session, user_id: str, limit: int = 100) -> list[Notification]:
    return list(db.execute(select(Notification).where(Notification.user_id == user_id)
                           .order_by(Notification.created_at.desc(), Notification.id.desc())
                           .limit(limit)).scalars())


def mark_read(db: Session, user_id: str) -> None:
    db.execute(update(Notification).where(Notification.user_id == user_id,
                                          Notification.read_at.is_(None)).values(read_at=utcnow()))
