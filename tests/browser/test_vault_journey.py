"""Issue 6 in a real browser: a journalist creates a vault, adds a recipient with an
age key, deposits a file and arms the vault; time passes the check-in and the grace
period; the recipient follows the link from the release e-mail, downloads the file,
and the real ``age -d`` turns it back into the original bytes."""
from __future__ import annotations

import os
import re
import subprocess
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from protect.crypto import agefile
from protect.extensions import db
from protect.notify import mail
from protect.vault import service as vault_service
from tests.browser.pages import sign_in
from tests.browser.vault_pages import NewVaultPage, ReleasePage
from tests.notify.conftest import smtp, use_mail  # noqa: F401  (the SMTP server fixture)

pytestmark = pytest.mark.browser

PIN, DURESS_PIN = "481516", "234200"
LINK = re.compile(r"https?://[^/\s]+(/release/[A-Za-z0-9_-]{43})\b")


def test_a_deposit_reaches_its_recipient_and_opens_with_age(browser, live_server, make_account, smtp, tmp_path):
    app = live_server.app
    use_mail(app, smtp)
    secret, recipient_key = agefile.generate_identity()
    original = os.urandom(300 * 1024)
    source = tmp_path / "contratos.pdf"
    source.write_bytes(original)

    # The journalist's side, in Spanish (the default).
    journalist = make_account("journalist")
    ctx = browser.new_context(locale="es-MX", base_url=live_server.url)
    page = ctx.new_page()
    sign_in(page, journalist)
    vault = NewVaultPage(page).open().create("Contratos de seguridad")
    vault.set_pins(PIN, DURESS_PIN)
    vault.add_recipient(name="Editora", email="editora@example.org", age_recipient=recipient_key, language="en")
    vault.deposit_file(source)
    expect(vault.deposit_rows()).to_have_count(1)
    expect(vault.deposit_rows().first).to_contain_text("contratos.pdf")
    vault.arm(PIN)
    expect(vault.page.locator("#next-due")).to_be_visible()
    ctx.close()

    # No check-in: past the due date and the grace period, the sweep releases it
    # and the notice goes out by e-mail.
    with app.app_context():
        armed = db.session.get(vault_service.Vault, vault.vault_id)
        app.extensions["protect.now"].advance(hours=armed.interval_hours + armed.grace_hours + 1)
        vault_service.sweep(db.session)
        assert db.session.get(vault_service.Vault, vault.vault_id).state == "released"
        assert mail.deliver(db.session).sent >= 1
    [(recipients, message)] = [(r, m) for r, m in smtp.handler.messages() if "editora@example.org" in r]
    body = message.get_payload(decode=True).decode()
    path = LINK.search(body).group(1)

    # The recipient: no account, the link from the e-mail, the command on the page.
    ctx = browser.new_context(locale="en-US", base_url=live_server.url, accept_downloads=True)
    page = ctx.new_page()
    page.goto(path)
    release = ReleasePage(page).expect_loaded()
    assert path not in page.url  # the token was traded for the session
    expect(release.files).to_have_count(1)
    expect(release.files.first).to_contain_text("contratos.pdf")
    assert release.command(0).startswith("age -d -i key.txt")
    download = release.download(0)
    encrypted = tmp_path / download.suggested_filename
    download.save_as(encrypted)
    assert encrypted.name.endswith(".age") and encrypted.read_bytes() != original
    key = tmp_path / "key.txt"
    key.write_text(secret + "\n")
    opened = subprocess.run(["age", "-d", "-i", str(key), str(encrypted)], capture_output=True, check=True)
    assert opened.stdout == original

    # Once per file: the button is gone and the page says the link is used.
    page.reload()
    expect(release.files.first.locator("button")).to_have_count(0)
    ctx.close()
