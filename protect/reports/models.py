"""Prepared reports: the aggregates a delay report is made from, kept between looks."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model, UTCDateTime


class PreparedReport(Model):
    """The SQL aggregates of one report (a period and a selection of cases), as of ``as_of``.

    Made in the database at 100,000 cases in seconds, so they are kept here: every look
    (page, PDF, CSV, JSON; any worker, any host) is made from them in Python, and the
    sweeper makes them again in the background when the data changed. They are counts and
    order statistics only, by codes (and by staff id for the caseload): no name, no text.
    Suppression is applied when a report is made from them, for whoever looks.
    """

    __tablename__ = "prepared_reports"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of period and selection
    first: Mapped[date] = mapped_column(Date)
    last: Mapped[date] = mapped_column(Date)
    filters: Mapped[dict] = mapped_column(JSON)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    # What the figures were made of: newest case event, number of clocks, newest policy.
    data_state: Mapped[list] = mapped_column(JSON)
    figures: Mapped[dict] = mapped_column(JSON, deferred=True)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime)
