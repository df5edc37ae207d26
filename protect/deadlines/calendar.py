"""The legal calendar: when a term that starts at a moment ends.

Rules (DESIGN.md, Deadlines):
- hour-based terms are absolute: start + n hours;
- day-based terms count from the day after the start event, in
  America/Mexico_City, and end at the end of their last day (local time);
- business days skip Saturdays, Sundays, Mexico's federal holidays (from the
  ``holidays`` package) and the closures the operator adds.

A deadline is returned as an aware UTC instant that is the first moment
*after* the term: something done before it is on time.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

TZ = ZoneInfo("America/Mexico_City")
UNITS = ("hours", "natural_days", "business_days")


@lru_cache(maxsize=64)
def _federal_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.Mexico(years=year))


class Calendar:
    def __init__(self, closures: Iterable[date] = ()):
        self.closures = frozenset(closures)

    def is_business_day(self, day: date) -> bool:
        return (day.weekday() < 5 and day not in _federal_holidays(day.year)
                and day not in self.closures)

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(TZ).date()

    @staticmethod
    def end_of_day(day: date) -> datetime:
        """The first instant after ``day`` ends, local time, as UTC."""
        return datetime.combine(day + timedelta(days=1), time(), TZ).astimezone(UTC)

    def add_business_days(self, day: date, n: int) -> date:
        """The n-th business day after ``day`` (n >= 1)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        while n:
            day += timedelta(days=1)
            if self.is_business_day(day):
                n -= 1
        return day

    def business_days_between(self, start: date, end: date) -> int:
        """Business days in (start, end]: the inverse of ``add_business_days``."""
        count, day = 0, start
        while day < end:
            day += timedelta(days=1)
            count += self.is_business_day(day)
        return count

    def deadline(self, start: datetime, duration: int, unit: str) -> datetime:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if duration < 1:
            raise ValueError("duration must be at least 1")
        if unit == "hours":
            return (start + timedelta(hours=duration)).astimezone(UTC)
        first = self.local_date(start)
        if unit == "natural_days":
            return self.end_of_day(first + timedelta(days=duration))
        if unit == "business_days":
            return self.end_of_day(self.add_business_days(first, duration))
        raise ValueError(f"unknown unit {unit!r}")
