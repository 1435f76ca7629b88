"""The official `openai` SDK drives a live studio (manage.py serve, in-process worker, demo data) unchanged."""

import json
import time

import openai
import pytest
from openai import OpenAI

pytestmark = pytest.mark.slow

METRIC_KEYS = {"step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
               "full_valid_loss", "full_valid_mean_token_accuracy"}
SMALL = {"lora_r": 4, "lora_alpha": 8, "max_seq_length": 128, "eval_interval": 5, "eval_samples": 4}


def wait_for(client, job_id, statuses, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert job.status not in ("failed", "cancelled") or job.status in statuses, job.error
        assert time.monotonic() < deadline, f"{job_id} still {job.status}"
        time.sleep(0.5)


def old_sdk_pages(fetch):
    """Page the way SDKs before v1.62 do: follow `after` until a page comes back empty."""
    seen, after = [], None
    while True:
        page = fetch(after)
        if not page.data:
            return seen
        assert isinstance(page.has_more, bool)
        seen += [item.id for item in page.data]
        after = page.data[-1].id


@pytest.fixture
def sdk(studio):
    key = studio.manage("create_api_key", "admin").stdout.strip()
    client = OpenAI(base_url=studio.url + "/v1", api_key=key, max_retries=0, timeout=120)
    demo = studio.home / "demo"
    small_train = studio.home / "small-train.jsonl"
    small_valid = studio.home / "small-valid.jsonl"
    small_train.write_text("".join((demo / "demo-intents-train.jsonl").read_text().splitlines(True)[:40]))
    small_valid.write_text("".join((demo / "demo-intents-valid.jsonl").read_text().splitlines(True)[:10]))
    client.studio = studio
    client.paths = {"train": small_train, "valid": small_valid,
                    "heldout": demo / "demo-intents-heldout.jsonl"}
    return client


def test_the_sdk_fine_tunes_serves_and_controls_jobs(sdk):
    with open(sdk.paths["train"], "rb") as fh:
        train = sdk.files.create(file=fh, purpose="fine-tune")
    with open(sdk.paths["valid"], "rb") as fh:
        valid = sdk.files.create(file=fh, purpose="fine-tune")
    assert sdk.files.wait_for_processing(train.id).status == "processed"
    assert sdk.files.wait_for_processing(valid.id).status == "processed"
    assert {train.id, valid.id} <= {f.id for f in sdk.files.list()}
    assert sdk.files.content(train.id).content == sdk.paths["train"].read_bytes()  # streamed by the ASGI server

    # A job with explicit hyperparameters, 2 epochs.
    job = sdk.fine_tuning.jobs.create(
        model="attune-tiny", training_file=train.id, validation_file=valid.id, suffix="intents", seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 2}}},
        metadata={"test": "sdk"}, extra_body={"attune": SMALL})
    assert job.id.startswith("ftjob-") and job.error is not None and job.hyperparameters.n_epochs == 2

    # A second with auto hyperparameters: concrete as soon as the files are validated. Cancel it.
    auto = sdk.fine_tuning.jobs.create(model="attune-tiny", training_file=train.id, extra_body={"attune": SMALL})
    assert auto.status == "queued"
    resolved = auto.method.supervised.hyperparameters
    # 40 examples: 3 epochs (40 × 3 ≥ 100), batch 1 (40 // 50 rounds down to 1).
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (3, 1, 1.0)
    assert auto.hyperparameters.n_epochs == 3
    cancelled = sdk.fine_tuning.jobs.cancel(auto.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        sdk.fine_tuning.jobs.cancel(auto.id)

    done = wait_for(sdk, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:attune-tiny:intents:") and done.trained_tokens
    assert done.error.code is None or done.error.model_dump(exclude_none=True) == {}

    # Paging as old SDKs do, and as new ones do.
    pages = old_sdk_pages(lambda after: sdk.fine_tuning.jobs.list(limit=1, **({"after": after} if after else {})))
    assert pages[:2] == [auto.id, job.id] and len(pages) == len(set(pages))
    assert [j.id for j in sdk.fine_tuning.jobs.list(limit=1)] == pages
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"test": "sdk"})] == [job.id]
    events = old_sdk_pages(lambda after: sdk.fine_tuning.jobs.list_events(
        job.id, limit=5, **({"after": after} if after else {})))
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert len(events) == len(messages) and messages[-1] == f"Created fine-tuning job: {job.id}"
    assert any(m.startswith("Step ") for m in messages)

    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert len(checkpoints) == 2
    assert checkpoints[0].step_number > checkpoints[1].step_number
    assert checkpoints[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert checkpoints[1].fine_tuned_model_checkpoint.endswith(f":ckpt-step-{checkpoints[1].step_number}")
    for checkpoint in checkpoints:
        assert set(checkpoint.metrics.model_dump()) == METRIC_KEYS
        assert checkpoint.metrics.train_loss is not None and checkpoint.metrics.full_valid_loss is not None

    # Models: the fine-tuned model and the epoch-1 checkpoint are listed, retrievable, and answer.
    names = {m.id for m in sdk.models.list()}
    assert {"attune-tiny", done.fine_tuned_model, checkpoints[1].fine_tuned_model_checkpoint} <= names
    assert sdk.models.retrieve(checkpoints[1].fine_tuned_model_checkpoint).id == \
        checkpoints[1].fine_tuned_model_checkpoint
    prompt = json.loads(sdk.paths["heldout"].read_text().splitlines()[0])["messages"]
    for model in (done.fine_tuned_model, checkpoints[1].fine_tuned_model_checkpoint, "attune-tiny"):
        reply = sdk.chat.completions.create(model=model, messages=prompt, max_tokens=16, temperature=0)
        assert reply.model == model and reply.choices[0].message.role == "assistant"
        assert reply.choices[0].finish_reason in ("stop", "length")
    streamed = sdk.chat.completions.create(model=done.fine_tuned_model, messages=prompt, max_tokens=16,
                                           temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    plain = sdk.chat.completions.create(model=done.fine_tuned_model, messages=prompt, max_tokens=16,
                                        temperature=0)
    assert text == plain.choices[0].message.content and text

    # A third job is paused while it runs, then resumed to the end. It is given enough steps
    # (320) that the pause lands well before the end, however fast the machine.
    third = sdk.fine_tuning.jobs.create(
        model="attune-tiny", training_file=train.id, hyperparameters={"n_epochs": 8, "batch_size": 1},
        extra_body={"attune": SMALL})
    deadline = time.monotonic() + 120
    while sdk.fine_tuning.jobs.retrieve(third.id).status != "running" or \
            not any(e.message.startswith("Step ") for e in sdk.fine_tuning.jobs.list_events(third.id).data):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    sdk.fine_tuning.jobs.pause(third.id)
    paused = wait_for(sdk, third.id, {"paused", "succeeded"})
    assert paused.status == "paused"
    assert sdk.fine_tuning.jobs.resume(third.id).status == "queued"
    assert wait_for(sdk, third.id, {"succeeded", "failed"}).status == "succeeded"
    assert len(sdk.fine_tuning.jobs.checkpoints.list(third.id).data) == 8


def test_the_sdk_sees_errors_that_name_the_field(sdk):
    with open(sdk.paths["train"], "rb") as fh:
        train = sdk.files.create(file=fh, purpose="fine-tune")
    bad_path = sdk.studio.home / "bad.jsonl"
    bad_path.write_text(sdk.paths["train"].read_text() + '{"messages": [{"role": "user", "content": "x"}]}\n')
    with open(bad_path, "rb") as fh:
        bad = sdk.files.create(file=fh, purpose="fine-tune")
    assert bad.status == "error"

    with pytest.raises(openai.BadRequestError) as exc:
        sdk.fine_tuning.jobs.create(model="attune-tiny", training_file="file-doesnotexist")
    assert exc.value.param == "training_file"
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.fine_tuning.jobs.create(model="attune-tiny", training_file=bad.id)
    assert exc.value.param == "training_file" and "Line 41" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.fine_tuning.jobs.create(model="attune-tiny", training_file=train.id, hyperparameters={"n_epochs": 99})
    assert exc.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id)
    assert exc.value.param == "model"
    with pytest.raises(openai.NotFoundError) as exc:
        sdk.chat.completions.create(model="ft:attune-tiny::nope", messages=[{"role": "user", "content": "x"}])
    assert exc.value.param == "model"
    with pytest.raises(openai.NotFoundError) as exc:
        sdk.models.retrieve("ft:attune-tiny:x:nope")
    assert exc.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.files.create(file=("oops.jsonl", b'["not", "a", "dict"]\n'), purpose="fine-tune")
    assert exc.value.param is None and "Line 1 is not a dictionary" in exc.value.message
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=sdk.base_url, api_key="sk-attune-wrong", max_retries=0).models.list()


def test_the_sdk_creates_a_reinforcement_job_and_sees_its_errors_named(sdk):
    prompts_path = sdk.studio.home / "prompts.jsonl"
    prompts_path.write_text("".join(sdk.paths["heldout"].read_text().splitlines(True)[:20]))  # messages, expected
    with open(prompts_path, "rb") as fh:
        prompts = sdk.files.create(file=fh, purpose="fine-tune")
    assert sdk.files.wait_for_processing(prompts.id).status == "processed"
    label = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
             "reference": "{{item.expected}}", "operation": "eq"}
    assert sdk.fine_tuning.alpha.graders.validate(grader=label).grader.name == "label"
    assert sdk.fine_tuning.alpha.graders.run(grader=label, model_sample="greeting",
                                             item={"expected": "greeting"}).reward == 1.0

    job = sdk.fine_tuning.jobs.create(
        model="attune-tiny", training_file=prompts.id, seed=3,
        method={"type": "reinforcement", "reinforcement": {"grader": label, "hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "eval_interval": 2, "eval_samples": 4}}},
        extra_body={"attune": {"num_generations": 2, "max_completion_length": 8, "lora_r": 4}})
    assert job.method.type == "reinforcement" and job.status in ("queued", "running")
    assert job.method.reinforcement.grader.type == "string_check"
    assert job.method.reinforcement.grader.reference == "{{item.expected}}"
    assert job.method.reinforcement.hyperparameters.batch_size == 4
    assert job.method.reinforcement.hyperparameters.eval_samples == 4
    assert job.method.reinforcement.model_extra["response_format"] is None
    retrieved = sdk.fine_tuning.jobs.retrieve(job.id)
    assert retrieved.method.reinforcement.grader.name == "label"
    sdk.fine_tuning.jobs.cancel(job.id)

    def refused(**method):
        with pytest.raises(openai.BadRequestError) as exc:
            sdk.fine_tuning.jobs.create(model="attune-tiny", training_file=prompts.id,
                                        method={"type": "reinforcement", "reinforcement": method})
        return exc.value

    assert refused(grader={**label, "operation": "equals"}).param == "method.reinforcement.grader.operation"
    assert refused(grader={**label, "reference": "{{item.intent}}"}).param == "training_file"
    assert "Line 1 of training file" in refused(grader={**label, "reference": "{{item.intent}}"}).message
    judged = {"type": "score_model", "name": "judge", "model": "gpt-4o", "input": [{"role": "user",
                                                                                     "content": "{{sample.output_text}}"}]}
    assert refused(grader=judged).param == "method.reinforcement.grader.model"
    assert refused(grader=label, hyperparameters={"eval_samples": 0}).param == \
        "method.reinforcement.hyperparameters.eval_samples"
    with open(sdk.paths["train"], "rb") as fh:
        chat = sdk.files.create(file=fh, purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.fine_tuning.jobs.create(model="attune-tiny", training_file=chat.id,
                                    method={"type": "reinforcement", "reinforcement": {"grader": label}})
    assert exc.value.param == "training_file" and "reinforcement prompts" in exc.value.message


def test_a_reinforcement_jobs_engine_asks_the_studios_judge_with_its_token(sdk):
    """A score_model grader's judge is a snapshot of this studio: the engine asks /v1/chat/completions with
    its judge token (serve tells it its own address). A refused or unreachable judge would be a
    model_grader_server_error, which the job reports in a warning event."""
    demo = sdk.studio.home / "demo"
    for name, lines in (("demo-intents-rft-train.jsonl", 16), ("demo-intents-rft-valid.jsonl", 10)):
        (sdk.studio.home / name).write_text("".join((demo / name).read_text().splitlines(True)[:lines]))
    with open(sdk.studio.home / "demo-intents-rft-train.jsonl", "rb") as fh:
        train = sdk.files.create(file=fh, purpose="fine-tune")
    with open(sdk.studio.home / "demo-intents-rft-valid.jsonl", "rb") as fh:
        valid = sdk.files.create(file=fh, purpose="fine-tune")
    judge = {"type": "score_model", "name": "judge", "model": "attune-tiny",
             "input": [{"role": "user", "content": "The order number is {{item.order_id}}. Score this answer from 0 to 1: "
                                                   "{{sample.output_text}}"}],
             "sampling_params": {"max_completions_tokens": 4, "temperature": 0}}
    job = sdk.fine_tuning.jobs.create(
        model="attune-tiny", training_file=train.id, validation_file=valid.id, seed=5,
        method={"type": "reinforcement", "reinforcement": {"grader": judge, "hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "eval_interval": 2, "eval_samples": 2}}},
        extra_body={"attune": {"num_generations": 2, "max_completion_length": 6, "lora_r": 4}})
    done = wait_for(sdk, job.id, {"succeeded", "failed"}, timeout=600)
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert done.status == "succeeded", (done.error, messages[:10])
    refused = [m for m in messages if "model_grader_server_error" in m]
    assert not refused, refused
