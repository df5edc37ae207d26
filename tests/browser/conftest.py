"""Fixtures for the browser tests: one headless Chromium per session, the app
served by a real HTTP server per test, and a fresh browser context per test.

The app served is the very object made by ``tests.conftest.app`` (so its
teardown empties the tables after each test), and accounts come from
``tests.conftest.make_account``. Both backends (SQLite and PostgreSQL) run,
through the parametrized ``database_url`` session fixture.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
# The machine has no network: keep Chromium from trying to reach Google.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
LOCALE = "es-MX"
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: object

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def __call__(self, path: str = "/") -> str:
        return self.url + path


@pytest.fixture
def live_server(app):
    """``app`` served on 127.0.0.1 at a free port, in a background thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll interval: shutdown() waits for it.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def context(browser, live_server):
    """A fresh, cookie-less browser context; closed before the server stops."""
    ctx = browser.new_context(locale=LOCALE, base_url=live_server.url)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()
