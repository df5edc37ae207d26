"""Page object of the delay report (issue 7): the period form, the charts, the downloads.

Found by id, name and address (the page is Spanish by default); each form field
also through its label, like every page object here.
"""
from __future__ import annotations

from playwright.sync_api import Download, Locator, expect

from .pages import BasePage, follow, labelled_field


class ReportPage(BasePage):
    path = "/reports/"

    def expect_loaded(self):
        self.expect_path()
        expect(self.page.locator("form.filters #start")).to_be_visible()
        return self

    def choose_period(self, first: str, last: str) -> None:
        """Pick the first and last month (YYYY-MM) and show the report (a plain GET form)."""
        labelled_field(self.page, "start").select_option(first)
        labelled_field(self.page, "end").select_option(last)
        follow(self.page, self.page.locator("form.filters").get_by_role("button"))

    @property
    def charts(self) -> Locator:
        return self.page.locator("figure.report-chart svg[role=img]")

    def table(self, key: str) -> Locator:
        return self.page.locator(f"table#table-{key}")

    def row_labels(self, key: str) -> list[str]:
        return [t.strip() for t in self.table(key).locator("tbody th[scope=row]").all_inner_texts()]

    def _download(self, link: Locator) -> Download:
        with self.page.expect_download() as info:
            link.click()
        return info.value

    def download_pdf(self) -> Download:
        return self._download(self.page.locator('a[href^="/reports/report.pdf"]'))

    def download_csv(self, key: str) -> Download:
        return self._download(self.page.locator(f'a[href^="/reports/{key}.csv"]'))
