"""Notifications: written idempotently, read by their owner."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..extensions import utcnow
from .models import Notification


def notify_many(db: Session, rows: list[dict]) -> int:
    """Insert notifications, skipping any whose key exists; returns how many were new."""
    if not rows:
        return 0
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    values = [dict(row, created_at=row.get("created_at", now), data=row.get("data", {})) for row in rows]
    statement = (insert(Notification).values(values).on_conflict_do_nothing(index_elements=["key"])
                 .returning(Notification.id))
    return len(db.execute(statement).all())


def unread_count(db: Session, user_id: str) -> int:
    return db.execute(select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None))).scalar_one()


def for_user(db: Session, user_id: str, limit: int = 100) -> list[Notification]:
    return list(db.execute(select(Notification).where(Notification.user_id == user_id)
                           .order_by(Notification.created_at.desc(), Notification.id.desc())
                           .limit(limit)).scalars())


def mark_read(db: Session, user_id: str) -> None:
    db.execute(update(Notification).where(Notification.user_id == user_id,
                                          Notification.read_at.is_(None)).values(read_at=utcnow()))
