"""/v1/models (names with ':' raw or percent-encoded), unknown routes, wrong methods, the schema route."""

import pytest

from tests.api_client import assert_error
from training.models import Checkpoint, DataFile, FineTuningJob


@pytest.fixture
def finished_job(base_model, train_file, settings):
    job = FineTuningJob.objects.create(
        base_model=base_model, training_file=DataFile.objects.get(public_id=train_file), suffix="intents",
        spec={"model": "attune-tiny", "training_file": train_file}, status="succeeded")
    job.fine_tuned_model = job.model_name()
    job.save()
    for epoch, step in ((1, 60), (2, 120)):
        folder = settings.ATTUNE_HOME / "jobs" / job.public_id / "checkpoints" / f"epoch-{epoch}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        Checkpoint.objects.create(job=job, epoch=epoch, step=step, is_final=epoch == 2,
                                  path=str(folder.relative_to(settings.ATTUNE_HOME)))
    return job


def test_models_list_base_fine_tuned_and_checkpoint_names(api, finished_job):
    resp = api.get("/v1/models")
    assert resp.json()["object"] == "list"
    ids = [m["id"] for m in resp.json()["data"]]
    step_60 = finished_job.checkpoints.get(step=60).model_name
    assert ids == ["attune-tiny", step_60, finished_job.fine_tuned_model]
    assert finished_job.fine_tuned_model.startswith("ft:attune-tiny:intents:")
    assert step_60.endswith(":ckpt-step-60")
    model = resp.json()["data"][1]
    assert set(model) == {"id", "object", "created", "owned_by"} and model["object"] == "model"


@pytest.mark.parametrize("encode", [False, True])
def test_a_model_name_with_colons_is_found_raw_or_percent_encoded(api, finished_job, encode):
    for name in (finished_job.fine_tuned_model, finished_job.checkpoints.get(step=60).model_name):
        path = name.replace(":", "%3A") if encode else name
        resp = api.get(f"/v1/models/{path}")
        assert resp.status_code == 200, resp.content
        assert resp.json()["id"] == name


def test_a_base_model_is_found(api, base_model):
    assert api.get("/v1/models/attune-tiny").json() == {
        "id": "attune-tiny", "object": "model", "created": int(base_model.created_at.timestamp()),
        "owned_by": "system"}


def test_an_unknown_model_is_404_naming_the_model(api, finished_job):
    assert_error(api.get("/v1/models/gpt-4o-mini"), 404, param="model", code="model_not_found")
    assert_error(api.get(f"/v1/models/{finished_job.fine_tuned_model}x"), 404, param="model")
    assert_error(api.get("/v1/models/ft:attune-tiny:intents:AAAAAAAA:ckpt-step-60"), 404, param="model")


def test_deleting_a_checkpoint_model_removes_its_weights(api, finished_job):
    checkpoint = finished_job.checkpoints.get(step=60)
    folder = checkpoint.full_path
    assert folder.exists()
    resp = api.delete(f"/v1/models/{checkpoint.model_name}")
    assert resp.json() == {"id": checkpoint.model_name, "object": "model", "deleted": True}
    assert not folder.exists() and not Checkpoint.objects.filter(pk=checkpoint.pk).exists()
    assert checkpoint.model_name not in [m["id"] for m in api.get("/v1/models").json()["data"]]
    assert_error(api.get(f"/v1/models/{checkpoint.model_name}"), 404, param="model")


def test_deleting_the_fine_tuned_model_keeps_the_job(api, finished_job):
    name = finished_job.fine_tuned_model
    assert api.delete(f"/v1/models/{name}").json()["deleted"] is True
    assert_error(api.get(f"/v1/models/{name}"), 404, param="model")
    assert api.get(f"/v1/fine_tuning/jobs/{finished_job.public_id}").json()["fine_tuned_model"] == name


def test_a_base_model_cannot_be_deleted_through_the_api(api, base_model):
    assert_error(api.delete("/v1/models/attune-tiny"), 400, param="model", code="model_not_deletable")


def test_a_checkpoint_of_a_running_job_cannot_be_deleted(api, finished_job):
    FineTuningJob.objects.filter(pk=finished_job.pk).update(status="running")
    name = finished_job.checkpoints.get(step=60).model_name
    assert_error(api.delete(f"/v1/models/{name}"), 400, param="model", code="model_in_use")


@pytest.mark.parametrize("method, path", [("get", "/v1/nothing"), ("post", "/v1/fine_tuning/alpha/graders/nothing"),
                                          ("get", "/v1/files/file-x/content/more"), ("delete", "/v1/")])
def test_an_unknown_route_is_a_404_envelope(api, method, path):
    assert_error(getattr(api, method)(path), 404, code="unknown_url")


@pytest.mark.parametrize("method, path", [("delete", "/v1/fine_tuning/jobs"), ("get", "/v1/chat/completions"),
                                          ("get", "/v1/fine_tuning/jobs/ftjob-x/cancel"),
                                          ("post", "/v1/models"), ("post", "/v1/openapi.json")])
def test_a_wrong_method_is_a_405_envelope(api, method, path):
    resp = getattr(api, method)(path)
    assert_error(resp, 405, code="method_not_allowed")


def test_every_route_is_in_the_openapi_schema(client, db):
    from django.urls import get_resolver

    schema = client.get("/v1/openapi.json").json()
    described = set(schema["paths"])
    resolver = get_resolver().url_patterns
    api_patterns = next(p for p in resolver if str(p.pattern) == "v1/").url_patterns
    routes = set()
    for pattern in api_patterns:
        route = str(pattern.pattern)
        if route.startswith("^") or route == "openapi.json":
            continue
        routes.add("/" + route.replace("<str:file_id>", "{file_id}").replace("<str:job_id>", "{fine_tuning_job_id}")
                   .replace("<path:model_id>", "{model}").replace("<str:eval_id>", "{eval_id}")
                   .replace("<str:run_id>", "{run_id}").replace("<str:item_id>", "{output_item_id}")
                   .replace("<str:sweep_id>", "{sweep_id}"))
    assert routes == described
    attune = schema["components"]["schemas"]["AttuneJobSettings"]["properties"]
    assert {"adapter", "lora_r", "lora_alpha", "max_seq_length"} <= set(attune)
    assert not {"model", "n_epochs", "output_dir", "job_id"} & set(attune)


def test_responses_carry_a_request_id(api, base_model):
    assert api.get("/v1/models")["x-request-id"].startswith("req_")


def test_nul_characters_are_refused_before_the_database(api, base_model):
    assert_error(api.get("/v1/files/file-%00"), 400, code="invalid_url")
    assert_error(api.get("/v1/fine_tuning/jobs", {"after": "a\x00"}), 400, code="invalid_url")
    assert_error(api.post("/v1/fine_tuning/jobs", raw='{"model": "a\\u0000", "training_file": "x"}'), 400)
