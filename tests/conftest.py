"""Fixtures every test package shares, built on tests/factories.py.

- No test reaches the Hugging Face hub (`HF_HUB_OFFLINE=1`, set before anything imports it).
- The test run hashes passwords with Django's fast MD5 hasher (see `pytest_configure`).
- `admin_user` (alice) and `evaluator_user` (eve), with passwords `alice-password` and `eve-password`;
  `admin_client`, `evaluator_client`: Django's test client logged in as each.
- `base_model`: attune-tiny's row. `train_file` (20 chat examples) and `valid_file` (10): DataFiles stored
  as uploads are. tests/api/conftest.py has its own `train_file` and `valid_file`: ids of the demo files
  uploaded through /v1/files.
- `models_dir`: an empty MODELS_DIR. `tiny_model`: attune-tiny's architecture without pre-training, built
  once per module.
- `demo_home`: a data folder (ATTUNE_HOME) where `migrate` and `bootstrap_demo` have run, built once
  per test session and copied for each user of it.
- `studio`: a real Attune server (`manage.py serve`) on a free loopback port over a copy of the demo
  home: HTTP, websockets and the in-process worker, as `make run` starts them.
- From tests/servers.py: `postgres_server`, `redis_server`; from tests/browser.py: `chromium`.
"""

import os
import shutil

import pytest

# Nothing in a test reaches the Hugging Face hub: a model that is not on this disk fails at once (a
# hub id with no network would wait for the hub's retries, 46 s on the role matrix's dataset page).
os.environ["HF_HUB_OFFLINE"] = "1"

# The helper modules' asserts report their values as a test's do; this must come before they are imported.
pytest.register_assert_rewrite("tests.api_client", "tests.browser", "tests.factories", "tests.servers",
                               "tests.playground.tiny_models", "tests.training.engine_helpers")

from tests import factories  # noqa: E402
from tests.servers import ROOT, copy_home, link_or_copy, manage, start_studio, stop_studio  # noqa: E402

pytest_plugins = ["tests.servers", "tests.browser"]


def pytest_configure(config):
    # PBKDF2 at Django's default strength takes most of a second per password on a small machine, and
    # nearly every test makes a user. This process only checks passwords it hashed itself; a studio
    # started in a subprocess keeps the real hasher.
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_user(db):
    return factories.make_user("admin")


@pytest.fixture
def evaluator_user(db):
    return factories.make_user("evaluator")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def evaluator_client(client, evaluator_user):
    client.force_login(evaluator_user)
    return client


@pytest.fixture
def base_model(db):
    return factories.make_base_model()


@pytest.fixture
def train_file(db):
    return factories.upload(factories.chat_lines(20), "train.jsonl")


@pytest.fixture
def valid_file(db):
    return factories.upload(factories.chat_lines(10), "valid.jsonl")


@pytest.fixture
def models_dir(settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()
    return settings.MODELS_DIR


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.training.engine_helpers import build_test_model

    return build_test_model(tmp_path_factory.mktemp("model") / "attune-tiny")


@pytest.fixture(scope="session")
def demo_home_template(tmp_path_factory):
    """A migrated, bootstrapped data folder. The demo models that `make test` built in var/ are
    reused when they come from the same builder code (bootstrap_demo checks their build stamps)."""
    from training.management.commands.bootstrap_demo import DEMO_MODEL, PRETRAINED_MODEL, is_current

    home = tmp_path_factory.mktemp("demo-home")
    for name in (DEMO_MODEL, PRETRAINED_MODEL):
        built = ROOT / "var" / "models" / name
        if is_current(built, name):
            shutil.copytree(built, home / "models" / name, copy_function=link_or_copy)
    manage(home, "migrate", "--noinput")
    manage(home, "bootstrap_demo", timeout=1800)
    return home


@pytest.fixture
def demo_home(demo_home_template, tmp_path):
    return copy_home(demo_home_template, tmp_path / "home")


@pytest.fixture
def studio(demo_home):
    s = start_studio(demo_home)
    yield s
    stop_studio(s.process)
