"""Fixtures for the playground tests, over tests/playground/tiny_models.py.

`tiny_models` (once per session, under the test ATTUNE_HOME): the tiny base, its adapters and a full-weight
checkpoint. `snapshots`: those registered in the test database. `builtin_backend`: one in-process backend.
`playground_studio`: a real studio over a home holding those snapshots (`start_playground_studio` starts
one with more settings).
"""

import json
import shutil

import pytest

from tests.playground.tiny_models import build_tiny_models, register_snapshots
from tests.servers import manage, start_studio, stop_studio

REGISTER = """
import json
from django.conf import settings
from tests.playground.tiny_models import build_tiny_models, register_snapshots
registered = register_snapshots(build_tiny_models(settings.ATTUNE_HOME / "playground-test-models"))
print("NAMES=" + json.dumps(registered.names))
"""


def start_playground_studio(tiny_models, home, **env):
    """A studio over a fresh `home` holding the tiny models as a base, a job and its checkpoints;
    `studio.extra["names"]`: the base's and the three checkpoints' model names."""
    home.mkdir()
    shutil.copytree(tiny_models.root, home / "playground-test-models")
    manage(home, "migrate", "--noinput")
    out = manage(home, "shell", "-c", REGISTER).stdout
    names = json.loads(next(line for line in out.splitlines() if line.startswith("NAMES="))[6:])
    studio = start_studio(home, ATTUNE_INPROCESS_WORKER="0", **env)
    studio.extra["names"] = names
    return studio


@pytest.fixture
def playground_studio(tiny_models, tmp_path):
    studio = start_playground_studio(tiny_models, tmp_path / "home")
    yield studio
    stop_studio(studio.process)


@pytest.fixture(scope="session")
def tiny_models():
    from django.conf import settings

    return build_tiny_models(settings.ATTUNE_HOME / "playground-test-models")


@pytest.fixture
def snapshots(db, tiny_models):
    return register_snapshots(tiny_models)


@pytest.fixture(scope="session")
def builtin_backend():
    from playground.inference.builtin import BuiltinBackend

    return BuiltinBackend(max_full_models=1)
