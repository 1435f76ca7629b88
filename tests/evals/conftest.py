"""Fixtures of the Evals pages' tests.

- `prompt_file`: an evals-purpose DataFile of three items with `messages` and an `answer`, stored as an
  upload is. `snapshot_names`: two base models' rows (no weights: nothing here generates text).
- `eval_obj`: an eval with two criteria (an exact match and a python length score) on `prompt_file`.
- The playground's tiny models (a base, a LoRA job with three epoch checkpoints: `snapshots`), and
  `run_queue`, which works through the queued eval runs in this process as the studio's eval worker does.
"""

import json

import pytest

from tests.playground.conftest import builtin_backend, snapshots, tiny_models  # noqa: F401

ITEMS = [{"messages": [{"role": "user", "content": f"question {i}"}], "answer": answer}
         for i, answer in enumerate(["yes", "no", "yes"])]


def store_items(items, name="items.jsonl"):
    from training.datasets import store_upload

    data_file, report = store_upload(["".join(json.dumps(i) + "\n" for i in items).encode()], name,
                                     purpose="evals")
    assert report.ok, report.errors
    return data_file


@pytest.fixture
def prompt_file(db):
    return store_items(ITEMS)


@pytest.fixture
def snapshot_names(db):
    from training.models import BaseModel

    for name in ("attune-tiny", "attune-small"):
        BaseModel.objects.create(name=name, source=name)
    return ["attune-tiny", "attune-small"]


CRITERIA = [
    {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
     "operation": "eq"},
    {"type": "python", "name": "short", "source": "def grade(sample, item):\n    return 1.0\n",
     "pass_threshold": 0.5},
]


@pytest.fixture
def eval_obj(prompt_file, admin_user):
    from evals.models import Eval
    from evals.requests import eval_fields

    fields = eval_fields({
        "name": "intent", "data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
        "testing_criteria": CRITERIA,
        "attune": {"data_source": {"source": {"type": "file_id", "id": prompt_file.public_id},
                                   "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                                   "sampling_params": {"max_completion_tokens": 16, "temperature": 0}}}})
    return Eval.objects.create(owner=admin_user, **fields)


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
