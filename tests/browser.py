"""What every browser test shares: Debian's Chromium, its flags here, where screenshots go."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = os.environ.get("ATTUNE_CHROMIUM", "/usr/bin/chromium")
# Root needs --no-sandbox; the machine is offline, so Chromium's own background traffic is turned off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

browser_marks = [pytest.mark.slow,
                 pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} "
                                    "(apt-get install chromium)")]
