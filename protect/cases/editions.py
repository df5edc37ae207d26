"""Editions: how often what the case lists and the deadline counts show has changed.

Each is a counter in ``list_editions``, raised in the same transaction as the change
(ORM changes raise theirs on flush, below; bulk writers call ``raise_edition``), so
something rendered or counted at edition n is still current while the edition is n:
the queue keeps rendered lists that long (cases/views.py), the navigation bar its
overdue count (deadlines/service.py).
"""
from __future__ import annotations

from flask import g, has_app_context
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session as OrmSession

from ..accounts.models import User
from ..deadlines.models import Clock
from ..extensions import Session
from .models import Case, ListEdition, MeasureType

CASES = "cases"    # cases, staff accounts (pages name people; roles decide who sees what), measure types
CLOCKS = "clocks"  # deadline clocks (the sweep moves them in bulk)
SEEN = "protect_editions_seen"  # where a request keeps the editions it read (main.navigation)


def edition(name: str = CASES):
    """The current edition of ``name``, as a scalar subquery (asked with other figures at once)."""
    return select(ListEdition.number).where(ListEdition.name == name).scalar_subquery()


def current(db: Session, name: str = CASES) -> int:
    return db.execute(select(edition(name))).scalar() or 0


def raise_edition(db: Session, name: str = CASES) -> None:
    """What was rendered or counted of ``name`` is stale from this transaction's commit on."""
    db.execute(update(ListEdition).where(ListEdition.name == name).values(number=ListEdition.number + 1))
    if has_app_context():
        g.pop(SEEN, None)


@event.listens_for(OrmSession, "before_flush")
def _raise_on_change(session, flush_context, instances) -> None:
    changed = [*session.new, *session.deleted, *(o for o in session.dirty if session.is_modified(o))]
    if any(isinstance(o, (Case, User, MeasureType)) for o in changed):
        raise_edition(session, CASES)
    if any(isinstance(o, Clock) for o in changed):
        raise_edition(session, CLOCKS)
