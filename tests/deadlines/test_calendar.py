"""The legal calendar, checked by hand and by properties."""
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from protect.deadlines.calendar import TZ, Calendar

CAL = Calendar()


def local(y, m, d, hh=12, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=TZ)


def end_of(y, m, d):
    """Deadline for a term whose last day is y-m-d: midnight after it, local time."""
    return datetime(y, m, d, tzinfo=TZ) + timedelta(days=1)


# (start, n, unit, deadline) — every row checked against a printed calendar.
CASES = [
    (local(2026, 3, 2, 10), 10, "natural_days", end_of(2026, 3, 12)),
    (local(2026, 12, 28, 15), 10, "natural_days", end_of(2027, 1, 7)),          # year boundary
    (local(2026, 12, 31, 23, 30), 1, "natural_days", end_of(2027, 1, 1)),
    (local(2028, 2, 25), 5, "natural_days", end_of(2028, 3, 1)),                 # leap year: 29 Feb counts
    (local(2027, 2, 25), 5, "natural_days", end_of(2027, 3, 2)),                 # no 29 Feb
    (local(2026, 1, 15), 30, "natural_days", end_of(2026, 2, 14)),               # implementation term
    (local(2026, 12, 20), 15, "natural_days", end_of(2027, 1, 4)),               # appeal term
    (local(2026, 11, 27, 17), 1, "business_days", end_of(2026, 11, 30)),         # Friday → Monday
    (local(2026, 1, 30), 1, "business_days", end_of(2026, 2, 3)),                # Constitution Day, Mon 2 Feb
    (local(2026, 1, 29), 2, "business_days", end_of(2026, 2, 3)),
    (local(2026, 3, 15), 1, "business_days", end_of(2026, 3, 17)),               # Sunday; Juárez Mon 16 Mar
    (local(2026, 12, 24), 1, "business_days", end_of(2026, 12, 28)),             # Christmas on Friday
    (local(2026, 12, 31), 1, "business_days", end_of(2027, 1, 4)),               # New Year on Friday
    (local(2026, 12, 31), 3, "business_days", end_of(2027, 1, 6)),
    (local(2026, 9, 15), 1, "business_days", end_of(2026, 9, 17)),               # Independence Day
    (local(2026, 4, 30), 1, "business_days", end_of(2026, 5, 4)),                # Labour Day on Friday
    (local(2026, 11, 13), 2, "business_days", end_of(2026, 11, 18)),             # Revolution Day Mon 16
    (local(2026, 11, 28), 5, "business_days", end_of(2026, 12, 4)),              # starts on a Saturday
    (local(2028, 2, 28), 2, "business_days", end_of(2028, 3, 1)),                # leap day is a Tuesday
    (local(2026, 11, 29), 10, "business_days", end_of(2026, 12, 11)),
    (local(2027, 1, 29), 1, "business_days", end_of(2027, 2, 2)),                # Constitution Day Mon 1 Feb 2027
    (local(2027, 12, 31), 1, "natural_days", end_of(2028, 1, 1)),
    (local(2026, 11, 29, 23), 3, "hours", local(2026, 11, 30, 2)),               # hours are absolute
    (local(2026, 12, 31, 20), 9, "hours", local(2027, 1, 1, 5)),
    # 03:00 UTC on 2 March is still Sunday 1 March in Mexico City: the local day counts.
    (datetime(2026, 3, 2, 3, tzinfo=timezone.utc), 1, "natural_days", end_of(2026, 3, 2)),
]


@pytest.mark.parametrize("start, n, unit, expected", CASES)
def test_hand_checked(start, n, unit, expected):
    assert CAL.deadline(start, n, unit) == expected.astimezone(timezone.utc)


def test_operator_closures_count_as_holidays():
    closed = Calendar(closures={date(2026, 12, 28)})
    assert closed.deadline(local(2026, 12, 24), 1, "business_days") == end_of(2026, 12, 29)


def test_bad_arguments():
    with pytest.raises(ValueError):
        CAL.deadline(datetime(2026, 1, 1), 1, "hours")
    with pytest.raises(ValueError):
        CAL.deadline(local(2026, 1, 1), 0, "hours")
    with pytest.raises(ValueError):
        CAL.deadline(local(2026, 1, 1), 1, "fortnights")


days = st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31))
counts = st.integers(min_value=1, max_value=400)


@settings(max_examples=300, deadline=None)
@given(days, counts)
def test_business_days_never_end_on_a_closed_day(start, n):
    end = CAL.add_business_days(start, n)
    assert end.weekday() < 5 and CAL.is_business_day(end)


@settings(max_examples=300, deadline=None)
@given(days, counts)
def test_adding_then_counting_gives_n_back(start, n):
    assert CAL.business_days_between(start, CAL.add_business_days(start, n)) == n


@settings(max_examples=300, deadline=None)
@given(days, counts, counts)
def test_monotonic_in_n(start, a, b):
    lo, hi = sorted((a, b))
    assert CAL.add_business_days(start, lo) <= CAL.add_business_days(start, hi)
    if lo < hi:
        assert CAL.add_business_days(start, lo) < CAL.add_business_days(start, hi)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1),
                    timezones=st.just(timezone.utc)), st.integers(1, 60))
def test_day_terms_end_at_local_midnight_after_the_start(start, n):
    for unit in ("natural_days", "business_days"):
        due = CAL.deadline(start, n, unit).astimezone(TZ)
        assert (due.hour, due.minute, due.second) == (0, 0, 0)
        assert due.date() > start.astimezone(TZ).date() + timedelta(days=n - 1)
