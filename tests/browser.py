"""What every browser test shares: Debian's Chromium, its flags here, where screenshots go.

`browser_marks` (a module's `pytestmark`) marks a test slow and asks for the `chromium` fixture first, so a
missing Chromium fails under CI=true and skips elsewhere (tests/servers.py's `need_system`) before any
studio starts.
"""

import os

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
