"""A job that names an eval has each epoch checkpoint scored off the training path, the scores stored in the
checkpoint's metrics, and the best checkpoint marked by the metric the job chooses."""

import pytest

from evals.models import Eval, EvalRun
from evals.requests import eval_fields
from tests import factories
from training.models import Checkpoint

# The score of an answer: how many of its characters are the letter "e", so the three checkpoints' scores differ.
E_COUNT = {"type": "python", "name": "letters", "pass_threshold": 2,
           "source": "def grade(sample, item):\n    return float(sample['output_text'].count('e'))\n"}
PROMPTS = [{"item": {"messages": [{"role": "user", "content": f"where is parcel {i}?"}], "expected": "tracking"}}
           for i in range(4)]


def make_eval(criteria=None):
    fields = eval_fields({
        "name": "letters", "data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
        "testing_criteria": criteria or [E_COUNT],
        "attune": {"data_source": {"source": {"type": "file_content", "content": PROMPTS},
                                   "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                                   "sampling_params": {"max_completion_tokens": 12, "temperature": 0}}}})
    return Eval.objects.create(**fields)


def test_each_epoch_checkpoint_is_scored_and_the_best_is_marked(snapshots, run_queue):
    from evals.epochs import queue_epoch_run

    evaluation = make_eval()
    job = snapshots.job
    job.spec = {"eval": evaluation.public_id}
    job.save(update_fields=["spec"])
    runs = [queue_epoch_run(checkpoint) for checkpoint in snapshots.checkpoints]
    assert {run.batch_key for run in runs} == {runs[0].batch_key}
    assert queue_epoch_run(snapshots.checkpoints[0]).pk == runs[0].pk  # once per checkpoint
    assert run_queue() == 1  # the three checkpoints are generated together

    expected = {}
    for checkpoint, run in zip(snapshots.checkpoints, runs, strict=True):
        run.refresh_from_db()
        assert run.status == EvalRun.COMPLETED and run.result_counts["total"] == 4
        scores = [float(item.sample["output_text"].count("e")) for item in run.items.all()]
        checkpoint.refresh_from_db()
        expected[checkpoint.pk] = sum(scores) / len(scores)
        assert checkpoint.metrics["eval_mean_score"] == pytest.approx(expected[checkpoint.pk])
        assert checkpoint.metrics["eval_scores"] == {"letters": pytest.approx(expected[checkpoint.pk])}
        assert checkpoint.metrics["eval_run_id"] == run.public_id
        passed = sum(score >= 2 for score in scores)
        assert checkpoint.metrics["eval_pass_rate"] == pytest.approx(passed / 4)
    assert job.best_metric == ("eval_mean_score", True)
    best = job.best_checkpoint()
    top = max(expected.values())
    assert best.pk == min((c for c in snapshots.checkpoints if expected[c.pk] == top), key=lambda c: c.step).pk
    assert job.events.filter(dedupe_key=f"best-{best.epoch}").exists()
    scored = job.events.filter(dedupe_key__startswith="eval-scored-")
    assert scored.count() == 3 and all(e.type == "metrics" and "eval_mean_score" in e.data for e in scored)


def test_a_stored_checkpoint_queues_its_eval_run(admin_user, django_capture_on_commit_callbacks):
    from training.job_run import JobRun

    evaluation = make_eval()
    job = factories.make_claimed_job(admin_user, eval=evaluation.public_id)
    run = JobRun(job, job.worker)
    with django_capture_on_commit_callbacks(execute=True):
        run.handle_line({"type": "checkpoint", "epoch": 1, "step": 10, "bytes": 1, "metrics": {"step": 10},
                         "path": str(job.job_dir / "checkpoints" / "epoch-1")})
    checkpoint = Checkpoint.objects.get(job=job, epoch=1)
    queued = EvalRun.objects.get(checkpoint=checkpoint)
    assert queued.status == EvalRun.QUEUED and queued.job == job and queued.model == checkpoint.model_name
    assert queued.data_source["model"] == checkpoint.model_name
    assert job.events.filter(dedupe_key="eval-queued-1").exists()
    with django_capture_on_commit_callbacks(execute=True):  # a replayed line queues nothing more
        run.handle_line({"type": "checkpoint", "epoch": 1, "step": 10, "bytes": 1, "metrics": {"step": 10},
                         "path": str(job.job_dir / "checkpoints" / "epoch-1")})
    assert EvalRun.objects.filter(checkpoint=checkpoint).count() == 1


def _checkpoints(job, values):
    return [Checkpoint.objects.create(job=job, epoch=n, step=10 * n, path=f"x/{n}", metrics=metrics)
            for n, metrics in enumerate(values, 1)]


@pytest.mark.parametrize("metric, best_epoch", [
    ("full_valid_loss", 2),          # the lowest loss
    ("eval_mean_score", 3),          # the highest score
    ("eval_pass_rate", 1),           # a tie at 0.9 goes to the earlier
    ("eval:tone", 1),
])
def test_the_best_checkpoint_follows_the_jobs_metric(admin_user, metric, best_epoch):
    evaluation = make_eval()
    job = factories.make_job(admin_user, eval=evaluation.public_id, best_checkpoint_metric=metric)
    _checkpoints(job, [
        {"full_valid_loss": 0.9, "eval_mean_score": 0.2, "eval_pass_rate": 0.9, "eval_scores": {"tone": 0.8}},
        {"full_valid_loss": 0.4, "eval_mean_score": 0.5, "eval_pass_rate": 0.9, "eval_scores": {"tone": 0.1}},
        {"full_valid_loss": 0.6, "eval_mean_score": 0.7, "eval_pass_rate": 0.3, "eval_scores": {"tone": 0.5}},
    ])
    assert job.best_checkpoint().epoch == best_epoch


def test_without_an_eval_the_best_checkpoint_is_the_lowest_full_valid_loss(admin_user):
    job = factories.make_job(admin_user)
    assert job.best_metric == ("full_valid_loss", False)
    assert job.best_checkpoint() is None
    _checkpoints(job, [{"full_valid_loss": 0.5}, {}, {"full_valid_loss": 0.3}])
    assert job.best_checkpoint().epoch == 3


def test_a_job_naming_an_unknown_eval_is_refused_naming_the_field(admin_user):
    from training.models import FineTuningJob, JobError

    with pytest.raises(JobError) as raised:
        factories.make_job(admin_user, eval="eval_nope")
    assert raised.value.param == "eval" and "eval_nope" in raised.value.message
    without_prompts = Eval.objects.create(name="bare", data_source_config={"type": "custom", "item_schema": {}},
                                          testing_criteria=[E_COUNT])
    with pytest.raises(JobError) as raised:
        factories.make_job(admin_user, eval=without_prompts.public_id)
    assert raised.value.param == "eval" and raised.value.code == "eval_without_prompts"
    assert not FineTuningJob.objects.exists()


def test_eval_generation_waits_for_a_job_training_on_the_same_cores(admin_user, settings, run_queue, monkeypatch):
    import threading

    from evals.runner import EvalWorker
    from training import worker as training_worker

    evaluation = make_eval([{"type": "string_check", "name": "s", "input": "{{item.expected}}",
                             "reference": "tracking", "operation": "eq"}])
    run = EvalRun.objects.create(eval=evaluation, data_source={"type": "jsonl", "source": {
        "type": "file_content", "content": [{"item": {"expected": "tracking"}}]}})
    engine = threading.Event()
    job_thread = threading.Thread(target=engine.wait, daemon=True)  # a job's run, as the worker holds it
    job_thread.start()
    busy = training_worker.Worker(slots=1, name="tests:train")
    busy.runs = {1: job_thread}
    monkeypatch.setitem(training_worker._inprocess, "worker", busy)
    settings.EVAL_WHILE_TRAINING = "auto"  # this machine has no GPU: the engine and the evals share cores
    try:
        assert EvalWorker(name="tests:evals").poll_once() is False
        run.refresh_from_db()
        assert run.status == EvalRun.QUEUED
        settings.EVAL_WHILE_TRAINING = "run"
        assert run_queue() == 1
        run.refresh_from_db()
        assert run.status == EvalRun.COMPLETED
    finally:
        engine.set()
        job_thread.join()
    settings.EVAL_WHILE_TRAINING = "auto"  # the job has ended: the next run goes at once
    later = EvalRun.objects.create(eval=evaluation, data_source=run.data_source)
    assert not training_worker.training_here() and run_queue() == 1
    later.refresh_from_db()
    assert later.status == EvalRun.COMPLETED


def test_a_mean_score_interval_stays_inside_the_graders_range():
    from types import SimpleNamespace

    from evals.models import criteria_summary, mean_interval, score_range, wilson_interval

    items = [SimpleNamespace(results=[{"name": "s", "score": score, "passed": score == 1}]) for score in (1, 0, 0)]
    [row] = criteria_summary(["s"], items, {"s": score_range({"type": "string_check"})})
    mean, low, high = mean_interval([1, 0, 0])
    assert low < 0 and (row["mean_low"], row["mean"], row["mean_high"]) == (0.0, pytest.approx(1 / 3), high)
    assert (row["pass_rate"], row["pass_low"], row["pass_high"]) == wilson_interval(1, 3)
    assert wilson_interval(1, 3)[1] == pytest.approx(0.0615, abs=1e-4)  # Wilson's interval for 1 of 3
    assert score_range({"type": "score_model", "range": [1, 7]}) == (1.0, 7.0)
    assert score_range({"type": "python"}) is None
