"""Page objects for the dead-man's vault (issue 6): the journalist's pages and the
recipient's release page. Fields are reached through their labels (see pages.py)."""
from __future__ import annotations

import re

from playwright.sync_api import Download, Locator, Page, expect

from tests.browser.pages import BasePage, follow, labelled_field

VAULT_PATH = re.compile(r"/vault/([0-9a-f]{32})$")


class NewVaultPage(BasePage):
    path = "/vault/new"

    def create(self, title: str) -> "VaultPage":
        labelled_field(self.page, "title").fill(title)
        follow(self.page, self.page.locator("#new-vault button[type=submit]"))
        match = VAULT_PATH.search(self.current_path)
        assert match, f"not on a vault page: {self.current_path}"
        return VaultPage(self.page, match.group(1))


class VaultPage(BasePage):
    def __init__(self, page: Page, vault_id: str):
        super().__init__(page)
        self.vault_id = vault_id
        self.path = f"/vault/{vault_id}"

    @property
    def state(self) -> Locator:
        return self.page.locator("#state")

    @property
    def flash(self) -> Locator:
        return self.page.locator(".flash, .alert")

    def set_pins(self, pin: str, duress_pin: str) -> None:
        self.page.goto(f"{self.path}/pins")
        for field_id, value in (("pin", pin), ("pin_confirm", pin), ("duress_pin", duress_pin),
                                ("duress_pin_confirm", duress_pin)):
            labelled_field(self.page, field_id).fill(value)
        follow(self.page, self.page.locator("#pins button[type=submit]"))

    def add_recipient(self, *, name: str, email: str, age_recipient: str, language: str = "es") -> None:
        self.page.goto(f"{self.path}/recipients")
        labelled_field(self.page, "name").fill(name)
        labelled_field(self.page, "email").fill(email)
        labelled_field(self.page, "language").select_option(language)
        labelled_field(self.page, "age_recipient").fill(age_recipient)
        follow(self.page, self.page.locator("#add-recipient button[type=submit]"))

    def deposit_file(self, path) -> None:
        self.open()
        labelled_field(self.page, "file").set_input_files(str(path))
        follow(self.page, self.page.locator("#deposit-file button[type=submit]"))

    def deposit_rows(self) -> Locator:
        return self.page.locator("tr[id^=deposit-]")

    def arm(self, pin: str) -> None:
        self.open()
        labelled_field(self.page, "arm-pin").fill(pin)
        follow(self.page, self.page.locator("#arm button[type=submit]"))


class ReleasePage(BasePage):
    path = "/release/"

    def expect_loaded(self) -> "ReleasePage":
        self.expect_path(self.path)
        expect(self.page.locator("h1")).to_be_visible()
        return self

    @property
    def files(self) -> Locator:
        return self.page.locator("ol.release-files > li")

    def command(self, n: int = 0) -> str:
        return self.files.nth(n).locator("code.command").inner_text()

    def download(self, n: int = 0) -> Download:
        with self.page.expect_download() as info:
            self.files.nth(n).locator("button[type=submit]").click()
        return info.value
