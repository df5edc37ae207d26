"""Charts as SVG made on the server: no JavaScript, nothing fetched, the same in the PDF.

Only presentation attributes (fill, stroke, ...), never a ``style`` attribute:
the pages' CSP allows no inline style. Each chart has a <title> and a
<desc>, and the page puts the table it was drawn from next to it, for screen
readers and for anyone who wants the numbers. A suppressed figure is drawn
as missing (a gap, a grey tile, an outlined bar), never as a guessed value.
"""
from __future__ import annotations

import math

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape

from . import formats
from .service import DAY, HOUR, LATE_BINS, Report

INK, MUTED, GRID, ACCENT, LIGHT, BAD, OK = "#1b1b1b", "#555555", "#cccccc", "#0b5394", "#9fc5e8", "#a40000", "#1e6b2e"
LATE_COLOURS = ["#f4b6a6", "#e8816a", "#cf4b32", "#8f1d0c"]
WIDTH = 640

# A tile grid of Mexico's 32 states (column, row), roughly where each lies.
TILES = {
    "BC": (0, 0), "SON": (1, 0), "CHIH": (2, 0), "COAH": (3, 0), "NL": (4, 0),
    "BCS": (0, 1), "SIN": (1, 1), "DGO": (2, 1), "ZAC": (3, 1), "SLP": (4, 1), "TAMPS": (5, 1),
    "NAY": (2, 2), "AGS": (3, 2), "GTO": (4, 2), "QRO": (5, 2), "HGO": (6, 2),
    "JAL": (2, 3), "MICH": (3, 3), "MEX": (4, 3), "CDMX": (5, 3), "TLAX": (6, 3), "VER": (7, 3),
    "COL": (2, 4), "MOR": (4, 4), "PUE": (5, 4), "TAB": (8, 4), "CAMP": (9, 4), "YUC": (10, 3),
    "GRO": (4, 5), "OAX": (5, 5), "CHIS": (7, 5), "QROO": (10, 4),
}


def _svg(width: int, height: int, key: str, title, desc, body: list[str]) -> Markup:
    # Every text in ``body`` went through escape() (_text); the rest are numbers and constants.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-labelledby="{key}-title {key}-desc" class="chart" '
        f'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">'
        f'<title id="{key}-title">{escape(title)}</title><desc id="{key}-desc">{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def _text(x: float, y: float, text, *, anchor: str = "start", fill: str = INK, size: int | None = None,
          weight: str | None = None) -> str:
    extra = (f' font-size="{size}"' if size else "") + (f' font-weight="{weight}"' if weight else "")
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>'
            f'{escape(str(text))}</text>')


def _rect(x, y, w, h, fill, stroke="none", dash=None) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}" stroke="{stroke}"{extra}/>')


def _line(x1, y1, x2, y2, stroke, width=1, dash=None) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
            f'stroke-width="{width}"{extra}/>')


def term_seconds(report: Report, stage: str) -> float | None:
    if stage not in report.terms:
        return None
    duration, unit = report.terms[stage]
    return duration * (HOUR if unit == "hours" else DAY)


def delay_bars(report: Report) -> Markup | None:
    """Median and 90th percentile of each stage as multiples of its legal term (log scale), with the term marked."""
    rows = []
    for row in report.tables["stages"].rows:
        term = term_seconds(report, row.key)
        median, p90 = row.values[5], row.values[6]
        if term and median is not None:
            rows.append((row, median / term, p90 / term if p90 is not None else None))
    if not rows:
        return None
    low = -3
    longest = max(max(m, p or m) for _, m, p in rows)  # 0 when every stage was met at once
    high = max(1, math.ceil(math.log2(max(longest, 2 ** low))))
    left, right, bar, label = 20, 20, 22, 18  # each stage's name above its bars: long names fit a phone
    span = WIDTH - left - right

    def x(ratio):
        return left + (math.log2(min(max(ratio, 2 ** low), 2 ** high)) - low) / (high - low) * span

    step = label + bar + 12
    height = 30 + len(rows) * step + 30
    body = []
    for power in range(low, high + 1):
        tick = x(2 ** power)
        mark = f"×{2 ** power:g}" if power >= 0 else f"×1/{2 ** -power}"
        body += [_line(tick, 24, tick, height - 30, GRID), _text(tick, height - 12, mark, anchor="middle", fill=MUTED)]
    body.append(_line(x(1), 20, x(1), height - 30, BAD, 2, "6 3"))
    body.append(_text(x(1) + 4, 14, gettext("legal term"), fill=BAD))
    for i, (row, median, p90) in enumerate(rows):
        y = 30 + i * step
        body.append(_text(left, y + 12, row.label, weight="bold"))
        y += label
        if p90 is not None:
            body.append(_rect(left, y, x(p90) - left, bar, LIGHT))
        body.append(_rect(left, y + 5, x(median) - left, bar - 10, ACCENT))
        body.append(_text(min(x(median) + 4, WIDTH - 90), y + bar / 2 + 4, formats.duration(row.values[5], row.unit)))
    return _svg(WIDTH, height, "chart-delay", _l("Time taken at each stage against its legal term"),
                gettext("Dark bars: median time; light bars: 90th percentile; the dashed line is the legal term. "
                        "Scale: multiples of each stage's legal term, doubling at each mark."), body)


def lateness_histograms(report: Report) -> Markup | None:
    """For each stage, how many were on time and how late the rest were (multiples of the term)."""
    table = report.tables["lateness"]
    rows = [r for r in table.rows if r.values[-1].shown and r.values[-1].value]
    if not rows:
        return None
    cols, cell_w, cell_h = 2, WIDTH // 2, 150
    labels = [gettext("on time"), "1–2×", "2–4×", "4–8×", ">8×"]
    colours = [OK] + LATE_COLOURS
    height = ((len(rows) + cols - 1) // cols) * cell_h + 10
    body = []
    for n, row in enumerate(rows):
        ox, oy = (n % cols) * cell_w, (n // cols) * cell_h
        body.append(_text(ox + 10, oy + 16, row.label, weight="bold"))
        bins = row.values[:len(LATE_BINS) + 1]
        top = max([c.value for c in bins if c.shown] + [1])
        bw, base = (cell_w - 40) / len(bins), oy + cell_h - 30
        for i, cell in enumerate(bins):
            bx = ox + 20 + i * bw
            if cell.shown:
                h = (cell.value / top) * (cell_h - 70)
                body += [_rect(bx + 3, base - h, bw - 6, h, colours[i]),
                         _text(bx + bw / 2, base - h - 4, formats.number(cell.value), anchor="middle")]
            else:
                body += [_rect(bx + 3, base - 14, bw - 6, 14, "none", MUTED, "3 2"),
                         _text(bx + bw / 2, base - 18, formats.cell_text(cell, report.k), anchor="middle",
                               fill=MUTED)]
            body.append(_text(bx + bw / 2, base + 14, labels[i], anchor="middle", fill=MUTED, size=11))
        body.append(_line(ox + 20, base, ox + cell_w - 20, base, INK))
    return _svg(WIDTH, height, "chart-lateness", _l("How late each stage was"),
                gettext("For each stage, the number completed on time and the number late by up to 2, "
                        "2 to 4, 4 to 8 and more than 8 times the legal term."), body)


def trend(report: Report, key: str, series: list[tuple[str, str, str]], title, desc, *,
          unit: str | None = None, reference: float | None = None) -> Markup | None:
    """A line per column of the month-by-month table; a suppressed or missing month is a gap."""
    table = report.tables["trend"]
    columns = [c.key for c in table.columns]
    points = {name: [formats.plain(r.values[columns.index(name)], unit) for r in table.rows] for name, _, _ in series}
    values = [v for vs in points.values() for v in vs if v is not None]
    if not values:
        return None
    top = max(values + [reference or 0]) * 1.1 or 1
    left, right, top_pad, bottom = 50, 20, 24, 40
    plot_w, plot_h = WIDTH - left - right, 200
    height = top_pad + plot_h + bottom + 18 * len(series)
    n = len(table.rows)

    def x(i):
        return left + (plot_w * i / max(n - 1, 1))

    def y(v):
        return top_pad + plot_h - v / top * plot_h

    body = []
    for step in range(5):
        value = top * step / 4
        body += [_line(left, y(value), WIDTH - right, y(value), GRID),
                 _text(left - 6, y(value) + 4, formats.number(round(value, 1)), anchor="end", fill=MUTED, size=11)]
    every = max(1, n // 8)
    for i, row in enumerate(table.rows):
        if i % every == 0 or i == n - 1:
            body.append(_text(x(i), top_pad + plot_h + 16, row.label, anchor="middle", fill=MUTED, size=11))
    if reference is not None:
        body += [_line(left, y(reference), WIDTH - right, y(reference), BAD, 2, "6 3"),
                 _text(WIDTH - right, y(reference) - 4, gettext("legal term"), anchor="end", fill=BAD)]
    for s, (name, label, colour) in enumerate(series):
        run: list[str] = []
        for i, value in enumerate(points[name] + [None]):
            if value is not None:
                run.append(f"{x(i):.1f},{y(value):.1f}")
                body.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}"/>')
            elif run:
                body.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>')
                run = []
        ly = top_pad + plot_h + bottom + 18 * s
        body += [_rect(left, ly - 10, 14, 4, colour), _text(left + 20, ly - 4, label)]
    return _svg(WIDTH, height, f"chart-{key}", title, desc, body)


def tile_map(report: Report) -> Markup:
    """The 32 states as tiles, shaded by the median time to implement measures against the legal term."""
    table = report.tables["by_state"]
    term = term_seconds(report, "implementation")
    size, gap, left, top = 52, 4, 10, 10
    body = []
    legend = [(OK, gettext("within the term")), ("#f0b429", gettext("up to twice the term")),
              (BAD, gettext("more than twice the term")), ("#e6e6e6", gettext("too few cases to show"))]
    rows = {row.key: row for row in table.rows}
    for code, (column, line) in TILES.items():
        tx, ty = left + column * (size + gap), top + line * (size + gap)
        row = rows.get(code)
        if row is None:  # outside the report's selection
            body += [_rect(tx, ty, size, size, "#ffffff", GRID),
                     _text(tx + size / 2, ty + 30, code, anchor="middle", fill=MUTED, size=11)]
            continue
        median = row.values[2]
        if median is None or not term:
            fill, text = "#e6e6e6", INK
        else:
            ratio = median / term
            fill, text = (OK, "#ffffff") if ratio <= 1 else (("#f0b429", INK) if ratio <= 2 else (BAD, "#ffffff"))
        value = formats.duration(median, "days", short=True) if median is not None else "—"
        body += [_rect(tx, ty, size, size, fill, "#ffffff"),
                 _text(tx + size / 2, ty + 22, code, anchor="middle", fill=text, weight="bold", size=11),
                 _text(tx + size / 2, ty + 40, value, anchor="middle", fill=text, size=11)]
    ly = top + 6 * (size + gap) + 10
    for i, (colour, label) in enumerate(legend):
        lx = left + (i % 2) * 300
        lyy = ly + (i // 2) * 20
        body += [_rect(lx, lyy, 14, 14, colour, MUTED), _text(lx + 20, lyy + 12, label)]
    return _svg(left * 2 + 11 * (size + gap), ly + 46, "chart-map",
                _l("Median time to implement measures, by state"),
                gettext("A tile per state, placed roughly as on a map of Mexico, shaded by the median time from "
                        "the board's decision to the measures implemented, against the legal term."), body)


def charts(report: Report) -> dict[str, Markup | None]:
    """Every chart of the report, by the key of the table it is drawn from."""
    implementation_term = term_seconds(report, "implementation")
    return {
        "stages": delay_bars(report),
        "lateness": lateness_histograms(report),
        "requests": trend(report, "requests", [("received", str(_l("Requests received")), ACCENT)],
                          _l("Requests received, month by month"),
                          gettext("Requests received each month."), unit=None),
        "trend": trend(report, "delays", [
            ("implementation_median", str(_l("Measures implemented: median days")), ACCENT),
            ("assessment_median", str(_l("Risk assessment: median days")), "#6a3d9a")],
            _l("Median days, month by month"),
            gettext("Median days from the board's decision to the measures implemented, and for the risk "
                    "assessment, by the month they were completed; the dashed line is the implementation term."),
            unit="days", reference=implementation_term / DAY if implementation_term else None),
        "by_state": tile_map(report),
    }
