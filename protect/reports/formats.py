"""How the report's figures read: on the page and in the PDF, in CSV and in JSON.

A count is a ``Cell``: its number, or "< k" (fewer than k cases), or "•" (hidden
so that a "< k" cannot be worked out). A statistic the rule does not allow is
None: "—". Durations are kept in seconds and read in hours or days.
"""
from __future__ import annotations

import csv
import io
import json

from babel.numbers import parse_pattern
from flask_babel import format_decimal, format_percent, gettext, ngettext

from .service import DAY, HOUR, STAGES, Column, Report, Row, Table
from .suppression import SMALL, Cell

HIDDEN_MARK = "•"
NONE_MARK = "—"
NUMBER = parse_pattern("#,##0.#")  # parsed once: a report shows some two thousand numbers


def number(value) -> str:
    return format_decimal(value, NUMBER)


def cell_text(cell: Cell, k: int) -> str:
    if cell.shown:
        return number(cell.value)
    return f"< {k}" if cell.status == SMALL else HIDDEN_MARK


def in_unit(seconds: float | None, unit: str | None) -> float | None:
    return None if seconds is None else round(seconds / (HOUR if unit == "hours" else DAY), 1)


def duration(seconds: float | None, unit: str | None, *, short: bool = False) -> str:
    if seconds is None:
        return NONE_MARK
    amount = in_unit(seconds, unit)
    value = number(amount)
    if unit == "hours":
        return gettext("%(n)s h", n=value)
    if short:
        return gettext("%(n)s d", n=value)
    return ngettext("%(n)s day", "%(n)s days", 1 if amount == 1 else 2, n=value)


def percent(share: float) -> str:
    return format_percent(share)


def unit_of(column: Column, row: Row) -> str | None:
    return row.unit if column.kind == "duration" else column.kind if column.kind in ("hours", "days") else None


def text(value, column: Column, row: Row, k: int) -> str:
    """A value as people read it (page, PDF)."""
    if isinstance(value, Cell):
        return cell_text(value, k)
    if value is None:
        return NONE_MARK
    if column.kind == "share":
        return percent(value)
    if column.kind in ("duration", "hours", "days"):
        return duration(value, unit_of(column, row))
    return str(value)


def plain(value, unit: str | None = None):
    """A value for a chart: a number, or None when it is not to be drawn."""
    if isinstance(value, Cell):
        return value.value if value.shown else None
    if value is None or isinstance(value, str):
        return None
    return in_unit(value, unit) if unit else value


def data(value, column: Column, row: Row, k: int):
    """A value for CSV and JSON: a number (durations in the row's unit, shares in %), or a mark."""
    if isinstance(value, Cell):
        return value.value if value.shown else cell_text(value, k)
    if value is None:
        return None
    if column.kind == "share":
        return round(value * 100, 1)
    if column.kind in ("duration", "hours", "days"):
        return in_unit(value, unit_of(column, row))
    return str(value)


def header(column: Column) -> str:
    label = str(column.label)
    if column.kind == "share":
        return f"{label} (%)"
    if column.kind == "hours":
        return gettext("%(label)s (hours)", label=label)
    if column.kind == "days":
        return gettext("%(label)s (days)", label=label)
    return label


def _cell(value) -> str | float | int:
    """A CSV cell; text that a spreadsheet would run as a formula (a catalogue name is editable) is quoted."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(report: Report, table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    has_units = any(c.kind == "duration" for c in table.columns)
    writer.writerow([gettext("Code"), str(table.title)] + [header(c) for c in table.columns]
                    + ([gettext("Unit of the times")] if has_units else []))
    for row in table.all_rows():
        values = [data(v, c, row, report.k) for c, v in zip(table.columns, row.values, strict=True)]
        units = [{"hours": gettext("hours"), "days": gettext("days")}.get(row.unit or "", "")] if has_units else []
        writer.writerow([_cell(v) for v in [row.key, str(row.label), *values, *units]])
    return out.getvalue()


def to_json(report: Report, tables: list[Table]) -> str:
    return json.dumps({
        "period": {"first": report.period.first.strftime("%Y-%m"), "last": report.period.last.strftime("%Y-%m"),
                   "as_of": report.as_of.isoformat()},
        "filters": report.filters.as_dict(),
        "suppression": None if report.internal else {
            "min_cases": report.k, "small": f"< {report.k}", "hidden": HIDDEN_MARK},
        "tables": [{
            "key": table.key, "title": str(table.title),
            "columns": [{"key": c.key, "label": str(c.label), "kind": c.kind} for c in table.columns],
            "rows": [{"key": row.key, "label": str(row.label), "unit": row.unit,
                      "values": {c.key: data(v, c, row, report.k) for c, v in zip(table.columns, row.values, strict=True)}}
                     for row in table.all_rows()],
        } for table in tables],
    }, ensure_ascii=False, indent=1)


def headlines(report: Report) -> list[str]:
    """The summary's sentences, from figures already in the tables (so as suppressed as they are)."""
    out = []
    stages = {r.key: r for r in report.tables["stages"].rows}
    for stage in ("implementation", "urgent_implemented", "risk_assessment", "triage"):
        row = stages[stage]
        term, share, median = row.values[0], row.values[4], row.values[5]
        if median is None:
            continue
        line = gettext("%(stage)s: median %(time)s (legal term: %(term)s).", stage=STAGES[stage],
                       time=duration(median, row.unit), term=term)
        if share is not None:
            line += " " + gettext("%(share)s on time.", share=percent(share))
        out.append(line)
    journey = report.tables["journey"].rows[0].values
    if journey[1] is not None:
        out.insert(min(1, len(out)), gettext("From the request to the measures implemented: median %(time)s.",
                                             time=duration(journey[1], "days")))
    total = report.tables["requests"].all_rows()[-1].values
    if total[0].shown:
        line = ngettext("%(num)d request received.", "%(num)d requests received.", total[0].value)
        if total[-1] is not None:
            line += " " + gettext("%(share)s of those decided were admitted.", share=percent(total[-1]))
        out.append(line)
    return out
