"""Fixtures for the evals tests: the playground's tiny models (a base, a LoRA job with three epoch
checkpoints), and `run_queue`, which works through the queued eval runs in this process as the studio's
eval worker does."""

import pytest

from tests.playground.conftest import builtin_backend, snapshots, tiny_models  # noqa: F401


@pytest.fixture
def run_queue(settings):
    from evals.runner import EvalWorker

    def work():
        worker = EvalWorker(name="tests:evals")
        n = 0
        while worker.poll_once():
            n += 1
        return n

    return work
