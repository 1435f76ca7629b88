"""Jobs on a fine-tuned model (`model: "ft:…"`): which snapshot they start from, and the requests refused."""

import pytest

from tests import factories
from training.jobs import create_job, rerun
from training.launch import engine_spec
from training.models import FineTuningJob, JobError


@pytest.fixture
def lora_job(base_model, admin_user):
    return factories.make_finished_job(admin_user, suffix="intents")


def _request(model, **extra):
    return {"model": model, "training_file": factories.upload(factories.chat_lines(20)).public_id, **extra}


def test_a_lora_snapshot_is_trained_on_and_its_base_is_the_jobs_base(lora_job, admin_user):
    job = create_job(_request(lora_job.fine_tuned_model), admin_user)
    final = lora_job.checkpoints.get(is_final=True)
    assert job.status == FineTuningJob.QUEUED
    assert job.init_checkpoint == final and job.base_model == lora_job.base_model
    assert job.spec["model"] == lora_job.fine_tuned_model
    spec = engine_spec(job)
    assert spec["init_from"] == str(final.full_path) and spec["model"] == lora_job.base_model.load_path
    # Its own fine-tuned model is named on the first base, as every ft: name is.
    assert job.model_name().startswith("ft:attune-tiny:")


def test_an_epoch_checkpoint_can_be_the_start(lora_job, admin_user):
    first = lora_job.checkpoints.get(epoch=1)
    preferences = factories.upload(factories.preference_lines(12))
    job = create_job({"model": first.model_name, "method": "dpo", "training_file": preferences.public_id},
                     admin_user)
    assert job.init_checkpoint == first and job.spec["method"] == "dpo"


def test_continuing_an_adapter_needs_its_lora_settings(lora_job, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(_request(lora_job.fine_tuned_model, lora_r=8), admin_user)
    assert caught.value.param == "lora_r" and "16" in caught.value.message
    assert not FineTuningJob.objects.filter(init_checkpoint__isnull=False).exists()


def test_full_fine_tuning_of_an_adapter_may_change_the_lora_settings(lora_job, admin_user):
    job = create_job(_request(lora_job.fine_tuned_model, adapter="full", lora_r=8), admin_user)
    assert job.init_checkpoint.job == lora_job


def test_a_full_weight_snapshot_trains_in_full_only(base_model, admin_user):
    full = factories.make_finished_job(admin_user, weights="full")
    with pytest.raises(JobError) as caught:
        create_job(_request(full.fine_tuned_model), admin_user)
    assert caught.value.param == "adapter" and "'full'" in caught.value.message
    job = create_job(_request(full.fine_tuned_model, adapter="full"), admin_user)
    assert engine_spec(job)["init_from"] == str(full.checkpoints.get(is_final=True).full_path)


def test_an_unknown_fine_tuned_model_is_refused_naming_model(lora_job, admin_user):
    for name in ("ft:attune-tiny:intents:nope0000", lora_job.fine_tuned_model + ":ckpt-step-99"):
        with pytest.raises(JobError) as caught:
            create_job(_request(name), admin_user)
        assert (caught.value.param, caught.value.code) == ("model", "model_not_found")
        assert name in caught.value.message


def test_a_snapshot_whose_folder_is_gone_is_refused(lora_job, admin_user):
    import shutil

    shutil.rmtree(lora_job.checkpoints.get(is_final=True).full_path)
    with pytest.raises(JobError) as caught:
        create_job(_request(lora_job.fine_tuned_model), admin_user)
    assert caught.value.param == "model"


def test_a_rerun_starts_from_the_same_snapshot(lora_job, admin_user):
    job = create_job(_request(lora_job.fine_tuned_model), admin_user)
    again = rerun(job, admin_user)
    assert again.init_checkpoint == job.init_checkpoint and again.parent == job
