"""Issue 7 in a real browser: a donor signs in, changes the period, sees the charts and
downloads the PDF and a table's CSV."""
from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import expect

from protect.accounts.models import User
from protect.extensions import db
from tests.browser.pages import sign_in
from tests.browser.report_pages import ReportPage
from tests.reports.conftest import NOW, Population, set_min_cell, write_hand_made
from tests.vault.conftest import FrozenNow

pytestmark = pytest.mark.browser


def test_donor_changes_the_period_sees_the_charts_and_downloads(page, live_server, make_account, tmp_path):
    app = live_server.app
    app.extensions["protect.now"] = FrozenNow(NOW)
    set_min_cell(app, 3)  # the hand-made population is small: some of its figures reach 3
    cw1, cw2 = make_account("caseworker"), make_account("caseworker")
    with app.app_context():
        write_hand_made(Population(db.session), db.session.get(User, cw1.id), db.session.get(User, cw2.id))
    donor = make_account("donor")

    sign_in(page, donor)
    report = ReportPage(page).expect_loaded()
    # The default period is the last twelve complete months: March 2025 to February 2026.
    assert len(report.row_labels("requests")) == 12
    report.choose_period("2026-01", "2026-02")
    report.expect_loaded()
    assert "start=2026-01" in page.url and "end=2026-02" in page.url
    assert report.row_labels("requests") == ["2026-01", "2026-02"]
    expect(report.charts.first).to_be_visible()
    assert report.charts.count() >= 4
    for chart in report.charts.all():
        assert chart.locator("title").count() == 1 and chart.bounding_box()["height"] > 50
    expect(report.table("stages").locator("caption")).to_be_visible()

    pdf = report.download_pdf()
    assert pdf.suggested_filename.startswith("protect-") and pdf.suggested_filename.endswith("-2026-01-2026-02.pdf")
    data = Path(pdf.path()).read_bytes()
    assert data.startswith(b"%PDF-")
    text = subprocess.run(["pdftotext", str(pdf.path()), "-"], capture_output=True, check=True, text=True).stdout
    assert "2026-01 – 2026-02" in text

    table = report.download_csv("stages")
    assert table.suggested_filename == "protect-stages-2026-01-2026-02.csv"
    with open(table.path(), newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert [r[0] for r in rows[1:]] == ["triage", "urgent_issued", "urgent_implemented", "risk_assessment",
                                        "decision_communicated", "implementation", "appeal", "review"]
    assert {r[0]: r[3] for r in rows[1:]}["implementation"] == "5"   # five completed in the period
