"""Fixtures of the Evals pages' tests.

- `prompt_file`: an evals-purpose DataFile of three items with `messages` and an `answer`, stored as an
  upload is. `snapshot_names`: two base models' rows (no weights: nothing here generates text).
- `eval_obj`: an eval with two criteria (an exact match and a python length score) on `prompt_file`.
- `graders_templates`: `graders.check_template` and `render_template` (the signatures evals/requests.py
  calls) built from graders.templates while the graders library does not export them yet; when it does,
  this fixture does nothing.
"""

import json

import pytest

ITEMS = [{"messages": [{"role": "user", "content": f"question {i}"}], "answer": answer}
         for i, answer in enumerate(["yes", "no", "yes"])]


@pytest.fixture(autouse=True)
def graders_templates(monkeypatch):
    import graders

    if hasattr(graders, "check_template") and hasattr(graders, "render_template"):
        return
    from graders import GraderError, templates

    def check_template(text, param="template", allow_sample=True):
        unknown = templates.unknown_variables(text)
        if not allow_sample:
            unknown += [m.group(0) for m in templates.VARIABLE.finditer(text) if m.group(1).strip().startswith("sample")]
        if unknown:
            raise GraderError(f"unknown template variable {unknown[0]} in {param}", param, "unknown_variable")

    def render_template(text, item=None, sample=None):
        try:
            return templates.render(text, templates.make_sample(sample or ""), item or {})
        except templates.TemplateError as exc:
            raise GraderError(str(exc), "template", exc.flag) from None

    monkeypatch.setattr(graders, "check_template", check_template, raising=False)
    monkeypatch.setattr(graders, "render_template", render_template, raising=False)


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
