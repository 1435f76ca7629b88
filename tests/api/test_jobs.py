"""/v1/fine_tuning/jobs: create (OpenAI and Attune fields), list, retrieve, control, events, checkpoints."""

import pytest

from tests.api_client import assert_error
from training.models import Checkpoint, FineTuningJob

JOB_FIELDS = {"id", "object", "created_at", "model", "organization_id", "status", "training_file",
              "validation_file", "hyperparameters", "method", "fine_tuned_model", "finished_at", "trained_tokens",
              "result_files", "error", "seed", "estimated_finish", "integrations", "metadata",
              "user_provided_suffix", "usage_metrics", "shared_with_openai", "attune"}


@pytest.fixture
def create(api, base_model, train_file):
    def make(**body):
        return api.post("/v1/fine_tuning/jobs", {"model": "attune-tiny", "training_file": train_file, **body})
    return make


def test_a_job_object_has_every_field_openai_returns_and_an_attune_block(create, train_file, valid_file):
    resp = create(validation_file=valid_file, suffix="intents", seed=7, metadata={"team": "support"})
    assert resp.status_code == 200, resp.content
    job = resp.json()
    assert set(job) == JOB_FIELDS
    assert job["id"].startswith("ftjob-") and len(job["id"]) == len("ftjob-") + 24
    assert job["object"] == "fine_tuning.job" and job["model"] == "attune-tiny"
    assert job["training_file"] == train_file and job["validation_file"] == valid_file
    assert job["error"] == {} and job["result_files"] == [] and job["fine_tuned_model"] is None
    assert job["seed"] == 7 and job["metadata"] == {"team": "support"}
    assert job["user_provided_suffix"] == "intents" and job["usage_metrics"] is None
    assert job["shared_with_openai"] is False and job["organization_id"].startswith("org-")
    assert job["status"] == "queued"
    assert job["attune"]["adapter"] == "lora" and job["attune"]["lora_r"] == 16


def test_auto_hyperparameters_are_resolved_in_both_places(create):
    job = create().json()
    assert job["method"]["type"] == "supervised"
    resolved = job["method"]["supervised"]["hyperparameters"]
    assert resolved == job["hyperparameters"]
    # 400 examples: 3 epochs, batch 8 (JobSpec's documented auto rules).
    assert resolved == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0}


def test_hyperparameters_stay_auto_while_validating_files(api, create):
    job_id = create().json()["id"]
    FineTuningJob.objects.filter(public_id=job_id).update(status="validating_files", resolved_spec=None)
    job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert job["hyperparameters"] == auto and job["method"]["supervised"]["hyperparameters"] == auto


def test_explicit_hyperparameters_by_method_and_legacy(create):
    nested = create(method={"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}}}).json()
    assert nested["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    legacy = create(hyperparameters={"n_epochs": 1}).json()
    assert legacy["method"]["supervised"]["hyperparameters"]["n_epochs"] == 1
    assert legacy["hyperparameters"]["batch_size"] == 8


def test_attune_settings_go_under_the_extension_key(create):
    job = create(attune={"adapter": "lora", "lora_r": 4, "lora_alpha": 8, "max_seq_length": 128}).json()
    assert job["attune"]["lora_r"] == 4 and job["attune"]["max_seq_length"] == 128
    stored = FineTuningJob.objects.get(public_id=job["id"]).spec
    assert stored["lora_r"] == 4 and stored["model"] == "attune-tiny"


def test_wandb_integration_is_stored_and_echoed(create):
    job = create(integrations=[{"type": "wandb", "wandb": {"project": "attune", "tags": ["a"]}}]).json()
    assert job["integrations"] == [{"type": "wandb", "wandb": {
        "project": "attune", "name": None, "entity": None, "tags": ["a"], "run_id": job["id"]}}]


@pytest.mark.parametrize("body, param", [
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": "many"}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 99}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}},
     "method.supervised.hyperparameters.beta"),
    ({"method": {"type": "reinforcement"}}, "method.reinforcement.grader"),
    ({"method": {"type": "unsupervised"}}, "method.type"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}}, "method.dpo.hyperparameters.beta"),
    ({"attune": {"lora_r": 0}}, "attune.lora_r"),
    ({"attune": {"output_dir": "/etc"}}, "attune.output_dir"),
    ({"attune": {"nonsense": 1}}, "attune.nonsense"),
    ({"suffix": "has spaces"}, "suffix"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"seed": -1}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"integrations": [{"type": "slack"}]}, "integrations[0].type"),
    ({"integrations": [{"type": "wandb", "wandb": {}}]}, "integrations[0].wandb.project"),
    ({"integrations": [{"type": "tensorboard", "tensorboard": {"log_dir": "../../x"}}]},
     "integrations[0].tensorboard.log_dir"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"model": "gpt-4o-mini"}, "model"),
    ({"training_file": "file-nope"}, "training_file"),
    ({"validation_file": "file-nope"}, "validation_file"),
    ({"hyperparameters": {"n_epochs": 1}, "method": {"supervised": {"hyperparameters": {"n_epochs": 2}}}},
     "hyperparameters"),
])
def test_a_bad_request_names_its_field(create, body, param):
    assert_error(create(**body), 400, param=param)
    assert not FineTuningJob.objects.exists()


def test_missing_required_fields_are_named(api, base_model):
    assert_error(api.post("/v1/fine_tuning/jobs", {"model": "attune-tiny"}), 400, param="training_file")
    assert_error(api.post("/v1/fine_tuning/jobs", {"training_file": "file-x"}), 400, param="model")


def test_a_file_with_errors_is_refused_naming_the_file(api, create, demo_jsonl):
    bad = api.upload("bad.jsonl", demo_jsonl["train"] + '{"messages": [{"role": "system", "content": "x"}]}\n')
    error = assert_error(create(training_file=bad.json()["id"]), 400, param="training_file",
                         code="example_missing_assistant_message")
    assert "Line 401" in error["message"]
    few = api.upload("few.jsonl", "\n".join(demo_jsonl["valid"].splitlines()[:3]) + "\n")
    error = assert_error(create(training_file=few.json()["id"]), 400, param="training_file",
                         code="invalid_n_examples")
    assert "3 example(s)" in error["message"]


def test_a_chat_file_cannot_train_a_dpo_job(create):
    assert_error(create(method={"type": "dpo"}), 400, param="training_file", code="invalid_file_format")


def test_malformed_json_is_400(api, base_model):
    error = assert_error(api.post("/v1/fine_tuning/jobs", raw="{not json"), 400, code="invalid_json")
    assert "JSON" in error["message"]
    assert_error(api.post("/v1/fine_tuning/jobs", raw="[1, 2]"), 400)


def test_jobs_page_newest_first_with_exact_cursors(api, create):
    ids = [create().json()["id"] for _ in range(5)]
    seen, after = [], None
    while True:
        page = api.get("/v1/fine_tuning/jobs", {"limit": 2, **({"after": after} if after else {})}).json()
        if not page["data"]:
            assert page["has_more"] is False
            break
        seen += [j["id"] for j in page["data"]]
        assert page["has_more"] == (len(seen) < 5)
        after = page["data"][-1]["id"]
    assert seen == list(reversed(ids))


def test_jobs_filter_by_metadata(api, create):
    a = create(metadata={"team": "a", "run": "1"}).json()["id"]
    create(metadata={"team": "b"})
    create()
    assert [j["id"] for j in api.get("/v1/fine_tuning/jobs", {"metadata[team]": "a"}).json()["data"]] == [a]
    assert [j["id"] for j in api.get("/v1/fine_tuning/jobs", {"metadata[team]": "a", "metadata[run]": "2"})
            .json()["data"]] == []


def test_retrieve_and_unknown_job(api, create):
    job_id = create().json()["id"]
    assert api.get(f"/v1/fine_tuning/jobs/{job_id}").json()["id"] == job_id
    assert_error(api.get("/v1/fine_tuning/jobs/ftjob-nope"), 404, param="fine_tuning_job_id")
    assert_error(api.post("/v1/fine_tuning/jobs/ftjob-nope/cancel"), 404, param="fine_tuning_job_id")


def test_cancel_a_queued_job_then_cancelling_again_is_400(api, create):
    job_id = create().json()["id"]
    job = api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
    assert job["status"] == "cancelled" and job["finished_at"]
    error = assert_error(api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"), 400, param="fine_tuning_job_id",
                         code="invalid_job_state")
    assert "cancelled" in error["message"]


def test_pause_and_resume_a_queued_job(api, create):
    job_id = create().json()["id"]
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/pause").json()["status"] == "paused"
    assert_error(api.post(f"/v1/fine_tuning/jobs/{job_id}/pause"), 400, param="fine_tuning_job_id")
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
    assert_error(api.post(f"/v1/fine_tuning/jobs/{job_id}/resume"), 400, param="fine_tuning_job_id")


def test_events_newest_first_with_exact_cursors(api, create):
    job_id = create().json()["id"]
    first = api.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()
    messages = [e["message"] for e in first["data"]]
    assert messages[-1] == f"Created fine-tuning job: {job_id}"
    assert messages[0] == "Files validated, moving job to queued state"
    event = first["data"][0]
    assert set(event) == {"id", "object", "created_at", "level", "message", "type", "data"}
    assert event["object"] == "fine_tuning.job.event" and event["id"].startswith("ftevent-")
    seen, after = [], None
    while True:
        page = api.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                       {"limit": 1, **({"after": after} if after else {})}).json()
        if not page["data"]:
            break
        seen += [e["id"] for e in page["data"]]
        after = seen[-1]
    assert seen == [e["id"] for e in first["data"]]


def test_checkpoints_highest_step_first_with_every_metric_key(api, create):
    job_id = create().json()["id"]
    job = FineTuningJob.objects.get(public_id=job_id)
    for epoch, step in ((1, 60), (2, 120), (3, 180)):
        Checkpoint.objects.create(job=job, epoch=epoch, step=step, path=f"jobs/{job_id}/checkpoints/e{epoch}",
                                  metrics={"train_loss": 1.0 / epoch, "valid_loss": 1.2 / epoch},
                                  is_final=epoch == 3)
    page = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()
    assert [c["step_number"] for c in page["data"]] == [180, 120, 60]
    assert page["first_id"] == page["data"][0]["id"] and page["has_more"] is False
    checkpoint = page["data"][1]
    assert checkpoint["object"] == "fine_tuning.job.checkpoint" and checkpoint["id"].startswith("ftckpt_")
    assert checkpoint["fine_tuning_job_id"] == job_id
    assert checkpoint["fine_tuned_model_checkpoint"].endswith(":ckpt-step-120")
    assert set(checkpoint["metrics"]) == {"step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                                          "valid_mean_token_accuracy", "full_valid_loss",
                                          "full_valid_mean_token_accuracy"}
    assert checkpoint["metrics"]["step"] == 120 and checkpoint["metrics"]["train_loss"] == 0.5
    second = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", {"limit": 2}).json()
    assert second["has_more"] is True
    rest = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", {"after": second["last_id"]}).json()
    assert [c["step_number"] for c in rest["data"]] == [60]


def test_a_failed_job_carries_its_error_code_message_and_param(api, create):
    job_id = create().json()["id"]
    FineTuningJob.objects.filter(public_id=job_id).update(
        status="failed", error={"code": "invalid_n_examples", "message": "too few", "param": "training_file"})
    job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["error"] == {"code": "invalid_n_examples", "message": "too few", "param": "training_file"}


def test_an_unknown_eval_is_refused_naming_attune_eval(create):
    assert_error(create(attune={"eval": "eval_doesnotexist"}), 400, param="attune.eval", code="eval_not_found")
    assert not FineTuningJob.objects.exists()


def test_an_eval_without_prompts_is_refused_naming_attune_eval(create):
    from tests.factories import make_eval

    bare = make_eval(epoch_data_source={})
    assert_error(create(attune={"eval": bare.public_id}), 400, param="attune.eval", code="eval_without_prompts")
    assert not FineTuningJob.objects.exists()


def test_a_job_stores_its_eval_and_best_checkpoint_metric_and_shows_them_under_attune(api, create):
    from tests.factories import make_eval

    eval_obj = make_eval(criteria=("exact", "polite"))
    job = create(attune={"eval": eval_obj.public_id, "best_checkpoint_metric": "eval:polite"}).json()
    assert job["attune"]["eval"] == eval_obj.public_id
    assert job["attune"]["best_checkpoint_metric"] == "eval:polite"
    stored = FineTuningJob.objects.get(public_id=job["id"])
    assert stored.spec["eval"] == eval_obj.public_id and stored.best_metric == ("eval:polite", True)
    again = api.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert again["attune"]["eval"] == eval_obj.public_id


def test_a_job_on_a_fine_tuned_model_starts_from_it_and_names_it(create, admin_user):
    from tests.factories import make_finished_job

    parent = make_finished_job(admin_user, suffix="intents")
    resp = create(model=parent.fine_tuned_model)
    assert resp.status_code == 200, resp.content
    job = resp.json()
    assert job["model"] == parent.fine_tuned_model
    assert FineTuningJob.objects.get(public_id=job["id"]).init_checkpoint.job == parent
    assert_error(create(model=parent.fine_tuned_model, attune={"lora_r": 8}), 400, param="attune.lora_r")
    assert_error(create(model="ft:attune-tiny:intents:unknown1"), 400, param="model", code="model_not_found")
