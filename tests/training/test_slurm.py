"""Jobs on a real Slurm cluster (tests/servers.py: slurmctld, slurmd, MUNGE) with ATTUNE_LAUNCHER=slurm: on one
node, the demo job end to end through sbatch, pause and resume, cancel, a worker that stops while another
follows on with no line lost or stored twice, a batch job the cluster takes away, and a partition that does not
exist; on two nodes (the second in a network namespace of its own), a multi-node job that pauses and resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.servers import ROOT
from tests.training.test_worker_engine import Home, tiny_home, tiny_home_template  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_home(tiny_home, slurm_cluster):  # noqa: F811
    home = Home(tiny_home, ATTUNE_LAUNCHER="slurm", ATTUNE_SLURM_GPUS="0", ATTUNE_WORKER_STALE_S="4",
                **slurm_cluster.env)
    yield home
    home.stop_workers()
    slurm_cluster.run("scancel", "--name", "attune-*")


@pytest.fixture
def slurm_pair_home(tiny_home, slurm_two_nodes):  # noqa: F811
    home = Home(tiny_home, ATTUNE_LAUNCHER="slurm", ATTUNE_SLURM_GPUS="0", **slurm_two_nodes.env)
    yield home
    home.stop_workers()
    slurm_two_nodes.run("scancel", "--name", "attune-*")


def slurm_ids(home, job_id):
    """The Slurm batch jobs each attempt was submitted as, from the job's events."""
    return [m.rsplit(" ", 1)[-1].rstrip(".") for m in home.messages(job_id) if m.startswith("Submitted to Slurm")]


def slurm_field(cluster, slurm_id, name):
    shown = cluster.run("scontrol", "show", "job", "-o", slurm_id)
    return next((part.split("=", 1)[1] for part in shown.split() if part.startswith(f"{name}=")), None)


def slurm_state(cluster, slurm_id):
    return slurm_field(cluster, slurm_id, "JobState")


def test_slurm_runs_the_demo_job_through_sbatch_with_its_checkpoints_events_and_live_points(slurm_home,
                                                                                          slurm_cluster):
    job_id = slurm_home.make_job(n_epochs=2)
    slurm_home.start_worker()
    # Points arrive while the batch job runs: the charts follow it live.
    slurm_home.wait(job_id, lambda j: j["status"] == "running" and slurm_home.points(job_id), "a first point")
    job = slurm_home.wait(job_id, lambda j: j["status"] == "succeeded", "the job to succeed", timeout=300)
    assert job["engine_pid"] is None and job["fine_tuned_model"].startswith("ft:attune-tiny:tiny:")
    assert [(epoch, step) for epoch, step, _, _ in slurm_home.checkpoints(job_id)] == [(1, 8), (2, 16)]
    assert [step for step, _ in slurm_home.points(job_id)] == list(range(1, 17))
    (slurm_id,) = slurm_ids(slurm_home, job_id)
    assert slurm_state(slurm_cluster, slurm_id) == "COMPLETED"
    script = next((slurm_home.path / "jobs" / job_id).glob("slurm-*.sh")).read_text()
    assert "#SBATCH --nodes=1" in script and "exec srun" in script and "training.engine" in script
    assert "SECRET_KEY" not in script


def test_slurm_pause_resume_and_cancel(slurm_home, slurm_cluster):
    job_id = slurm_home.make_job(n_epochs=2)
    slurm_home.start_worker()
    slurm_home.wait(job_id, lambda j: j["status"] == "running" and j["step"] >= 3, "step 3")
    slurm_home.control(job_id, "pause")
    paused = slurm_home.wait(job_id, lambda j: j["status"] == "paused", "the pause", timeout=120)
    first = slurm_ids(slurm_home, job_id)[0]
    assert slurm_state(slurm_cluster, first) == "COMPLETED"  # the engine saved its state and exited 0
    slurm_home.control(job_id, "resume")
    slurm_home.wait(job_id, lambda j: j["status"] == "succeeded", "the resumed job to succeed", timeout=300)
    assert len(slurm_ids(slurm_home, job_id)) == 2 and paused["step"] >= 3
    assert [step for step, _ in slurm_home.points(job_id)] == list(range(1, 17))

    other = slurm_home.make_job(n_epochs=5)
    slurm_home.wait(other, lambda j: j["status"] == "running" and j["step"] >= 2, "the second job's step 2")
    slurm_home.control(other, "cancel")
    slurm_home.wait(other, lambda j: j["status"] == "cancelled", "the cancel")
    (batch,) = slurm_ids(slurm_home, other)
    deadline = time.monotonic() + 60
    while slurm_state(slurm_cluster, batch) not in ("CANCELLED", "COMPLETED", "FAILED") and time.monotonic() < deadline:
        time.sleep(1)
    assert slurm_state(slurm_cluster, batch) == "CANCELLED"


def test_slurm_job_goes_on_when_its_worker_stops_and_the_next_worker_follows_with_no_line_lost_or_doubled(
        slurm_home):
    job_id = slurm_home.make_job(n_epochs=3)
    first = slurm_home.start_worker()
    slurm_home.wait(job_id, lambda j: j["status"] == "running" and j["step"] >= 3, "step 3")
    os.killpg(first.pid, signal.SIGTERM)  # a worker stopped as a service is stopped
    assert first.wait(timeout=60) == 0
    detached = slurm_home.job(job_id)
    assert detached["status"] == "running"  # not paused: the batch job trains on with no worker
    slurm_home.start_worker()
    slurm_home.wait(job_id, lambda j: j["status"] == "succeeded", "the followed job to succeed", timeout=300)
    assert len(slurm_ids(slurm_home, job_id)) == 1  # one batch job throughout
    assert [step for step, _ in slurm_home.points(job_id)] == list(range(1, 25))
    metrics = [m for m in slurm_home.query(
        "SELECT e.dedupe_key FROM training_jobevent e JOIN training_finetuningjob j ON e.job_id = j.id "
        "WHERE j.public_id = ? AND e.type = 'metrics'", job_id)]
    assert len(metrics) == len(set(metrics)) == 24
    said = slurm_home.messages(job_id)
    assert any("goes on as Slurm batch job" in m for m in said) and any(" follows Slurm batch job" in m for m in said)
    out = next((slurm_home.path / "jobs" / job_id).glob("engine-*.out"))
    stored = slurm_home.query("SELECT launcher_state FROM training_finetuningjob WHERE public_id = ?", job_id)[0][0]
    assert f'"offset": {out.stat().st_size}' in stored  # every byte of the output read, once


def test_slurm_job_the_cluster_takes_away_resumes_from_its_last_checkpoint(slurm_home, slurm_cluster):
    job_id = slurm_home.make_job(n_epochs=3)
    slurm_home.start_worker()
    slurm_home.wait(job_id, lambda j: j["status"] == "running" and len(slurm_home.checkpoints(job_id)) >= 1
                    and j["step"] >= 10, "the first checkpoint")
    (batch,) = slurm_ids(slurm_home, job_id)
    slurm_cluster.run("scancel", batch)  # as a preemption or a node failure would end it
    slurm_home.wait(job_id, lambda j: j["status"] == "succeeded", "the resumed job to succeed", timeout=300)
    said = slurm_home.messages(job_id)
    assert any(f"Slurm batch job {batch} ended as CANCELLED" in m and "resumes from its last complete checkpoint"
               in m for m in said), said
    assert len(slurm_ids(slurm_home, job_id)) == 2
    assert [epoch for epoch, _, _, _ in slurm_home.checkpoints(job_id)] == [1, 2, 3]


def test_slurm_a_partition_that_does_not_exist_makes_no_job(slurm_home):
    probe = ("import django, json; django.setup(); from training.jobs import check_launcher; "
             "from training.engine.spec import JobSpec; from training.models import JobError\n"
             "try:\n    check_launcher(JobSpec.model_validate({'model': 'm', 'training_file': 'f', "
             "'slurm_partition': 'gpu-huge'}))\nexcept JobError as e:\n    print(json.dumps([e.param, e.message]))")
    env = {**slurm_home.env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    param, message = json.loads(done.stdout)
    assert param == "slurm_partition" and "'gpu-huge'" in message and "attune" in message


def test_slurm_multinode_job_trains_on_two_nodes_pauses_and_resumes(slurm_pair_home, slurm_two_nodes):
    # One torchrun per node under srun, meeting at the first node; gloo between the two addresses.
    home = slurm_pair_home
    job_id = home.make_job(n_epochs=3, n_nodes=2)
    home.start_worker()
    home.wait(job_id, lambda j: j["status"] == "running" and j["step"] >= 3, "step 3", timeout=300)
    (first,) = slurm_ids(home, job_id)
    assert slurm_field(slurm_two_nodes, first, "NodeList") == "attune-node[1-2]"
    home.control(job_id, "pause")  # scancel --signal=USR1: both nodes' torchruns hand it to their ranks
    paused = home.wait(job_id, lambda j: j["status"] == "paused", "the pause", timeout=120)
    assert slurm_state(slurm_two_nodes, first) == "COMPLETED"  # every rank saved and exited 0
    assert (home.path / "jobs" / job_id / "pause-state" / "COMPLETE").exists()
    home.control(job_id, "resume")
    home.wait(job_id, lambda j: j["status"] == "succeeded", "the resumed job to succeed", timeout=300)

    assert len(slurm_ids(home, job_id)) == 2 and paused["step"] >= 3
    assert [step for step, _ in home.points(job_id)] == list(range(1, 25))  # rank 0's lines only, each once
    assert [(epoch, step) for epoch, step, _, _ in home.checkpoints(job_id)] == [(1, 8), (2, 16), (3, 24)]
    folders = sorted(p.name for p in (home.path / "jobs" / job_id / "checkpoints").iterdir())
    assert folders == ["epoch-1-step-8", "epoch-2-step-16", "epoch-3-step-24"]  # written once
    log = (home.path / "jobs" / job_id / "engine.log").read_text()
    for rank, node in ((0, "attune-node1"), (1, "attune-node2")):
        assert log.count(f"engine rank {rank} of 2 on {node}") == 2, log[-3000:]  # once per batch job
    script = (home.path / "jobs" / job_id / "slurm-1.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "--rdzv-endpoint" in script
