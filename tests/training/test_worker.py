"""How the worker stores the engine's protocol lines, ends a run and recovers from dead workers.

These drive `JobRun.handle_line` with lines in the engine's documented format (training/engine);
the tests in test_worker_engine.py run the real engine.
"""

import json
import os
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import chat_lines, make_claimed_job, upload
from training.job_run import JobRun
from training.launch import engine_command, engine_env, engine_spec
from training.launchers import Ended
from training.launchers.local import LocalRun
from training.models import Checkpoint, DataFile, FineTuningJob, JobEvent, MetricPoint
from training.worker import HOST, Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(admin_user):
    return make_claimed_job(admin_user, worker=f"{HOST}:1:test", training_file=upload(chat_lines(20)),
                            validation_file=upload(chat_lines(10)), n_epochs=2, batch_size=2, suffix="intents")


def protocol(job):
    """The lines a 2-epoch, 10-steps-per-epoch engine run prints (engine/callbacks.py)."""
    ckpt = job.job_dir / "checkpoints"
    lines = [{"type": "started", "total_steps": 20, "n_epochs": 2, "steps_per_epoch": 10}]
    for step in range(1, 21):
        lines.append({"type": "metrics", "step": step, "total_steps": 20, "epoch": step / 10,
                      "train_loss": round(3.0 - step * 0.1, 4), "train_mean_token_accuracy": round(0.1 + step * 0.01, 4),
                      "learning_rate": 1e-4, "tokens_per_second": 900.0})
        if step % 5 == 0:
            lines.append({"type": "eval", "scope": "sampled", "step": step, "epoch": step / 10,
                          "valid_loss": round(2.5 - step * 0.05, 4), "valid_mean_token_accuracy": 0.3})
        if step % 10 == 0:
            epoch = step // 10
            lines.append({"type": "eval", "scope": "full", "step": step, "epoch": epoch,
                          "full_valid_loss": round(2.4 - epoch * 0.1, 4), "full_valid_mean_token_accuracy": 0.4})
            lines.append({"type": "checkpoint", "epoch": epoch, "step": step,
                          "path": str(ckpt / f"epoch-{epoch}-step-{step}"), "bytes": 1234,
                          "metrics": {"step": step, "train_loss": 3.0 - step * 0.1}})
    lines.append({"type": "message", "level": "info", "text": "Saved the final adapter."})
    lines.append({"type": "done", "trained_tokens": 4321})
    return lines


def feed(run, lines):
    for line in lines:
        run.feed(json.dumps(line).encode() + b"\n")


def test_each_line_is_stored_as_points_events_and_checkpoints(running):
    run = JobRun(running, running.worker)
    feed(run, protocol(running))
    assert MetricPoint.objects.filter(job=running, scope="train").count() == 20
    assert MetricPoint.objects.filter(job=running, scope="sampled").count() == 4
    assert MetricPoint.objects.filter(job=running, scope="full").count() == 2
    assert Checkpoint.objects.filter(job=running).count() == 2
    running.refresh_from_db()
    assert (running.step, running.total_steps, running.tokens_per_second) == (20, 20, 900.0)


def test_a_metrics_event_reads_like_openais_and_gains_validation_figures(running):
    run = JobRun(running, running.worker)
    feed(run, protocol(running)[:16])  # up to the full evaluation of step 10
    step5 = JobEvent.objects.get(job=running, dedupe_key="metrics-5")
    assert step5.type == "metrics"
    assert step5.message == "Step 5/20: training loss=2.50, validation loss=2.25"
    assert step5.data == {"step": 5, "total_steps": 20, "train_loss": 2.5, "train_mean_token_accuracy": 0.15,
                          "valid_loss": 2.25, "valid_mean_token_accuracy": 0.3}
    step10 = JobEvent.objects.get(job=running, dedupe_key="metrics-10")
    assert step10.message == ("Step 10/20: training loss=2.00, validation loss=2.00, "
                              "full validation loss=2.30")
    assert step10.data["full_valid_mean_token_accuracy"] == 0.4


def test_dpo_reward_figures_are_stored_in_points_events_and_checkpoints(running, client, admin_user):
    running.spec = {**running.spec, "method": "dpo"}
    running.save(update_fields=["spec"])
    run = JobRun(running, running.worker)
    figures = {"train_reward_margin": 0.75, "train_reward_accuracy": 0.625}
    checkpoint_metrics = {"step": 10, "train_loss": 0.6, **figures, "full_valid_reward_margin": 0.5,
                          "full_valid_reward_accuracy": 0.8}
    feed(run, [{"type": "started", "total_steps": 20, "n_epochs": 2, "steps_per_epoch": 10},
               {"type": "metrics", "step": 10, "total_steps": 20, "epoch": 1.0, "train_loss": 0.6, **figures},
               {"type": "eval", "scope": "full", "step": 10, "epoch": 1, "full_valid_loss": 0.65,
                "full_valid_reward_margin": 0.5, "full_valid_reward_accuracy": 0.8},
               {"type": "checkpoint", "epoch": 1, "step": 10, "path": str(running.job_dir / "checkpoints" / "e1"),
                "bytes": 10, "metrics": checkpoint_metrics}])
    train = MetricPoint.objects.get(job=running, scope="train", step=10)
    full = MetricPoint.objects.get(job=running, scope="full", step=10)
    assert (train.reward_margin, train.reward_accuracy, full.reward_margin, full.reward_accuracy) == \
        (0.75, 0.625, 0.5, 0.8)
    event = JobEvent.objects.get(job=running, dedupe_key="metrics-10")
    assert event.data["train_reward_margin"] == 0.75 and event.data["full_valid_reward_accuracy"] == 0.8
    assert "training reward margin=0.75" in event.message

    client.force_login(admin_user)
    page = client.get(f"/jobs/{running.public_id}/").content.decode()
    assert 'id="chart-reward-margin"' in page and 'id="chart-accuracy"' not in page
    assert "Full valid reward acc." in page and "0.8000" in page
    from api.objects import checkpoint_object

    metrics = checkpoint_object(Checkpoint.objects.get(job=running)).get("metrics")
    assert metrics["full_valid_reward_margin"] == 0.5 and metrics["train_loss"] == 0.6


GRADER = {"type": "multi", "name": "intent", "calculate_output": "0.5 * exact + 0.5 * close",
          "graders": {"exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                                "reference": "{{item.label}}", "operation": "eq"},
                      "close": {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
                                "reference": "{{item.label}}", "evaluation_metric": "fuzzy_match"}}}


def as_reinforcement(job):
    """The job, its spec made a reinforcement one's (JobRun reads the method from the stored spec)."""
    job.spec = {**job.spec, "method": "reinforcement", "grader": GRADER, "best_checkpoint_metric": "auto"}
    job.save(update_fields=["spec"])
    return job


def rft_lines(job, epoch=1, reward=0.5):
    """What a reinforcement engine prints for one epoch of 2 steps (training/engine/__init__.py's contract):
    metrics per step, a sampled evaluation at step 2, then the full one and the checkpoint."""
    step = 2 * epoch
    return [
        {"type": "metrics", "step": step - 1, "total_steps": 4, "epoch": epoch - 0.5, "train_loss": 0.02,
         "learning_rate": 2e-5, "tokens_per_second": 50.0, "train_mean_reward": reward - 0.1,
         "train_reward_std": 0.3, "frac_reward_zero_std": 0.25, "completion_tokens_mean": 12.5,
         "completion_clipped_ratio": 0.0, "train_parse_error_rate": 0.0, "train_grader_error_rate": 0.125,
         "train_grader_scores": {"exact": reward - 0.2, "close": reward, "intent": reward - 0.1},
         "train_errors": {"python_grader_runtime_error": 0.125}},
        {"type": "metrics", "step": step, "total_steps": 4, "epoch": float(epoch), "train_loss": 0.01,
         "learning_rate": 1e-5, "tokens_per_second": 55.0, "train_mean_reward": reward, "train_reward_std": 0.2,
         "frac_reward_zero_std": 0.5, "completion_tokens_mean": 10.0, "completion_clipped_ratio": 0.0,
         "train_parse_error_rate": 0.0625, "train_grader_error_rate": 0.0,
         "train_grader_scores": {"exact": reward - 0.1, "close": reward + 0.1, "intent": reward},
         "train_errors": {}},
        {"type": "eval", "scope": "sampled", "step": step, "epoch": float(epoch), "valid_reward_mean": reward + 0.05,
         "valid_grader_scores": {"exact": reward, "close": reward + 0.1, "intent": reward + 0.05},
         "valid_parse_error_rate": 0.25, "valid_grader_error_rate": 0.0, "valid_completion_tokens_mean": 9.0},
        {"type": "eval", "scope": "full", "step": step, "epoch": epoch, "full_valid_mean_reward": reward + 0.1,
         "full_valid_grader_scores": {"exact": reward + 0.05, "close": reward + 0.15, "intent": reward + 0.1},
         "full_valid_mean_parse_error": 0.1, "full_valid_grader_error_rate": 0.05,
         "full_valid_completion_tokens_mean": 8.5},
        {"type": "checkpoint", "epoch": epoch, "step": step, "bytes": 99,
         "path": str(job.job_dir / "checkpoints" / f"epoch-{epoch}-step-{step}"),
         "metrics": {"step": step, "train_loss": 0.01, "train_mean_reward": reward, "valid_reward_mean": reward + 0.05,
                     "full_valid_mean_reward": reward + 0.1, "full_valid_mean_parse_error": 0.1,
                     "frac_reward_zero_std": 0.5, "completion_tokens_mean": 10.0,
                     "full_valid_grader_scores": {"exact": reward + 0.05, "close": reward + 0.15,
                                                  "intent": reward + 0.1}}},
    ]


def test_reinforcement_figures_are_stored_by_scope(running):
    run = JobRun(as_reinforcement(running), running.worker)
    feed(run, [{"type": "started", "total_steps": 4, "n_epochs": 2, "steps_per_epoch": 2}, *rft_lines(running)])
    points = {(p.scope, p.step): p for p in MetricPoint.objects.filter(job=running)}
    assert set(points) == {("train", 1), ("train", 2), ("sampled", 2), ("full", 2)}
    train, sampled, full = points["train", 2], points["sampled", 2], points["full", 2]
    assert (train.loss, train.accuracy, train.reward, train.reward_std, train.frac_reward_zero_std,
            train.completion_tokens_mean, train.parse_error_rate, train.grader_error_rate) == \
        (0.01, None, 0.5, 0.2, 0.5, 10.0, 0.0625, 0.0)
    assert train.grader_scores == {"exact": 0.4, "close": 0.6, "intent": 0.5}
    assert points["train", 1].grader_error_rate == 0.125 and points["train", 1].reward == 0.4
    assert (sampled.loss, sampled.reward, sampled.parse_error_rate, sampled.grader_error_rate,
            sampled.completion_tokens_mean, sampled.reward_std, sampled.frac_reward_zero_std) == \
        (None, 0.55, 0.25, 0.0, 9.0, None, None)
    assert sampled.grader_scores == {"exact": 0.5, "close": 0.6, "intent": 0.55}
    # The full evaluation names its parse rate full_valid_mean_parse_error.
    assert (full.reward, full.parse_error_rate, full.grader_error_rate, full.completion_tokens_mean) == \
        (0.6, 0.1, 0.05, 8.5)
    assert full.grader_scores == {"exact": 0.55, "close": 0.65, "intent": 0.6}
    event = JobEvent.objects.get(job=running, dedupe_key="metrics-2")
    assert event.message == ("Step 2/4: training loss=0.01, training mean reward=0.50, validation mean reward=0.55, "
                             "full validation mean reward=0.60")
    assert event.data["valid_grader_scores"]["close"] == 0.6 and event.data["full_valid_mean_parse_error"] == 0.1
    assert JobEvent.objects.get(job=running, dedupe_key="metrics-1").data["train_errors"] == {
        "python_grader_runtime_error": 0.125}
    checkpoint = Checkpoint.objects.get(job=running)
    assert checkpoint.metrics["full_valid_mean_reward"] == 0.6 and checkpoint.metrics["valid_reward_mean"] == 0.55


def test_replayed_reinforcement_lines_replace_their_figures_and_add_no_rows(running):
    run = JobRun(as_reinforcement(running), running.worker)
    feed(run, rft_lines(running))
    counts = (MetricPoint.objects.count(), JobEvent.objects.count(), Checkpoint.objects.count())
    # A resumed engine prints the steps after its checkpoint again; here with other figures, one grader fewer.
    replay = rft_lines(running, reward=0.25)
    del replay[1]["train_grader_scores"]["close"]
    feed(run, replay)
    assert (MetricPoint.objects.count(), JobEvent.objects.count(), Checkpoint.objects.count()) == counts
    train = MetricPoint.objects.get(job=running, scope="train", step=2)
    assert train.reward == 0.25 and train.grader_scores == {"exact": 0.15, "intent": 0.25}
    assert MetricPoint.objects.get(job=running, scope="full", step=2).reward == 0.35


def test_a_reinforcement_jobs_results_csv_carries_its_rewards(running):
    run = JobRun(as_reinforcement(running), running.worker)
    feed(run, [*rft_lines(running), *rft_lines(running, epoch=2, reward=0.75)[:2]])
    rows = running.results_csv().splitlines()
    assert rows[0] == ("step,train_loss,train_mean_reward,train_reward_std,frac_reward_zero_std,completion_tokens_mean,"
                       "train_parse_error_rate,train_grader_error_rate,valid_reward_mean,valid_parse_error_rate,"
                       "valid_grader_error_rate")
    assert rows[1] == "1,0.02,0.4,0.3,0.25,12.5,0,0.125,,,"
    assert rows[2] == "2,0.01,0.5,0.2,0.5,10,0.0625,0,0.55,0.25,0"  # the sampled figures win over the full ones
    assert rows[4] == "4,0.01,0.75,0.2,0.5,10,0.0625,0,,,"
    assert len(rows) == 5


def test_a_reinforcement_jobs_best_checkpoint_has_the_highest_full_valid_mean_reward(running):
    run = JobRun(as_reinforcement(running), running.worker)
    feed(run, [*rft_lines(running, epoch=1, reward=0.5), *rft_lines(running, epoch=2, reward=0.25)])
    assert running.best_metric == ("full_valid_mean_reward", True)
    assert running.best_checkpoint().epoch == 1
    running.spec = {**running.spec, "best_checkpoint_metric": "full_valid_mean_reward"}
    assert running.best_checkpoint().epoch == 1


def test_replayed_lines_make_no_duplicates(running):
    run = JobRun(running, running.worker)
    lines = protocol(running)
    feed(run, lines[:30])
    counts = (MetricPoint.objects.count(), JobEvent.objects.count(), Checkpoint.objects.count())
    feed(run, lines[:30])  # a resumed engine prints the steps after its checkpoint again
    assert (MetricPoint.objects.count(), JobEvent.objects.count(), Checkpoint.objects.count()) == counts


def test_a_replayed_step_with_new_figures_replaces_the_old_ones(running):
    run = JobRun(running, running.worker)
    feed(run, [{"type": "metrics", "step": 12, "total_steps": 20, "epoch": 1.2, "train_loss": 1.5}])
    feed(run, [{"type": "metrics", "step": 12, "total_steps": 20, "epoch": 1.2, "train_loss": 1.25}])
    assert list(MetricPoint.objects.filter(job=running).values_list("loss", flat=True)) == [1.25]
    assert JobEvent.objects.get(dedupe_key="metrics-12").message == "Step 12/20: training loss=1.25"


def test_a_successful_run_sets_the_model_names_tokens_and_results_file(running):
    run = JobRun(running, running.worker)
    feed(run, protocol(running))
    run.finish(Ended(0))
    running.refresh_from_db()
    assert running.status == "succeeded"
    assert running.fine_tuned_model == f"ft:attune-tiny:intents:{running.model_tag}"
    assert running.trained_tokens == 4321 and running.finished_at is not None
    first, final = Checkpoint.objects.filter(job=running).order_by("epoch")
    assert final.is_final and final.model_name == running.fine_tuned_model
    assert not first.is_final
    assert first.model_name == f"ft:attune-tiny:intents:{first.model_tag}:ckpt-step-10"
    assert first.path == f"jobs/{running.public_id}/checkpoints/epoch-1-step-10"
    messages = list(running.events.filter(type="message").order_by("id").values_list("message", flat=True))
    assert messages[3:] == [
        "Fine-tuning job started",
        f"Checkpoint created at step 10 with Snapshot ID: {first.model_name}",
        "Saved the final adapter.",
        f"New fine-tuned model created: {running.fine_tuned_model}",
        "The job has successfully completed",
    ]
    [results] = DataFile.objects.filter(public_id__in=running.result_files)
    assert results.purpose == "fine-tune-results" and results.filename == "step_metrics.csv"
    rows = results.full_path.read_text().splitlines()
    assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert rows[1] == "1,2.9,0.11,,"  # no validation on step 1: blank cells
    assert rows[5] == "5,2.5,0.15,2.25,0.3"
    assert len(rows) == 21 and results.bytes == results.full_path.stat().st_size


def test_the_results_csv_falls_back_to_the_full_validation_figures(running):
    run = JobRun(running, running.worker)
    feed(run, [{"type": "metrics", "step": 10, "total_steps": 20, "epoch": 1, "train_loss": 1.0},
               {"type": "eval", "scope": "full", "step": 10, "epoch": 1, "full_valid_loss": 0.5,
                "full_valid_mean_token_accuracy": 0.75}])
    assert running.results_csv().splitlines()[1] == "10,1,,0.5,0.75"


def test_an_error_line_fails_the_job_with_its_code(running):
    run = JobRun(running, running.worker)
    feed(run, [{"type": "error", "code": "out_of_memory", "message": "Out of memory. Lower batch_size."}])
    run.finish(Ended(1))
    running.refresh_from_db()
    assert running.status == "failed"
    assert running.error == {"code": "out_of_memory", "message": "Out of memory. Lower batch_size.",
                             "param": None}


def test_an_engine_that_dies_without_a_word_fails_the_job_with_its_log(running):
    running.job_dir.mkdir(parents=True, exist_ok=True)
    (running.job_dir / "engine.log").write_text("Traceback …\nSegmentation fault\n")
    JobRun(running, running.worker).finish(Ended(-11))
    running.refresh_from_db()
    assert running.error["code"] == "engine_crashed"
    assert "status -11" in running.error["message"] and "Segmentation fault" in running.error["message"]


def test_a_paused_line_makes_the_job_paused(running):
    running.pause()
    run = JobRun(running, running.worker)
    feed(run, [{"type": "paused", "step": 7}])
    run.finish(Ended(0))
    running.refresh_from_db()
    assert (running.status, running.control, running.worker) == ("paused", "", "")
    assert running.events.order_by("-id").first().message == \
        "The job was paused at step 7; resume continues from there."


def test_a_cancelled_job_is_not_turned_into_a_success_by_its_last_lines(running):
    run = JobRun(running, running.worker)
    feed(run, protocol(running))
    running.cancel()
    run.finish(Ended(0))
    running.refresh_from_db()
    assert running.status == "cancelled" and running.fine_tuned_model is None
    assert Checkpoint.objects.filter(job=running).count() == 2  # kept


def test_a_job_whose_worker_stopped_heart_beating_is_queued_again(running):
    FineTuningJob.objects.filter(pk=running.pk).update(worker="elsewhere:99:w",
                                                       heartbeat_at=timezone.now() - timedelta(minutes=5))
    Worker(name="me").recover_stale()
    running.refresh_from_db()
    assert (running.status, running.worker) == ("queued", "")
    event = running.events.order_by("-id").first()
    assert event.level == "warn"
    assert "elsewhere:99:w stopped responding" in event.message
    assert "starts again from the beginning" in event.message
    assert FineTuningJob.claim_next("me").attempts == 2


def test_a_job_of_a_dead_worker_on_this_host_is_recovered_at_once(running):
    FineTuningJob.objects.filter(pk=running.pk).update(worker=f"{HOST}:999999:w", heartbeat_at=timezone.now())
    Worker(name="me").recover_stale()
    running.refresh_from_db()
    assert running.status == "queued"


def test_a_job_with_a_fresh_heartbeat_is_left_alone(running):
    FineTuningJob.objects.filter(pk=running.pk).update(worker="elsewhere:99:w", heartbeat_at=timezone.now())
    Worker(name="me").recover_stale()
    running.refresh_from_db()
    assert running.status == "running"


def test_several_gpus_launch_the_engine_under_torchrun(tmp_path):
    command = engine_command(tmp_path / "spec.json", n_gpus=4, resume=True)
    assert command[1:5] == ["-m", "training.engine.torchrun", "--standalone", "--nproc_per_node=4"]
    assert command[-3:] == ["training.engine", str(tmp_path / "spec.json"), "--resume"]
    assert engine_command("s.json")[1:] == ["-m", "training.engine", "s.json"]


WORKER_ENV = {
    "PATH": "/usr/bin", "HOME": "/home/attune", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "SECRET_KEY": "studio-secret", "DATABASE_URL": "postgres://attune:pw@db/attune", "REDIS_URL": "redis://r:6379/0",
    "AWS_SECRET_ACCESS_KEY": "aws-secret", "GITHUB_TOKEN": "gh-token", "ATTUNE_HOME": "/srv/attune",
    "HF_TOKEN": "hf-token", "HF_HOME": "/cache/hf", "TRANSFORMERS_OFFLINE": "1", "TORCH_HOME": "/cache/torch",
    "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "0,1", "NCCL_DEBUG": "INFO",
    "WANDB_API_KEY": "wandb-key", "WANDB_MODE": "offline", "MLFLOW_TRACKING_TOKEN": "mlflow-token",
}


def test_the_engine_gets_only_the_allowed_part_of_the_workers_environment(running):
    spec = engine_spec(running)
    env = engine_env(spec, WORKER_ENV)
    assert env == {
        "PATH": "/usr/bin", "HOME": "/home/attune", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HF_TOKEN": "hf-token",
        "HF_HOME": "/cache/hf", "TRANSFORMERS_OFFLINE": "1", "TORCH_HOME": "/cache/torch", "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "0,1", "NCCL_DEBUG": "INFO", "PYTHONUNBUFFERED": "1"}


def test_a_trackers_variables_reach_only_a_job_that_uses_it(running):
    spec = engine_spec(running)
    wandb = engine_env({**spec, "integrations": {"wandb": {"project": "p"}}}, WORKER_ENV)
    assert wandb["WANDB_API_KEY"] == "wandb-key" and wandb["WANDB_RUN_ID"] == running.public_id
    assert "MLFLOW_TRACKING_TOKEN" not in wandb
    mlflow = engine_env({**spec, "integrations": {"mlflow": {"tracking_uri": "http://mlflow"}}}, WORKER_ENV)
    assert mlflow["MLFLOW_TRACKING_TOKEN"] == "mlflow-token"
    assert not {"WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID"} & set(mlflow)
    for env in (wandb, mlflow):
        assert not {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"} & set(env)


def test_the_engine_gets_paths_inside_the_job_folder(running):
    spec = engine_spec(running)
    assert spec["output_dir"] == str(running.job_dir)
    assert spec["training_file"] == str(running.training_file.full_path)
    assert spec["job_id"] == running.public_id
    assert spec["n_epochs"] == 2 and spec["learning_rate_multiplier"] == 1.0  # the resolved spec


def publish_checkpoint_folder(job, epoch, step):
    """An epoch checkpoint as the engine publishes it (engine/checkpoints.py: finalize)."""
    from training.engine import checkpoints

    written = checkpoints.trainer_dir(job.job_dir) / f"checkpoint-{step}"
    written.mkdir(parents=True)
    (written / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (written / "trainer_state.json").write_text("{}")
    state = {"step": step, "epoch": epoch, "metrics": {"step": step, "train_loss": 2.0}, "kind": "epoch"}
    return checkpoints.finalize(written, checkpoints.checkpoints_dir(job.job_dir) / checkpoints.epoch_name(
        epoch, step), {}, state)


def checkpoint_messages(job):
    return list(job.events.filter(message__startswith="Checkpoint created").values_list("message", flat=True))


def test_a_checkpoint_row_and_its_event_are_stored_together_or_not_at_all(running):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the failing insert is made with an SQLite trigger")
    run = JobRun(running, running.worker)
    line = {"type": "checkpoint", "epoch": 1, "step": 10, "bytes": 1234, "metrics": {"step": 10},
            "path": str(running.job_dir / "checkpoints" / "epoch-1-step-10")}
    with connection.cursor() as cursor:
        cursor.execute("CREATE TRIGGER no_checkpoint_event BEFORE INSERT ON training_jobevent "
                       "WHEN NEW.dedupe_key = 'checkpoint-1' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    feed(run, [line])  # the event's insert fails: the row goes with it
    assert (Checkpoint.objects.filter(job=running).count(), checkpoint_messages(running)) == (0, [])
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER no_checkpoint_event")
    feed(run, [line])
    [checkpoint] = Checkpoint.objects.filter(job=running)
    assert checkpoint_messages(running) == [
        f"Checkpoint created at step 10 with Snapshot ID: {checkpoint.model_name}"]


def test_recovery_adds_the_missing_event_of_a_checkpoint_row_once(running):
    FineTuningJob.objects.filter(pk=running.pk).update(worker="elsewhere:99:w",
                                                       heartbeat_at=timezone.now() - timedelta(minutes=5))
    checkpoint = Checkpoint.objects.create(job=running, epoch=1, step=10, path="jobs/x/epoch-1-step-10")
    final = Checkpoint.objects.create(job=running, epoch=2, step=20, path="jobs/x/epoch-2-step-20", is_final=True)
    Worker(name="me").recover_stale()
    running.refresh_from_db()
    assert running.status == "queued"
    assert checkpoint_messages(running) == [
        f"Checkpoint created at step 10 with Snapshot ID: {checkpoint.model_name}"]
    JobRun(running, "me").recover_checkpoints()  # the next run's start looks again
    assert len(checkpoint_messages(running)) == 1
    assert not running.events.filter(dedupe_key=f"checkpoint-{final.epoch}").exists()  # the final is the model


def test_recovery_stores_a_checkpoint_published_on_disk_whose_line_was_lost(running):
    folder = publish_checkpoint_folder(running, epoch=1, step=10)
    FineTuningJob.objects.filter(pk=running.pk).update(worker=f"{HOST}:999999:w", heartbeat_at=timezone.now())
    Worker(name="me").recover_stale()
    [checkpoint] = Checkpoint.objects.filter(job=running)
    assert (checkpoint.epoch, checkpoint.step, checkpoint.is_final) == (1, 10, False)
    assert checkpoint.path == f"jobs/{running.public_id}/checkpoints/{folder.name}"
    assert checkpoint.metrics == {"step": 10, "train_loss": 2.0} and checkpoint.bytes > 0
    messages = list(running.events.order_by("id").values_list("message", flat=True))
    assert messages[-2] == f"Checkpoint created at step 10 with Snapshot ID: {checkpoint.model_name}"
    assert "resumes from its last complete checkpoint (epoch-1-step-10, step 10)" in messages[-1]
    JobRun(running, "me").recover_checkpoints()
    assert Checkpoint.objects.filter(job=running).count() == 1 and len(checkpoint_messages(running)) == 1


def test_each_start_of_a_worker_has_its_own_name(running):
    first, second = Worker(name="w"), Worker(name="w")
    assert first.name.startswith(f"{HOST}:{os.getpid()}:") and first.name.endswith(":w")
    assert first.name != second.name


@pytest.mark.parametrize("earlier", ["{host}:{pid}:0ldb00t5:w", "{host}:{pid}:w"], ids=["boot-token", "old-style"])
def test_a_job_of_an_earlier_start_with_the_same_pid_is_queued_again_at_start(running, earlier):
    # A restarted container runs `serve` as PID 1 again, under the same hostname.
    old_name = earlier.format(host=HOST, pid=os.getpid())
    FineTuningJob.objects.filter(pk=running.pk).update(worker=old_name, heartbeat_at=timezone.now())
    Worker().recover_stale()
    running.refresh_from_db()
    assert (running.status, running.worker) == ("queued", "")
    assert f"The worker {old_name} stopped responding" in running.events.order_by("-id").first().message


def test_a_job_of_this_worker_is_left_alone_while_its_thread_runs_and_queued_again_after(running):
    worker = Worker()
    FineTuningJob.objects.filter(pk=running.pk).update(worker=worker.name, heartbeat_at=timezone.now())
    release = threading.Event()
    worker.runs[running.pk] = threading.Thread(target=release.wait)
    worker.runs[running.pk].start()
    worker.recover_stale()
    assert FineTuningJob.objects.get(pk=running.pk).status == "running"
    release.set()
    worker.runs[running.pk].join()
    worker.recover_stale()  # its thread ended without ending the job
    assert FineTuningJob.objects.get(pk=running.pk).status == "queued"


def test_recovery_spares_an_engine_of_this_worker_that_reuses_the_recorded_pid(running):
    import subprocess
    import sys

    # An engine of this start whose PID the engine of an earlier start had (PIDs restart in a container).
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "training.engine"],
                              start_new_session=True)
    try:
        worker = Worker()
        other = JobRun(running, worker.name, follow=LocalRun(engine))
        worker.job_runs[-1] = other
        FineTuningJob.objects.filter(pk=running.pk).update(worker=f"{HOST}:{os.getpid()}:0ldb00t5:w",
                                                           engine_pid=engine.pid, heartbeat_at=timezone.now())
        worker.recover_stale()
        assert FineTuningJob.objects.get(pk=running.pk).status == "queued"
        assert engine.poll() is None
    finally:
        engine.kill()
        engine.wait()


def test_a_full_disk_pauses_the_job_with_the_engines_words_even_when_the_worker_stops(running):
    stopping = threading.Event()
    stopping.set()  # a queued job would only fill the disk again
    run = JobRun(running, running.worker, stopping)
    message = "The disk holding /srv/jobs is full: … then resume it: it continues from epoch-1-step-10 (step 10)."
    feed(run, [{"type": "paused", "step": 12, "reason": "disk_full", "message": message}])
    run.finish(Ended(0))
    running.refresh_from_db()
    assert (running.status, running.worker, running.error) == ("paused", "", {})
    last = running.events.order_by("-id").first()
    assert (last.level, last.message) == ("error", message)
