"""Rows and files the tests start from: plain functions with sensible defaults, each overridable by keyword.

tests/conftest.py builds the shared fixtures on these; a test that needs a second user, another file or a
job of its own calls them directly.

- `make_user(role)`: an admin or an evaluator, made the way `manage.py create_user` makes one.
- `make_base_model()`: attune-tiny's row (no weights: nothing here loads it).
- `chat_lines(n)`, `preference_lines(n)`, `reinforcement_lines(n)`: JSONL text; `upload(text)`: a DataFile
  stored and checked as an upload is. `make_data_file()`: a DataFile row made directly, for pages that only list files.
- `make_job(user)`: a job created through `create_job`, as the form and the API create one (queued when its
  files are valid); `make_claimed_job(user)`: the same job claimed by a worker, status running;
  `make_finished_job(user)`: the same job succeeded, with epoch checkpoints (folders holding an adapter's or a
  model's file names, no real weights) under ATTUNE_HOME.
"""

import json

DEFAULT_USERNAMES = {"admin": "alice", "evaluator": "eve"}


def make_user(role="admin", username=None, password=None):
    """An admin (staff) or an evaluator (in the evaluators group). The password, `<username>-password`
    unless given, passes the password rules; the test run hashes it with a fast hasher (tests/conftest.py)."""
    from config.access import make_user as create_user

    username = username or DEFAULT_USERNAMES[role]
    user, _ = create_user(username, role, password=password or f"{username}-password")
    return user


def make_base_model(name="attune-tiny", source=None, **fields):
    from training.models import BaseModel

    return BaseModel.objects.create(name=name, source=source or name, **fields)


def chat_lines(n, label="greeting"):
    """`n` chat examples (system, user, assistant) whose answer is `label`, as JSONL text."""
    return "".join(json.dumps({"messages": [
        {"role": "system", "content": "Classify the intent."},
        {"role": "user", "content": f"hello number {i}"},
        {"role": "assistant", "content": label}]}) + "\n" for i in range(n))


def preference_lines(n):
    """`n` preference (DPO) examples as JSONL text."""
    return "".join(json.dumps({
        "input": {"messages": [{"role": "user", "content": f"hi {i}"}]},
        "preferred_output": [{"role": "assistant", "content": "hello"}],
        "non_preferred_output": [{"role": "assistant", "content": "go away"}]}) + "\n" for i in range(n))


def reinforcement_lines(n, **fields):
    """`n` reinforcement prompts (developer, user) with the field `intent` ("greeting") a grader reads as
    {{item.intent}}, and `fields` on each."""
    return "".join(json.dumps({"messages": [
        {"role": "developer", "content": "Classify the intent."},
        {"role": "user", "content": f"hello number {i}"}], "intent": "greeting", **fields}) + "\n"
        for i in range(n))


def upload(text, name="data.jsonl"):
    """A DataFile stored and checked line by line as an upload is (`processed`, or `error` with its report)."""
    from training.datasets import store_upload

    data_file, _report = store_upload([text.encode()], name)
    return data_file


def make_data_file(filename="train.jsonl", **fields):
    """A processed chat DataFile row of 480 examples with no file behind it."""
    from training.models import DataFile

    fields = {"path": f"x/{filename}", "status": "processed", "n_examples": 480, "format": "chat", **fields}
    return DataFile.objects.create(filename=filename, **fields)


def make_job(user, training_file=None, **spec):
    """A job created through `create_job` on attune-tiny (its row made if missing) and `training_file`
    (20 chat examples uploaded if none). `spec` adds to or overrides the request; files may be DataFiles."""
    from training.jobs import create_job
    from training.models import BaseModel

    model = spec.pop("model", "attune-tiny")
    BaseModel.objects.get_or_create(name=model, defaults={"source": model})
    training_file = training_file or upload(chat_lines(20))
    if "validation_file" in spec and not isinstance(spec["validation_file"], str):
        spec["validation_file"] = spec["validation_file"].public_id
    return create_job({"model": model, "training_file": training_file.public_id, **spec}, user)


def make_claimed_job(user, worker="host:1:test", **spec):
    """`make_job`'s job, then claimed by `worker`: running, with its attempt counted."""
    from training.models import FineTuningJob

    job = make_job(user, **spec)
    claimed = FineTuningJob.claim_next(worker)
    assert claimed is not None and claimed.pk == job.pk, "another queued job was claimed first"
    return claimed


def make_finished_job(user, weights="lora", epochs=2, **spec):
    """`make_job`'s job, succeeded, with one checkpoint per epoch whose folder holds a LoRA adapter's file names
    (`weights="lora"`) or a full model's (`"full"`); `spec` goes to make_job."""
    from django.conf import settings

    from training.models import Checkpoint, FineTuningJob

    job = make_job(user, **({"adapter": "full"} if weights == "full" else {}), **spec)
    names = (("adapter_config.json", "{}"), ("adapter_model.safetensors", "")) if weights == "lora" else \
        (("config.json", "{}"), ("model.safetensors", ""))
    for epoch in range(1, epochs + 1):
        folder = settings.ATTUNE_HOME / "jobs" / job.public_id / "checkpoints" / f"epoch-{epoch}-step-{epoch * 3}"
        folder.mkdir(parents=True)
        for name, text in names:
            (folder / name).write_text(text)
        Checkpoint.objects.create(job=job, epoch=epoch, step=epoch * 3, is_final=epoch == epochs,
                                  path=str(folder.relative_to(settings.ATTUNE_HOME)))
    FineTuningJob.objects.filter(pk=job.pk).update(status=FineTuningJob.SUCCEEDED, fine_tuned_model=job.model_name())
    job.refresh_from_db()
    return job


EPOCH_DATA_SOURCE = {"type": "completions", "source": {"type": "file_content", "content": [{"item": {"q": "hi"}}]},
                     "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.q}}"}]}}


def make_eval(name="intents", criteria=("exact",), epoch_data_source=None):
    """An Eval row with one string check per criterion name and, unless `epoch_data_source={}`, prompts a job's
    epoch checkpoints can be run on."""
    from evals.models import Eval

    return Eval.objects.create(
        name=name, data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[{"type": "string_check", "name": c, "input": "{{sample.output_text}}",
                           "reference": "greeting", "operation": "eq"} for c in criteria],
        epoch_data_source=EPOCH_DATA_SOURCE if epoch_data_source is None else epoch_data_source)
