"""The job websocket: who may connect, the history first, then live rows, nothing doubled."""

import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from dashboard.consumers import MAX_TRACE_POINTS, lttb
from dashboard.routing import websocket_urlpatterns
from tests.factories import make_claimed_job, make_user
from training.job_run import JobRun
from training.models import MetricPoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(admin_user):
    return make_claimed_job(admin_user, n_epochs=2)


def communicator(job_id, user):
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/jobs/{job_id}/")
    comm.scope["user"] = user
    return comm


def connect_and_read(job_id, user, then=None, n_live=0):
    """Connect, read the history, run `then` (sync, e.g. the worker storing lines), read n_live messages."""
    async def scenario():
        comm = communicator(job_id, user)
        connected, code = await comm.connect(timeout=10)
        if not connected:
            return connected, code, None, []
        history = await comm.receive_json_from(timeout=10)
        if then is not None:
            await sync_to_async(then)()
        live = [await comm.receive_json_from(timeout=10) for _ in range(n_live)]
        await comm.disconnect()
        return connected, code, history, live

    return async_to_sync(scenario)()


def metric_line(step, loss):
    return {"type": "metrics", "step": step, "total_steps": 20, "epoch": step / 10, "train_loss": loss,
            "train_mean_token_accuracy": 0.5, "learning_rate": 1e-4, "tokens_per_second": 100.0}


def test_an_anonymous_visitor_is_refused(job):
    connected, code, _, _ = connect_and_read(job.public_id, AnonymousUser())
    assert (connected, code) == (False, 4401)


def test_an_evaluator_is_refused(job):
    evaluator = make_user("evaluator")
    connected, code, _, _ = connect_and_read(job.public_id, evaluator)
    assert (connected, code) == (False, 4403)


def test_an_unknown_job_is_refused(admin_user):
    connected, code, _, _ = connect_and_read("ftjob-nope", admin_user)
    assert (connected, code) == (False, 4404)


def test_an_admin_gets_the_stored_history_first(job, admin_user):
    run = JobRun(job, job.worker)
    for step in range(1, 6):
        run.handle_line(metric_line(step, 3.0 - step / 10))
    connected, _, history, _ = connect_and_read(job.public_id, admin_user)
    assert connected and history["kind"] == "history"
    data = history["data"]
    assert data["traces"]["train_loss"] == {"x": [1, 2, 3, 4, 5], "y": [2.9, 2.8, 2.7, 2.6, 2.5]}
    assert data["traces"]["learning_rate"]["x"] == [1, 2, 3, 4, 5]
    assert data["traces"]["valid_loss"] == {"x": [], "y": []}
    assert data["points"] == {"train": 5, "sampled": 0, "full": 0}
    assert data["last_step"]["train"] == 5
    assert data["status"]["status"] == "running" and data["status"]["step"] == 5
    messages = [e["message"] for e in data["events"]]
    assert messages[0] == f"Created fine-tuning job: {job.public_id}"
    assert "Step 5/20: training loss=2.50" in messages


def test_new_rows_arrive_live_after_the_history(job, admin_user):
    run = JobRun(job, job.worker)
    run.handle_line(metric_line(1, 2.0))

    def worker_stores():
        run.handle_line(metric_line(2, 1.5))

    _, _, history, live = connect_and_read(job.public_id, admin_user, then=worker_stores, n_live=2)
    assert history["data"]["traces"]["train_loss"]["x"] == [1]
    assert live[0] == {"kind": "metric", "data": {"scope": "train", "step": 2, "epoch": 0.2, "loss": 1.5,
                                                  "accuracy": 0.5, "learning_rate": 1e-4,
                                                  "tokens_per_second": 100.0, "reward_margin": None,
                                                  "reward_accuracy": None, "reward": None, "reward_std": None,
                                                  "frac_reward_zero_std": None, "completion_tokens_mean": None,
                                                  "parse_error_rate": None, "grader_error_rate": None,
                                                  "grader_scores": {}}}
    assert live[1]["kind"] == "event" and live[1]["data"]["message"] == "Step 2/20: training loss=1.50"


def test_a_reinforcement_jobs_history_holds_its_reward_traces_one_per_grader(job, admin_user):
    from tests.training.test_worker import as_reinforcement, rft_lines

    run = JobRun(as_reinforcement(job), job.worker)
    for line in rft_lines(job):
        run.handle_line(line)
    third = rft_lines(job, epoch=2, reward=0.75)[0]

    _, _, history, live = connect_and_read(job.public_id, admin_user, then=lambda: run.handle_line(third), n_live=2)
    traces = history["data"]["traces"]
    assert traces["train_mean_reward"] == {"x": [1, 2], "y": [0.4, 0.5]}
    assert traces["valid_reward_mean"] == {"x": [2], "y": [0.55]}
    assert traces["full_valid_mean_reward"] == {"x": [2], "y": [0.6]}
    assert traces["train_grader:exact"] == {"x": [1, 2], "y": [0.3, 0.4]}
    assert traces["valid_grader:close"] == {"x": [2], "y": [0.6]}
    assert traces["full_valid_grader:intent"] == {"x": [2], "y": [0.6]}
    assert traces["train_parse_error_rate"]["y"] == [0.0, 0.0625] and traces["train_grader_error_rate"]["y"] == [0.125, 0.0]
    assert traces["valid_parse_error_rate"]["y"] == [0.25] and traces["full_valid_mean_parse_error"]["y"] == [0.1]
    assert traces["frac_reward_zero_std"]["y"] == [0.25, 0.5] and traces["completion_tokens_mean"]["y"] == [12.5, 10.0]
    assert traces["full_valid_completion_tokens_mean"]["y"] == [8.5] and traces["train_reward_std"]["y"] == [0.3, 0.2]
    assert traces["train_accuracy"] == {"x": [], "y": []} and traces["valid_loss"] == {"x": [], "y": []}
    assert history["data"]["checkpoints"][0]["metrics"]["full_valid_mean_reward"] == 0.6
    # Then the next step, live, with its graders' scores.
    metric = live[0]["data"]
    assert live[0]["kind"] == "metric" and metric["step"] == 3 and metric["reward"] == 0.65
    assert metric["grader_scores"] == {"exact": 0.55, "close": 0.75, "intent": 0.65}


def test_the_grader_traces_are_named_after_the_trace_names_grader_part():
    from dashboard.consumers import TRACES, grader_trace

    assert [TRACES[scope]["grader_scores"] for scope in ("train", "sampled", "full")] == [
        "train_grader:", "valid_grader:", "full_valid_grader:"]
    assert grader_trace("sampled", "exact") == "valid_grader:exact"
    assert (TRACES["train"]["reward"], TRACES["sampled"]["reward"], TRACES["full"]["reward"]) == (
        "train_mean_reward", "valid_reward_mean", "full_valid_mean_reward")
    assert TRACES["full"]["parse_error_rate"] == "full_valid_mean_parse_error"


def test_a_second_tab_gets_the_full_history_with_nothing_doubled(job, admin_user):
    run = JobRun(job, job.worker)

    def first_tab_watches():
        for step in range(1, 4):
            run.handle_line(metric_line(step, 1.0))
        run.handle_line(metric_line(3, 1.0))  # a replayed line

    connect_and_read(job.public_id, admin_user, then=first_tab_watches, n_live=6)
    _, _, history, _ = connect_and_read(job.public_id, admin_user)
    trace = history["data"]["traces"]["train_loss"]
    assert trace["x"] == [1, 2, 3]
    ids = [e["id"] for e in history["data"]["events"]]
    assert len(ids) == len(set(ids))
    assert sum(e["type"] == "metrics" for e in history["data"]["events"]) == 3


def test_a_long_run_is_downsampled_to_a_thousand_points_per_trace(job, admin_user):
    MetricPoint.objects.bulk_create([MetricPoint(job=job, scope="train", step=s, loss=1 / s, accuracy=0.5,
                                                 learning_rate=1e-4) for s in range(1, 5001)])
    _, _, history, _ = connect_and_read(job.public_id, admin_user)
    trace = history["data"]["traces"]["train_loss"]
    assert len(trace["x"]) == MAX_TRACE_POINTS
    assert trace["x"][0] == 1 and trace["x"][-1] == 5000  # both ends kept
    assert trace["x"] == sorted(set(trace["x"]))
    assert history["data"]["points"]["train"] == 5000
    assert len(json.dumps(history)) < 200_000


def test_lttb_keeps_a_spike_that_even_sampling_would_lose():
    xs = list(range(10_000))
    ys = [0.0] * 10_000
    ys[4321] = 50.0
    kept_x, kept_y = lttb(xs, ys, 100)
    assert len(kept_x) == 100 and 4321 in kept_x and max(kept_y) == 50.0
