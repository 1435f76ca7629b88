"""The launchers' parts that need no cluster: the batch script, and what each launcher refuses."""

import pytest

from tests import factories
from training.jobs import create_job
from training.launchers import slurm
from training.models import FineTuningJob, JobError


def _request(**extra):
    return {"model": "attune-tiny", "training_file": factories.upload(factories.chat_lines(20)).public_id, **extra}


@pytest.mark.django_db
def test_the_local_launcher_refuses_several_nodes(base_model, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(_request(n_nodes=2), admin_user)
    assert caught.value.param == "n_nodes" and "ATTUNE_LAUNCHER=slurm" in caught.value.message
    assert not FineTuningJob.objects.exists()


@pytest.mark.django_db
def test_the_slurm_launcher_refuses_more_nodes_than_it_allows(base_model, admin_user, settings):
    settings.ATTUNE_LAUNCHER, settings.ATTUNE_SLURM_MAX_NODES = "slurm", 2
    with pytest.raises(JobError) as caught:
        create_job(_request(n_nodes=3), admin_user)
    assert caught.value.param == "n_nodes" and "at most 2 nodes" in caught.value.message
    job = create_job(_request(n_nodes=2), admin_user)
    assert job.status == FineTuningJob.QUEUED


@pytest.mark.django_db
def test_a_batch_script_on_two_nodes_runs_one_torchrun_each_meeting_at_the_first(base_model, admin_user,
                                                                                  settings):
    settings.ATTUNE_LAUNCHER = "slurm"
    job = create_job(_request(n_nodes=2, n_gpus=4, batch_size=8), admin_user)
    settings.ATTUNE_SLURM_PARTITION, settings.ATTUNE_SLURM_TIME = "gpu", "2:00:00"
    job.attempts = 3
    spec = {"n_nodes": 2, "n_gpus": 4}
    script = slurm.batch_script(job, slurm.engine_command(job, spec, resume=True), spec, 3)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00", f"#SBATCH --job-name=attune-{job.public_id}",
                 f"#SBATCH --output={job.job_dir}/engine-3.out"):
        assert line in script.splitlines(), line
    assert 'ATTUNE_RDZV_ENDPOINT="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):29400"' in script
    run = script.splitlines()[-1]
    assert run.startswith("exec srun --kill-on-bad-exit=1 ")
    assert "--nnodes 2 --nproc_per_node 4 --rdzv-backend c10d" in run
    assert '--rdzv-endpoint "$ATTUNE_RDZV_ENDPOINT"' in run and f"--rdzv-id {job.public_id}-3" in run
    assert run.endswith("--resume")


@pytest.mark.django_db
def test_a_host_without_the_slurm_client_is_named(base_model, admin_user, settings, tmp_path, monkeypatch):
    settings.ATTUNE_LAUNCHER, settings.ATTUNE_SLURM_PARTITION = "slurm", "gpu"
    request = _request()
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo here
    with pytest.raises(JobError) as caught:
        create_job(request, admin_user)
    assert caught.value.param == "slurm_partition" and "sinfo is not installed" in caught.value.message
    assert not FineTuningJob.objects.exists()
