"""Where the demo data set lives in the data folder: the files `manage.py bootstrap_demo` writes, which
the compare page and new rating tasks read their held-out prompts from."""

from pathlib import Path

from django.conf import settings

DEMO_FILES = {"train": "demo-intents-train.jsonl", "valid": "demo-intents-valid.jsonl"}
HELDOUT_FILE = "demo-intents-heldout.jsonl"


def demo_dir() -> Path:
    return settings.ATTUNE_HOME / "demo"


def heldout_path() -> Path:
    """The demo's held-out prompts: never trained on, so the playground's first comparison is fair."""
    return demo_dir() / HELDOUT_FILE
