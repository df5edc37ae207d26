"""Moments and days as people in the mechanism read them: Mexico City time, in the reader's language.

Babel takes 10-20 µs to format a value, and pages show the same moments again and again (a
case's timeline on every look, a queue's submission days): each value is formatted once per
language and format, then kept.
"""
from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import dates as babel_dates
from flask_babel import get_locale

MEXICO = ZoneInfo("America/Mexico_City")


def moment(value: datetime | None, fmt: str = "short") -> str:
    """A UTC datetime in Mexico City time (``""`` for none)."""
    if value is None:
        return ""
    return _moment(value, fmt, str(get_locale() or "es"))


def day(value: date | datetime | None, fmt: str = "medium") -> str:
    """A day (a datetime's day in Mexico City)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(MEXICO).date()
    return format_day(value, fmt, str(get_locale() or "es"))


@lru_cache(maxsize=16384)
def _moment(value: datetime, fmt: str, locale: str) -> str:
    return babel_dates.format_datetime(value, fmt, tzinfo=MEXICO, locale=locale)


@lru_cache(maxsize=8192)
def format_day(value: date, fmt: str, locale: str) -> str:
    return babel_dates.format_date(value, fmt, locale=locale)
