"""Django for a benchmark, in this process: this checkout importable, a fresh data folder, SQLite and the
in-memory channel layer whatever the environment says. Call `setup` before importing anything of Django's."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup(prefix):
    sys.path.insert(0, str(ROOT))
    os.environ["ATTUNE_HOME"] = tempfile.mkdtemp(prefix=prefix)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)

    import django

    django.setup()
