"""SQL pieces the delay reports need on both SQLite and PostgreSQL, and Mexico City months."""
from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Integer, literal
from sqlalchemy import case as sql_case
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from ..deadlines.calendar import TZ
from ..extensions import UTCDateTime


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=TZ).astimezone(UTC)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


class seconds_between(FunctionElement):
    """Whole seconds from ``earlier`` to ``later`` (two timestamps), on SQLite and PostgreSQL."""

    type = Integer()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element, compiler, **kw):
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(ROUND((julianday({later}) - julianday({earlier})) * 86400.0) AS INTEGER)"


@compiles(seconds_between, "postgresql")
def _seconds_postgresql(element, compiler, **kw):
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(ROUND(EXTRACT(EPOCH FROM ({later} - {earlier}))) AS BIGINT)"


def at(moment: datetime):
    return literal(moment, UTCDateTime())


def bucket(column, ends: list[datetime]):
    """How many of ``ends`` (ascending) are at or before ``column`` (0..len(ends); all of them for
    NULL), by halving: a few comparisons a row, however many months."""
    def within(lo: int, hi: int):
        if lo == hi:
            return literal(lo)
        mid = (lo + hi) // 2
        return sql_case((column < at(ends[mid]), within(lo, mid)), else_=within(mid + 1, hi))
    return within(0, len(ends))
