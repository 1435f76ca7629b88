"""Creating jobs and the lifecycle rules on FineTuningJob (no engine, no worker)."""

import json
import subprocess
import sys

import pytest

from tests.factories import chat_lines, preference_lines, upload
from training.jobs import JobError, create_job, rerun
from training.models import FineTuningJob

pytestmark = pytest.mark.django_db


def spec_for(train_file, **extra):
    return {"model": "attune-tiny", "training_file": train_file.public_id, **extra}


def messages_of(job):
    return list(job.events.order_by("id").values_list("message", flat=True))


def test_a_valid_request_is_created_validated_and_queued_with_an_event_for_each_step(base_model, train_file,
                                                                                      valid_file, admin_user):
    job = create_job(spec_for(train_file, validation_file=valid_file.public_id, suffix="intents"), admin_user)
    assert job.status == FineTuningJob.QUEUED
    assert job.error == {}
    assert job.created_by == admin_user
    assert messages_of(job) == [
        f"Created fine-tuning job: {job.public_id}",
        f"Validating training file: {train_file.public_id} and validation file: {valid_file.public_id}",
        "Files validated, moving job to queued state",
    ]


def test_auto_is_kept_in_the_spec_and_resolved_next_to_it(base_model, train_file, admin_user):
    job = create_job(spec_for(train_file), admin_user)
    assert job.spec["n_epochs"] == "auto" and job.spec["batch_size"] == "auto"
    # 20 examples: OpenAI's epoch rule gives min(25, 100 // 20) = 5; batch ≈ n/50 → 1.
    assert job.resolved_spec["n_epochs"] == 5
    assert job.resolved_spec["batch_size"] == 1
    assert job.hyperparameters == {"n_epochs": 5, "batch_size": 1, "learning_rate_multiplier": 1.0}


def test_a_seed_is_chosen_and_stored_when_the_request_has_none(base_model, train_file, admin_user):
    job = create_job(spec_for(train_file), admin_user)
    assert isinstance(job.seed, int) and job.spec["seed"] == job.seed
    assert create_job(spec_for(train_file, seed=7), admin_user).seed == 7


def test_the_worker_fields_are_not_stored_in_the_spec(base_model, train_file, admin_user):
    job = create_job(spec_for(train_file), admin_user)
    assert "output_dir" not in job.spec and "job_id" not in job.spec


def test_an_unknown_spec_key_is_refused_naming_it(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, n_epoch=3), admin_user)
    assert caught.value.param == "n_epoch"
    assert "unknown field" in caught.value.message
    assert FineTuningJob.objects.count() == 0


def test_a_value_out_of_range_is_refused_naming_the_field(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, n_epochs=51), admin_user)
    assert caught.value.param == "n_epochs"
    assert "1" in caught.value.message and "50" in caught.value.message
    assert caught.value.errors == [("n_epochs", caught.value.message.removeprefix("n_epochs: "))]


def test_a_request_cannot_choose_the_output_folder(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, output_dir="/etc"), admin_user)
    assert caught.value.param == "output_dir"


def test_a_tensorboard_folder_outside_the_job_folder_is_refused(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, integrations={"tensorboard": {"log_dir": "../../elsewhere"}}), admin_user)
    assert caught.value.param == "integrations.tensorboard.log_dir"


def test_an_unknown_base_model_makes_no_job(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job({"model": "gpt-9", "training_file": train_file.public_id}, admin_user)
    assert (caught.value.param, caught.value.code) == ("model", "model_not_found")
    assert "attune-tiny" in caught.value.message  # says which ones exist
    assert FineTuningJob.objects.count() == 0


def test_an_unknown_file_id_makes_no_job(base_model, admin_user):
    with pytest.raises(JobError) as caught:
        create_job({"model": "attune-tiny", "training_file": "file-doesnotexist"}, admin_user)
    assert (caught.value.param, caught.value.code) == ("training_file", "file_not_found")


def test_an_unknown_validation_file_is_named_as_validation_file(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, validation_file="file-nope"), admin_user)
    assert caught.value.param == "validation_file"


def test_a_file_with_too_few_examples_is_refused_naming_it(base_model, admin_user):
    small = upload(chat_lines(3))
    with pytest.raises(JobError) as caught:
        create_job({"model": "attune-tiny", "training_file": small.public_id}, admin_user)
    assert caught.value.as_dict() == {
        "code": "invalid_n_examples", "param": "training_file",
        "message": "Training file has 3 example(s), but must have at least 10 examples."}
    assert FineTuningJob.objects.count() == 0


def test_a_broken_validation_file_is_refused_naming_validation_file(base_model, train_file, admin_user):
    broken = upload(chat_lines(12) + "{not json\n")
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, validation_file=broken.public_id), admin_user)
    assert caught.value.param == "validation_file"
    assert caught.value.code == "invalid_json"
    assert "line 13" in caught.value.message.lower()
    assert FineTuningJob.objects.count() == 0


def test_a_dpo_job_on_chat_data_is_refused_with_the_format_named(base_model, train_file, admin_user):
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file, method="dpo"), admin_user)
    assert caught.value.code == "invalid_file_format" and caught.value.param == "training_file"
    assert "preference" in caught.value.message
    assert FineTuningJob.objects.count() == 0


def test_a_dpo_job_on_preference_data_is_queued_with_beta_resolved(base_model, admin_user):
    prefs = upload(preference_lines(12))
    job = create_job({"model": "attune-tiny", "training_file": prefs.public_id, "method": "dpo"}, admin_user)
    assert job.status == FineTuningJob.QUEUED
    assert job.hyperparameters["beta"] == 0.1


def test_metadata_is_checked_and_kept(base_model, train_file, admin_user):
    job = create_job(spec_for(train_file), admin_user, metadata={"team": "search"})
    assert job.metadata == {"team": "search"}
    with pytest.raises(JobError) as caught:
        create_job(spec_for(train_file), admin_user, metadata={f"k{i}": "v" for i in range(17)})
    assert caught.value.param == "metadata"


# --- lifecycle ----------------------------------------------------------------------------------

@pytest.fixture
def queued_job(base_model, train_file, admin_user):
    return create_job(spec_for(train_file, n_epochs=2), admin_user)


def test_claim_next_takes_the_oldest_queued_job_once(base_model, train_file, admin_user):
    first = create_job(spec_for(train_file), admin_user)
    second = create_job(spec_for(train_file), admin_user)
    claimed = FineTuningJob.claim_next("host:1:a")
    assert claimed.pk == first.pk
    assert (claimed.status, claimed.worker, claimed.attempts) == ("running", "host:1:a", 1)
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert FineTuningJob.claim_next("host:2:b").pk == second.pk
    assert FineTuningJob.claim_next("host:3:c") is None


def test_cancelling_a_queued_job_cancels_it_at_once(queued_job, admin_user):
    queued_job.cancel(by=admin_user)
    queued_job.refresh_from_db()
    assert queued_job.status == "cancelled" and queued_job.finished_at is not None
    assert messages_of(queued_job)[-1] == "The job was cancelled by alice."
    assert FineTuningJob.claim_next("w") is None


def test_cancelling_a_running_job_asks_its_worker_to_stop_it(queued_job):
    FineTuningJob.claim_next("w")
    queued_job.cancel()
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.control) == ("cancelled", "cancel")


def test_a_finished_job_cannot_be_cancelled(queued_job):
    queued_job.cancel()
    with pytest.raises(JobError) as caught:
        queued_job.cancel()
    assert caught.value.code == "invalid_job_state"
    assert "cancelled" in caught.value.message


def test_pausing_a_running_job_asks_the_engine_to_save_and_stop(queued_job):
    FineTuningJob.claim_next("w")
    queued_job.pause()
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.control) == ("running", "pause")
    with pytest.raises(JobError):
        queued_job.pause()  # already asked


def test_a_paused_job_resumes_into_the_queue(queued_job):
    queued_job.pause()  # queued → paused directly
    assert queued_job.status == "paused"
    assert FineTuningJob.claim_next("w") is None
    queued_job.resume()
    assert queued_job.status == "queued"
    assert FineTuningJob.claim_next("w").pk == queued_job.pk


def test_only_a_paused_job_can_be_resumed(queued_job):
    with pytest.raises(JobError) as caught:
        queued_job.resume()
    assert "only a job that is paused" in caught.value.message


def test_a_failed_job_cannot_be_paused(queued_job):
    queued_job.fail("training_error", "The training failed.")
    with pytest.raises(JobError):
        queued_job.pause()


def test_rerun_copies_the_spec_as_requested_and_records_the_parent(queued_job, admin_user):
    child = rerun(queued_job, by=admin_user)
    assert child.parent == queued_job and child.status == "queued"
    assert child.spec == queued_job.spec and child.spec["batch_size"] == "auto"
    assert list(queued_job.reruns.all()) == [child]
    edited = rerun(queued_job, by=admin_user, spec={**queued_job.spec, "n_epochs": 3})
    assert edited.spec["n_epochs"] == 3 and edited.parent == queued_job


@pytest.mark.slow
def test_three_processes_claiming_from_sqlite_never_share_a_job(tmp_path, settings):
    """SQLite cannot skip locks: the conditional update must still give each job to one worker."""
    home = tmp_path / "home"
    env = {"ATTUNE_HOME": str(home), "DJANGO_SETTINGS_MODULE": "config.settings", "PATH": "/usr/bin:/bin"}
    setup = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "--skip-checks"], env=env,
                           capture_output=True, text=True, cwd=settings.BASE_DIR)
    assert setup.returncode == 0, setup.stderr
    code = """
import django, json, sys
django.setup()
from training.models import BaseModel, DataFile, FineTuningJob
base = BaseModel.objects.create(name="m", source="m")
f = DataFile.objects.create(filename="t.jsonl", path="t.jsonl", status="processed", n_examples=20)
for i in range(20):
    FineTuningJob.objects.create(base_model=base, training_file=f, status="queued")
"""
    made = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=settings.BASE_DIR)
    assert made.returncode == 0, made.stderr
    claim = """
import django, json, sys
django.setup()
from training.models import FineTuningJob
got = []
while (job := FineTuningJob.claim_next(sys.argv[1])) is not None:
    got.append(job.public_id)
print(json.dumps(got))
"""
    procs = [subprocess.Popen([sys.executable, "-c", claim, f"w{i}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=settings.BASE_DIR) for i in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    claimed = [job for got in results for job in got]
    assert len(claimed) == 20 and len(set(claimed)) == 20

