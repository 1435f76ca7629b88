"""What every browser test shares: Debian's Chromium, its flags here, where screenshots go, opening a page
that collects its errors (`open_page`) and logging in (`log_in`).

`browser_marks` (a module's `pytestmark`) marks a test slow and asks for the `chromium` fixture first, so a
missing Chromium fails under CI=true and skips elsewhere (tests/servers.py's `need_system`) before any
studio starts.
"""

import os
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from tests.servers import ROOT, need_system

SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = os.environ.get("ATTUNE_CHROMIUM", "/usr/bin/chromium")
# Root needs --no-sandbox; the machine is offline, so Chromium's own background traffic is turned off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    return need_system(CHROMIUM, "Chromium", "chromium")


browser_marks = [pytest.mark.slow, pytest.mark.usefixtures("chromium")]


def shot(page, name):
    """Save the whole page as test-output/screenshots/`name`."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


@contextmanager
def open_page(viewport=(1360, 1000), timeout_ms=30_000):
    """A Playwright page in Debian's Chromium, `viewport` (width, height) in size, waiting `timeout_ms` by default.

    `page.errors` collects uncaught exceptions and console errors, which include what the
    Content-Security-Policy blocked. The browser asks for /favicon.ico on its own; that 404 is no error of the
    page and is left out. The browser is closed at the end.
    """
    from playwright.sync_api import sync_playwright

    def on_console(msg):
        url = msg.location.get("url", "")
        if msg.type == "error" and not url.endswith("/favicon.ico"):
            page.errors.append(f"{msg.text} at {url}" if url else msg.text)

    width, height = viewport
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.on("console", on_console)
            yield page
        finally:
            browser.close()


def log_in(page, base_url, username, password):
    """Log in through /login/ and wait until the browser has left the login page.

    A wrong password (or a lockout) brings the login page back: that fails here, with what the page says.
    """
    page.goto(base_url + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    if urlsplit(page.url).path == "/login/":
        said = page.locator("form .error").all_inner_texts()
        raise AssertionError(f"logging in as {username!r} failed, still at {page.url}: "
                             f"{' '.join(said) or 'no error shown'}")
