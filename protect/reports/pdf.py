"""The report as a PDF, through WeasyPrint: the same figures and SVG charts as the page.

Nothing is fetched while rendering (no URL is allowed): the document is
self-contained, with its styles in the template.
"""
from __future__ import annotations

import re

from flask_babel import gettext
from markupsafe import Markup


def render(html: str) -> bytes:
    # Imported when a PDF is asked for: it is heavy, and few requests need it.
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    return HTML(string=html, url_fetcher=URLFetcher(allowed_protocols=())).write_pdf()


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def page_counter_css() -> Markup:
    """The CSS ``content`` of the page footer: the translated "Page 3 of 12" around the page counters."""
    text = gettext("Page %(page)s of %(pages)s", page="\x00", pages="\x01")
    parts = []
    for piece in re.split("(\x00|\x01)", text):
        if piece == "\x00":
            parts.append("counter(page)")
        elif piece == "\x01":
            parts.append("counter(pages)")
        elif piece:
            parts.append(_css_string(piece))
    return Markup(" ".join(parts))  # noqa: S704 (counters and quoted, escaped CSS strings)
