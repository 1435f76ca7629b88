"""The worker with the real engine on attune-tiny: pause, resume, cancel, a kill -9 in the middle of an
epoch, and the live relay through a real Redis to a websocket client of a real server.

Each job is tiny (16 examples of the demo data, batch 2, short sequences) and runs under
`manage.py trainworker` in its own process, over a data folder with the demo data and an untrained attune-tiny (SQLite).
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, manage, start_studio, stop_studio, studio_env

pytestmark = pytest.mark.slow

TINY = {"batch_size": 2, "max_seq_length": 128, "eval_interval": 4, "eval_samples": 4, "lora_r": 4,
        "suffix": "tiny"}

MAKE_JOB = """
import django, json, sys
django.setup()
from django.conf import settings
from training.datasets import store_upload
from training.jobs import create_job
demo = settings.ATTUNE_HOME / "demo"
train = b"".join(open(demo / "demo-intents-train.jsonl", "rb").readlines()[:16])
valid = b"".join(open(demo / "demo-intents-valid.jsonl", "rb").readlines()[:10])
t, _ = store_upload([train], "tiny-train.jsonl")
v, _ = store_upload([valid], "tiny-valid.jsonl")
spec = {"model": "attune-tiny", "training_file": t.public_id, "validation_file": v.public_id,
        **json.loads(sys.argv[1])}
print(create_job(spec, None).public_id)
"""

CONTROL = """
import django, sys
django.setup()
from training.models import FineTuningJob
getattr(FineTuningJob.objects.get(public_id=sys.argv[1]), sys.argv[2])()
"""


class Home:
    """A demo data folder with helpers to make jobs, start workers and read the database."""

    def __init__(self, path, **env):
        self.path = Path(path)
        self.env = studio_env(self.path, ATTUNE_HEARTBEAT_S="0.5", ATTUNE_CANCEL_GRACE_S="3", **env)
        self.workers = []

    def python(self, code, *args):
        env = {**self.env, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    def make_job(self, **spec):
        return self.python(MAKE_JOB, json.dumps({**TINY, **spec})).splitlines()[-1]

    def control(self, job_id, action):
        self.python(CONTROL, job_id, action)

    def start_worker(self):
        log = open(self.path / f"worker-{len(self.workers)}.log", "w")
        worker = subprocess.Popen([sys.executable, "manage.py", "trainworker", "--slots", "1", "--skip-checks"],
                                  cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        self.workers.append(worker)
        return worker

    def stop_workers(self):
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

    def logs(self):
        text = "\n".join(p.read_text()[-3000:] for p in sorted(self.path.glob("worker-*.log")))
        for log in self.path.glob("jobs/*/engine.log"):
            text += "\n--- engine.log\n" + log.read_text()[-3000:]
        return text

    def query(self, sql, *args):
        with sqlite3.connect(self.path / "attune.sqlite3", timeout=30) as db:
            return db.execute(sql, args).fetchall()

    def job(self, job_id):
        columns = ["id", "status", "step", "total_steps", "control", "engine_pid", "attempts", "error",
                   "fine_tuned_model", "result_files", "trained_tokens"]
        row = self.query(f"SELECT {', '.join(columns)} FROM training_finetuningjob WHERE public_id = ?", job_id)
        return dict(zip(columns, row[0], strict=True))

    def wait(self, job_id, condition, what, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if condition(job):
                return job
            if job["status"] in ("failed",) and "failed" not in what:
                pytest.fail(f"job failed: {job['error']}\n{self.logs()}")
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}: {self.job(job_id)}\n{self.logs()}")

    def checkpoints(self, job_id):
        return self.query("SELECT c.epoch, c.step, c.path, c.is_final FROM training_checkpoint c JOIN "
                          "training_finetuningjob j ON c.job_id = j.id WHERE j.public_id = ? ORDER BY c.epoch",
                          job_id)

    def messages(self, job_id):
        return [m for (m,) in self.query(
            "SELECT e.message FROM training_jobevent e JOIN training_finetuningjob j ON e.job_id = j.id "
            "WHERE j.public_id = ? AND e.type = 'message' ORDER BY e.id", job_id)]

    def points(self, job_id, scope="train"):
        return self.query("SELECT p.step, p.loss FROM training_metricpoint p JOIN training_finetuningjob j ON "
                          "p.job_id = j.id WHERE j.public_id = ? AND p.scope = ? ORDER BY p.step", job_id, scope)


@pytest.fixture(scope="session")
def tiny_home_template(tmp_path_factory):
    """Migrated, with the demo data and attune-tiny built without its pre-training (these tests need
    a model that trains, not one that answers well), so the template takes seconds, not minutes."""
    home = tmp_path_factory.mktemp("tiny-home")
    build = ("import sys; from pathlib import Path; from training.demo_data import corpus_texts; "
             "from training.demo_model import build_tiny_model; "
             "build_tiny_model(Path(sys.argv[1]), corpus_texts(), pretrain_steps=0)")
    done = subprocess.run([sys.executable, "-c", build, str(home / "models" / "attune-tiny")], cwd=ROOT,
                          env={**studio_env(home), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for command in (("migrate", "--noinput"), ("bootstrap_demo",)):
        done = manage(home, *command, "--skip-checks", check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture
def tiny_home(tiny_home_template, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny_home_template, home)
    return home


@pytest.fixture
def home(tiny_home):
    h = Home(tiny_home)
    yield h
    h.stop_workers()


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pause_saves_and_stops_resume_continues_and_cancel_stops_within_ten_seconds(home):
    job_id = home.make_job(n_epochs=3)
    home.start_worker()
    home.wait(job_id, lambda j: j["status"] == "running" and j["step"] >= 2, "two training steps")

    home.control(job_id, "pause")
    paused = home.wait(job_id, lambda j: j["status"] == "paused", "the pause")
    assert (home.path / "jobs" / job_id / "pause-state" / "COMPLETE").exists()
    assert paused["engine_pid"] is None and paused["control"] == ""
    assert home.messages(job_id)[-1] == f"The job was paused at step {paused['step']}; resume continues from there."

    home.control(job_id, "resume")
    home.wait(job_id, lambda j: j["status"] == "running" and j["attempts"] == 2 and j["step"] > paused["step"],
              "training after the resume")
    assert any(m.startswith("Resuming from pause-state") for m in home.messages(job_id))
    running = home.wait(job_id, lambda j: len(home.checkpoints(job_id)) >= 1 and j["engine_pid"],
                        "the first epoch's checkpoint")

    started = time.monotonic()
    home.control(job_id, "cancel")
    assert home.job(job_id)["status"] == "cancelled"
    while group_alive(running["engine_pid"]) and time.monotonic() - started < 10:
        time.sleep(0.05)
    assert not group_alive(running["engine_pid"]), "the engine still runs 10 s after the cancel"
    assert home.job(job_id)["status"] == "cancelled"
    epoch, step, path, _ = home.checkpoints(job_id)[0]
    assert epoch == 1 and (home.path / path / "adapter_model.safetensors").exists()  # kept, servable
    train_steps = [s for s, _ in home.points(job_id)]
    assert train_steps == sorted(set(train_steps))


def engine_ranks(job_id):
    """The pids of the engine processes (torchrun's ranks among them) training `job_id`, on this host."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"training.engine" in cmdline and any(job_id.encode() in part for part in cmdline):
            found.append(int(proc.name))
    return found


def test_a_multiprocess_job_pauses_with_every_rank_saved_resumes_and_its_ranks_die_with_torchrun(home):
    # Two processes under torchrun (n_gpus counts processes on a host without a GPU). torchrun starts each rank
    # in a session of its own: the pause's SIGUSR1 reaches torchrun alone, which must hand it on and wait for
    # the ranks to save, not die of it; and when torchrun is killed, its ranks must not train on.
    job_id = home.make_job(n_epochs=20, n_gpus=2)  # 160 steps: longer than the test looks at it
    home.start_worker()
    home.wait(job_id, lambda j: j["status"] == "running" and j["step"] >= 2, "two training steps")
    home.control(job_id, "pause")
    paused = home.wait(job_id, lambda j: j["status"] == "paused", "the pause")
    assert (home.path / "jobs" / job_id / "pause-state" / "COMPLETE").exists()
    assert home.messages(job_id)[-1] == f"The job was paused at step {paused['step']}; resume continues from there."
    assert engine_ranks(job_id) == []

    home.control(job_id, "resume")
    running = home.wait(job_id, lambda j: j["status"] == "running" and j["attempts"] == 2
                        and j["step"] > paused["step"] and j["engine_pid"], "training after the resume")
    assert len(engine_ranks(job_id)) == 3  # torchrun and its two ranks
    os.kill(running["engine_pid"], signal.SIGKILL)  # torchrun, as a scheduler or the OOM killer would end it
    deadline = time.monotonic() + 5
    while engine_ranks(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine_ranks(job_id) == [], "an engine rank outlived torchrun"
    failed = home.wait(job_id, lambda j: j["status"] == "failed", "the job to fail")
    assert json.loads(failed["error"])["code"] == "engine_crashed" and failed["step"] < 160
    steps = [s for s, _ in home.points(job_id)]
    assert steps == list(range(1, len(steps) + 1))  # rank 0's lines only, each step once across the two attempts


def test_a_job_survives_a_kill_9_of_its_worker_in_the_middle_of_an_epoch(home):
    job_id = home.make_job(n_epochs=2)  # 8 steps per epoch
    first = home.start_worker()
    home.wait(job_id, lambda j: j["step"] >= 10 and len(home.checkpoints(job_id)) == 1,
              "the middle of the second epoch")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = dict(home.points(job_id))
    epoch_one = {step: loss for step, loss in before.items() if step <= 8}
    assert len(epoch_one) == 8

    home.start_worker()  # sees that the dead worker was on this host and takes the job over at once
    done = home.wait(job_id, lambda j: j["status"] == "succeeded", "the job to finish after the restart")

    assert done["attempts"] == 2
    checkpoints = home.checkpoints(job_id)
    assert [(epoch, step) for epoch, step, _, _ in checkpoints] == [(1, 8), (2, 16)]
    assert [is_final for *_, is_final in checkpoints] == [0, 1]
    folders = sorted(p.name for p in (home.path / "jobs" / job_id / "checkpoints").iterdir())
    assert folders == ["epoch-1-step-8", "epoch-2-step-16"]
    after = dict(home.points(job_id))
    assert sorted(after) == list(range(1, 17))  # every step once
    assert {step: after[step] for step in epoch_one} == epoch_one  # the finished epoch's points untouched
    messages = home.messages(job_id)
    recovered = [m for m in messages if "stopped responding" in m]
    assert len(recovered) == 1 and "epoch-1-step-8" in recovered[0]
    assert messages.count("Fine-tuning job started") == 1
    assert messages[-1] == "The job has successfully completed"
    metric_events = home.query("SELECT e.dedupe_key FROM training_jobevent e JOIN training_finetuningjob j "
                               "ON e.job_id = j.id WHERE j.public_id = ? AND e.type = 'metrics'", job_id)
    assert len(metric_events) == 16


def process_environ(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_the_engine_inherits_neither_the_secret_key_nor_the_database_url(tiny_home):
    home = Home(tiny_home, SECRET_KEY="worker-secret-key", DATABASE_URL=f"sqlite:///{tiny_home}/attune.sqlite3",
                OMP_NUM_THREADS="1")
    try:
        job_id = home.make_job(n_epochs=2)
        worker = home.start_worker()
        running = home.wait(job_id, lambda j: j["status"] == "running" and j["engine_pid"], "the engine's start")
        assert process_environ(worker.pid)["SECRET_KEY"] == "worker-secret-key"
        engine = process_environ(running["engine_pid"])
        assert "SECRET_KEY" not in engine and "DATABASE_URL" not in engine and "ATTUNE_HOME" not in engine
        assert engine["OMP_NUM_THREADS"] == "1" and engine["HF_HUB_OFFLINE"] == "1" and engine["PATH"]
        done = home.wait(job_id, lambda j: j["status"] in ("succeeded", "failed"), "the job's end")
        assert done["status"] == "succeeded", f"{done['error']}\n{home.logs()}"
    finally:
        home.stop_workers()


@pytest.fixture(params=["embedded", "redis"])
def layer_env(request):
    """embedded: the worker is a thread of the web process (in-memory layer); redis: a trainworker in
    another process relays through a real Redis."""
    if request.param == "embedded":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_server")}


def test_every_point_reaches_a_websocket_client_in_order(tiny_home, layer_env):
    from websockets.sync.client import connect

    home = Home(tiny_home, **layer_env)
    studio = start_studio(tiny_home, **layer_env)  # with Redis the web process runs no worker
    try:
        job_id = home.make_job(n_epochs=2)
        client = studio.login(httpx.Client())
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        ws_url = studio.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}/"
        with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": studio.url},
                     open_timeout=30) as ws:
            history = json.loads(ws.recv(timeout=30))
            assert history["kind"] == "history"
            assert history["data"]["status"]["status"] in ("queued", "running")  # embedded: claimed at once
            if layer_env:
                home.start_worker()  # another process, relaying through Redis
            steps, status, kinds = list(history["data"]["traces"]["train_loss"]["x"]), None, set()
            deadline = time.monotonic() + 300
            while status != "succeeded" and time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=120))
                kinds.add(message["kind"])
                if message["kind"] == "metric" and message["data"]["scope"] == "train":
                    steps.append(message["data"]["step"])
                if message["kind"] == "status":
                    status = message["data"]["status"]
                    assert status != "failed", f"{message}\n{home.logs()}"
        assert status == "succeeded", home.logs()
        assert steps == list(range(1, 17)), steps  # every point, in order, once
        assert kinds == {"metric", "event", "checkpoint", "status"}
        job = home.job(job_id)
        assert job["fine_tuned_model"].startswith("ft:attune-tiny:tiny:")
        assert job["trained_tokens"] > 0 and len(json.loads(job["result_files"])) == 1
        # A new client (a reload) gets all of it as history.
        with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": studio.url}) as ws:
            again = json.loads(ws.recv(timeout=30))["data"]
        assert again["traces"]["train_loss"]["x"] == list(range(1, 17))
        assert [c["epoch"] for c in again["checkpoints"]] == [1, 2]
        assert again["checkpoints"][-1]["model_name"] == job["fine_tuned_model"]
    finally:
        stop_studio(studio.process)
        home.stop_workers()


def test_stopping_serve_pauses_its_job_and_the_next_start_resumes_it_from_there(tiny_home):
    home = Home(tiny_home)
    job_id = home.make_job(n_epochs=3)  # 24 steps
    studio = start_studio(tiny_home, ATTUNE_HEARTBEAT_S="0.5")  # the embedded worker claims it
    try:
        running = home.wait(job_id, lambda j: j["status"] == "running" and j["step"] >= 2, "two training steps")
        os.killpg(studio.process.pid, signal.SIGTERM)  # as `make run` is stopped
        assert studio.process.wait(timeout=180) == 0, studio.log.read_text()[-3000:]
    finally:
        stop_studio(studio.process)
    stopped = home.job(job_id)
    assert (stopped["status"], stopped["engine_pid"], stopped["attempts"]) == ("queued", None, 1)
    assert not group_alive(running["engine_pid"])
    pause = home.path / "jobs" / job_id / "pause-state"
    assert (pause / "COMPLETE").exists()
    step = json.loads((pause / "attune_state.json").read_text())["step"]
    assert 2 <= step < 24
    worker_said = [m for m in home.messages(job_id) if m.endswith(f"the job saved its state at step {step} "
                                                                  "and is queued again.")]
    assert len(worker_said) == 1, home.messages(job_id)

    studio = start_studio(tiny_home, ATTUNE_HEARTBEAT_S="0.5")
    try:
        done = home.wait(job_id, lambda j: j["status"] == "succeeded", "the job to finish after the restart")
    finally:
        stop_studio(studio.process)
    assert done["attempts"] == 2
    messages = home.messages(job_id)
    assert f"Resuming from pause-state at step {step}." in messages
    assert not any("stopped responding" in m for m in messages)
    assert sorted(dict(home.points(job_id))) == list(range(1, 25))  # every step once
    assert [epoch for epoch, *_ in home.checkpoints(job_id)] == [1, 2, 3]


def test_a_full_disk_pauses_the_job_and_resume_finishes_it_once_there_is_room(home):
    jobs = home.path / "jobs"
    jobs.mkdir(exist_ok=True)
    # 1.5 MB: room for one checkpoint of this job (about 1 MB: adapter, optimizer, tokenizer), not two.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(jobs)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        job_id = home.make_job(n_epochs=2)  # 8 steps per epoch
        home.start_worker()
        paused = home.wait(job_id, lambda j: j["status"] == "paused", "the pause for the full disk")
        assert (paused["error"], paused["engine_pid"]) == ("{}", None)
        assert home.messages(job_id)[-1] == (
            f"The disk holding {jobs / job_id} is full: the state at step 16 could not be saved. The job is "
            "paused. Free space (or set keep_last_n to keep fewer optimizer states), then resume it: it "
            "continues from epoch-1-step-8 (step 8).")
        assert [epoch for epoch, *_ in home.checkpoints(job_id)] == [1]

        subprocess.run(["mount", "-o", "remount,size=16m", str(jobs)], check=True)  # room made
        home.control(job_id, "resume")
        done = home.wait(job_id, lambda j: j["status"] == "succeeded", "the job to finish after the resume")
        assert done["attempts"] == 2
        assert [epoch for epoch, *_ in home.checkpoints(job_id)] == [1, 2]
        assert "Resuming from epoch-1-step-8 at step 8." in home.messages(job_id)
    finally:
        home.stop_workers()
        subprocess.run(["umount", "-l", str(jobs)], check=True)


ESTIMATE = """
import django, json, sys
django.setup()
from training.estimates import estimate_request
from training.models import FineTuningJob
print(json.dumps(estimate_request(FineTuningJob.objects.get(public_id=sys.argv[1]).spec)))
"""


def test_a_finished_job_teaches_the_next_ones_estimate_and_estimated_finish_moves_as_it_runs(home):
    """The estimate before launch comes from the first job's time per trained token; the second job, the same
    spec on the same files' content, runs within a factor of 3 of it (the two jobs share the machine with whatever
    else runs on it: 10.6 s estimated against 22.4 s taken, with a test suite running beside them). While it
    runs, estimated_finish is set and updated."""
    from datetime import datetime

    first = home.make_job(n_epochs=2)
    home.start_worker()
    home.wait(first, lambda j: j["status"] == "succeeded", "the first job", timeout=300)
    second = home.make_job(n_epochs=2)
    estimate = json.loads(home.python(ESTIMATE, second))
    assert estimate["seconds"] and first in estimate["time_basis"], estimate
    finishes = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        (status, finish), = home.query("SELECT status, estimated_finish FROM training_finetuningjob WHERE "
                                       "public_id = ?", second)
        if status == "running" and finish:
            finishes.add(finish)
        if status in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    assert status == "succeeded", home.logs()
    (started, ended, tokens), = home.query("SELECT started_at, finished_at, trained_tokens FROM "
                                           "training_finetuningjob WHERE public_id = ?", second)
    took = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    print(f"estimated {estimate['seconds']:.1f} s, took {took:.1f} s")
    assert 1 / 3 <= estimate["seconds"] / took <= 3, (estimate, took)
    assert estimate["tokens"] == tokens
    assert len(finishes) >= 2, finishes
    (data,), = home.query("SELECT e.data FROM training_jobevent e JOIN training_finetuningjob j ON e.job_id = j.id "
                          "WHERE j.public_id = ? AND e.dedupe_key = 'started'", second)
    assert json.loads(data)["device"] == "cpu"
