"""Fixtures for the playground tests, over tests/playground/tiny_models.py.

`tiny_models` (once per session, under the test ATTUNE_HOME): the tiny base, its adapters and a full-weight
checkpoint. `snapshots`: those registered in the test database. `builtin_backend`: one in-process backend.
"""

import pytest

from tests.playground.tiny_models import build_tiny_models, register_snapshots


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
