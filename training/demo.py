"""Where the demo data set lives in the data folder: the files `manage.py bootstrap_demo` writes, which
the compare page and new rating tasks read their held-out prompts from."""

from pathlib import Path

from django.conf import settings

DEMO_FILES = {"train": "demo-intents-train.jsonl", "valid": "demo-intents-valid.jsonl"}
HELDOUT_FILE = "demo-intents-heldout.jsonl"
# The reinforcement demo (training/demo_rft.py): prompts with no answer, and the grader that teaches them.
RFT_FILES = {"train": "demo-intents-rft-train.jsonl", "valid": "demo-intents-rft-valid.jsonl"}
RFT_HELDOUT_FILE = "demo-intents-rft-heldout.jsonl"
RFT_GRADER_FILE = "demo-intents-rft-grader.json"


def demo_dir() -> Path:
    return settings.ATTUNE_HOME / "demo"


def heldout_path() -> Path:
    """The demo's held-out prompts: never trained on, so the playground's first comparison is fair."""
    return demo_dir() / HELDOUT_FILE


def rft_heldout_path() -> Path:
    """The reinforcement demo's held-out prompts, which its eval (`eval_demo_rft`) runs."""
    return demo_dir() / RFT_HELDOUT_FILE
