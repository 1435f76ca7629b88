"""The official `openai` SDK drives a whole eval against a live studio (`manage.py serve`, its eval worker,
the demo data), unchanged: evals, runs, output items, cancel, delete, and the graders routes.

The three tests share one studio and one API key (module-scoped `studio` and `sdk`): each works on evals,
runs and a job of its own, and the demo eval's runs are told apart by the job that made them.
"""

import time

import pytest
from openai import OpenAI

from tests.servers import copy_home, start_studio, stop_studio

pytestmark = pytest.mark.slow

LABEL = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
         "reference": "{{item.expected}}", "operation": "eq"}
SHORT = {"type": "python", "name": "short", "pass_threshold": 1,
         "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) <= 40 else 0.0\n"}


def wait_for_run(client, eval_id, run_id, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        assert time.monotonic() < deadline, f"{run_id} still {run.status}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def studio(demo_home_template, tmp_path_factory):
    s = start_studio(copy_home(demo_home_template, tmp_path_factory.mktemp("evals-sdk") / "home"))
    yield s
    stop_studio(s.process)


@pytest.fixture(scope="module")
def sdk(studio):
    key = studio.manage("create_api_key", "admin").stdout.strip()
    client = OpenAI(base_url=studio.url + "/v1", api_key=key, max_retries=0, timeout=120)
    client.studio = studio
    return client


def test_the_sdk_drives_a_whole_eval(sdk):
    demo = sdk.evals.retrieve("eval_demo")
    assert demo.testing_criteria[0].type == "string_check"
    assert "eval_demo" in [e.id for e in sdk.evals.list(limit=100).data]

    evaluation = sdk.evals.create(
        name="intents on attune-tiny", metadata={"team": "support"},
        data_source_config={"type": "custom", "item_schema": {"type": "object", "properties": {
            "messages": {"type": "array"}, "expected": {"type": "string"}}}, "include_sample_schema": True},
        testing_criteria=[LABEL, SHORT])
    assert evaluation.id.startswith("eval_") and evaluation.data_source_config.type == "custom"
    heldout = (sdk.studio.home / "demo" / "demo-intents-heldout.jsonl").read_text().splitlines()[:6]
    import json

    rows = [{"item": json.loads(line)} for line in heldout]
    run = sdk.evals.runs.create(evaluation.id, name="tiny base", data_source={
        "type": "completions", "model": "attune-tiny", "source": {"type": "file_content", "content": rows},
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "sampling_params": {"max_completion_tokens": 6, "temperature": 0, "seed": 3}})
    assert run.status in ("queued", "in_progress") and run.model == "attune-tiny"
    done = wait_for_run(sdk, evaluation.id, run.id)
    assert done.status == "completed", done.error
    counts = done.result_counts
    assert counts.total == 6 and counts.passed + counts.failed + counts.errored == 6
    assert {r.testing_criteria for r in done.per_testing_criteria_results} == {"label", "short"}
    assert done.per_model_usage[0].model_name == "attune-tiny" and done.per_model_usage[0].invocation_count == 6

    items = sdk.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=100).data
    assert sorted(i.datasource_item_id for i in items) == list(range(6))
    first = items[0]
    assert first.sample.model == "attune-tiny" and first.sample.input[-1].role == "user"
    assert {r.name for r in first.results} == {"label", "short"}
    for item in items:  # the verdicts follow the graders' rules on what the model wrote
        text = item.sample.output[0].content
        label = next(r for r in item.results if r.name == "label")
        assert label.passed == (text == item.datasource_item["expected"])
    failed = sdk.evals.runs.output_items.list(run.id, eval_id=evaluation.id, status="fail").data
    assert all(i.status == "fail" for i in failed) and len(failed) == counts.failed
    one = sdk.evals.runs.output_items.retrieve(first.id, eval_id=evaluation.id, run_id=run.id)
    assert one.id == first.id

    # Pre-generated samples, then a run canceled before it ends.
    samples = sdk.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": {
        "type": "file_content", "content": [{"item": {"expected": "refund"}, "sample": {"output_text": "refund"}}]}})
    assert wait_for_run(sdk, evaluation.id, samples.id).result_counts.passed == 1
    long_run = sdk.evals.runs.create(evaluation.id, data_source={
        "type": "completions", "model": "smollm2-135m", "source": {"type": "file_content", "content": rows * 8},
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "sampling_params": {"max_completion_tokens": 32}})
    canceled = sdk.evals.runs.cancel(long_run.id, eval_id=evaluation.id)
    assert canceled.status == "canceled"
    assert wait_for_run(sdk, evaluation.id, long_run.id).status == "canceled"
    listed = sdk.evals.runs.list(evaluation.id, status="completed").data
    assert {r.id for r in listed} == {run.id, samples.id}

    renamed = sdk.evals.update(evaluation.id, name="renamed")
    assert renamed.name == "renamed"
    assert sdk.evals.runs.delete(samples.id, eval_id=evaluation.id).deleted
    assert sdk.evals.delete(evaluation.id).deleted


def test_the_sdk_runs_and_validates_graders(sdk):
    grader = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}
    validated = sdk.fine_tuning.alpha.graders.validate(grader=grader)
    assert validated.grader.evaluation_metric == "fuzzy_match"
    result = sdk.fine_tuning.alpha.graders.run(grader=grader, model_sample="refund", item={"answer": "refund"})
    assert result.reward == pytest.approx(1.0)
    assert result.metadata.errors.invalid_variable_error is False
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        sdk.fine_tuning.alpha.graders.validate(grader={"type": "python", "name": "p", "source": "def grade(:\n"})
    assert raised.value.body["param"] == "grader.source" and "line 1" in raised.value.body["message"]


def test_a_job_that_names_the_demo_eval_scores_each_epoch_and_marks_the_best(sdk):
    demo = sdk.studio.home / "demo"
    train = sdk.studio.home / "small-train.jsonl"
    train.write_text("".join((demo / "demo-intents-train.jsonl").read_text().splitlines(True)[:40]))
    with open(train, "rb") as fh:
        uploaded = sdk.files.create(file=fh, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model="attune-tiny", training_file=uploaded.id, seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8}}},
        extra_body={"attune": {"eval": "eval_demo", "lora_r": 4, "lora_alpha": 8, "max_seq_length": 128}})
    assert job.model_extra["attune"]["eval"] == "eval_demo"
    deadline = time.monotonic() + 800  # the demo eval's 2 × 50 prompts run once the job has trained (EVAL_WHILE_TRAINING)
    while True:
        runs = [r for r in sdk.evals.runs.list("eval_demo", limit=100).data
                if r.model_extra["attune"]["fine_tuning_job_id"] == job.id]
        status = sdk.fine_tuning.jobs.retrieve(job.id).status
        assert status not in ("failed", "cancelled")
        if status == "succeeded" and len(runs) == 2 and all(r.status == "completed" for r in runs):
            break
        assert time.monotonic() < deadline, (status, [r.status for r in runs])
        time.sleep(1)
    for run in runs:
        assert run.result_counts.total == 50  # the demo's held-out prompts
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    by_run = {r.id: r for r in runs}
    for checkpoint in checkpoints:
        metrics = checkpoint.metrics.model_extra
        run = by_run[metrics["eval_run_id"]]
        assert run.model_extra["attune"]["checkpoint_id"] == checkpoint.id
        assert metrics["eval_pass_rate"] == pytest.approx(run.result_counts.passed / 50)
        assert metrics["eval_scores"] == {"label": pytest.approx(metrics["eval_mean_score"])}
    best = [c for c in checkpoints if c.model_extra["attune"]["is_best"]]
    assert len(best) == 1
    top = max(c.metrics.model_extra["eval_mean_score"] for c in checkpoints)
    assert best[0].metrics.model_extra["eval_mean_score"] == top
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert sum(m.startswith("Eval Demo intents") and ": mean score " in m for m in messages) == 2
    assert any(m.startswith("Best checkpoint so far by eval_mean_score") for m in messages)
