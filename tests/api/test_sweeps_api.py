"""/v1/attune/sweeps: create (the job request's fields and params, plus `sweep`), list, retrieve, cancel; the
official SDK's generic post and get reach it."""

import httpx
import openai
import pytest

from tests.api_client import assert_error
from training.models import FineTuningJob, Sweep


@pytest.fixture
def create(api, base_model, train_file):
    def make(sweep, **body):
        return api.post("/v1/attune/sweeps", {"model": "attune-tiny", "training_file": train_file, "sweep": sweep,
                                              **body})
    return make


def test_a_grid_sweep_answers_the_sweep_with_its_full_job_objects(api, create, train_file):
    resp = create({"mode": "grid", "fields": {"learning_rate_multiplier": [0.5, 2], "lora_r": [4, 8]}},
                  suffix="grid", seed=3, metadata={"team": "support"},
                  method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}})
    assert resp.status_code == 200, resp.content
    sweep = resp.json()
    assert sweep["id"].startswith("sweep-") and sweep["object"] == "attune.sweep"
    assert sweep["status"] == "active" and sweep["job_counts"] == {"queued": 4}
    assert (sweep["mode"], sweep["n"], sweep["seed"]) == ("grid", 4, None)
    assert sweep["metric"] == {"name": "full_valid_loss", "higher_is_better": False}
    jobs = sweep["jobs"]
    assert [job["object"] for job in jobs] == ["fine_tuning.job"] * 4
    assert jobs[0] == api.get(f"/v1/fine_tuning/jobs/{jobs[0]['id']}").json()
    assert [(j["hyperparameters"]["learning_rate_multiplier"], j["attune"]["lora_r"]) for j in jobs] == [
        (0.5, 4), (0.5, 8), (2, 4), (2, 8)]
    assert {j["hyperparameters"]["n_epochs"] for j in jobs} == {2} and {j["seed"] for j in jobs} == {3}
    assert jobs[1]["metadata"] == {"team": "support", "attune_sweep": sweep["id"],
                                   "attune_sweep_values": "learning_rate_multiplier=0.5, lora_r=8"}
    assert [row["job"] for row in sweep["ranking"]] == [job["id"] for job in jobs]  # none has a value yet


def test_a_random_sweep_stores_its_seed_and_draws_the_same_again(create):
    definition = {"mode": "random", "n": 3, "seed": 11, "fields": {"lora_r": {"min": 4, "max": 64}}}
    first, second = create(definition).json(), create(definition).json()
    assert first["seed"] == 11 and first["n"] == 3
    assert [row["values"] for row in first["ranking"]] == [row["values"] for row in second["ranking"]]


@pytest.mark.parametrize("sweep, body, param", [
    ({"fields": {"learning_rate": [1, 2]}}, {}, "sweep.fields.learning_rate"),
    ({"fields": {"learning_rate_multiplier": [0.5, 1, 500]}}, {}, "sweep.fields.learning_rate_multiplier[2]"),
    ({"fields": {"beta": [0.1]}}, {}, "sweep.fields.beta"),
    ({"fields": {"lora_r": [4], "lora_alpha": [8], "lora_dropout": [0.1], "weight_decay": [0.1]}}, {},
     "sweep.fields"),
    ({"fields": {"lora_r": []}}, {}, "sweep.fields.lora_r"),
    ({"fields": {"lora_r": [1, 2, 3, 4, 5], "lora_alpha": [1, 2, 3]}}, {}, "sweep.fields"),
    ({"mode": "random", "n": 100, "fields": {"lora_r": {"min": 1, "max": 8}}}, {}, "sweep.n"),
    ({"mode": "random", "n": 2, "fields": {"lora_r": {"min": 1, "max": 9999}}}, {}, "sweep.fields.lora_r.max"),
    ({"fields": {"lora_r": [4]}}, {"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"fields": {"lora_r": [4]}}, {"attune": {"lora_alpha": 0}}, "attune.lora_alpha"),
    ({"fields": {"lora_r": [4]}}, {"training_file": "file-nope"}, "training_file"),
    ({"fields": {"lora_r": [4]}}, {"metadata": {f"k{i}": "v" for i in range(15)}}, "metadata"),
    ("grid", {}, "sweep"),
])
def test_a_bad_request_names_its_param_and_makes_nothing(create, sweep, body, param):
    assert_error(create(sweep, **body), 400, param=param)
    assert Sweep.objects.count() == 0 and FineTuningJob.objects.count() == 0


def test_a_request_without_a_sweep_is_refused(api, base_model, train_file):
    resp = api.post("/v1/attune/sweeps", {"model": "attune-tiny", "training_file": train_file})
    assert_error(resp, 400, param="sweep", code="missing_required_parameter")


def test_list_newest_first_with_has_more_retrieve_and_unknown(api, create):
    ids = [create({"fields": {"lora_r": [r]}}).json()["id"] for r in (4, 8, 16)]
    page = api.get("/v1/attune/sweeps", {"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [s["id"] for s in page["data"]] == [ids[2], ids[1]]
    rest = api.get("/v1/attune/sweeps", {"limit": 2, "after": ids[1]}).json()
    assert [s["id"] for s in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert api.get(f"/v1/attune/sweeps/{ids[0]}").json()["id"] == ids[0]
    assert_error(api.get("/v1/attune/sweeps/sweep-nope"), 404, param="sweep_id")


def test_cancel_cancels_every_job_that_has_not_ended(api, create):
    sweep = create({"fields": {"lora_r": [4, 8]}}).json()
    FineTuningJob.objects.filter(public_id=sweep["jobs"][0]["id"]).update(status="succeeded")
    cancelled = api.post(f"/v1/attune/sweeps/{sweep['id']}/cancel").json()
    assert [job["status"] for job in cancelled["jobs"]] == ["succeeded", "cancelled"]
    assert cancelled["status"] == "ended" and cancelled["job_counts"] == {"succeeded": 1, "cancelled": 1}


def test_evaluators_keys_are_refused(evaluator_api, api, create, base_model, train_file):
    sweep_id = create({"fields": {"lora_r": [4, 8]}}).json()["id"]
    body = {"model": "attune-tiny", "training_file": train_file, "sweep": {"fields": {"lora_r": [4]}}}
    assert_error(evaluator_api.post("/v1/attune/sweeps", body), 403)
    assert_error(evaluator_api.get("/v1/attune/sweeps"), 403)
    assert_error(evaluator_api.get(f"/v1/attune/sweeps/{sweep_id}"), 403)
    assert_error(evaluator_api.post(f"/v1/attune/sweeps/{sweep_id}/cancel"), 403)
    assert Sweep.objects.count() == 1 and FineTuningJob.objects.filter(status="cancelled").count() == 0


def test_the_openapi_schema_describes_the_sweep_request_with_the_job_fields(client, db):
    schemas = client.get("/v1/openapi.json").json()["components"]["schemas"]
    request = schemas["CreateAttuneSweepRequest"]
    assert set(schemas["CreateFineTuningJobRequest"]["properties"]) | {"sweep"} == set(request["properties"])
    assert "sweep" in request["required"]
    assert "learning_rate_multiplier" in schemas["SweepDefinition"]["properties"]["fields"]["propertyNames"]["enum"]


def _through_django(client):
    """An httpx transport that hands each request to Django's test client: the SDK talks to the app in this
    process and its test database, with no server."""
    def handle(request):
        headers = {key: value for key, value in request.headers.items()
                   if key.lower() not in ("content-length", "content-type", "host")}
        resp = client.generic(request.method, request.url.raw_path.decode(), request.content,
                              content_type=request.headers.get("content-type", ""), headers=headers)
        return httpx.Response(resp.status_code, headers=dict(resp.items()), content=resp.content)
    return httpx.MockTransport(handle)


@pytest.fixture
def sdk(client, admin_key):
    return openai.OpenAI(base_url="http://testserver/v1", api_key=admin_key, max_retries=0,
                         http_client=httpx.Client(transport=_through_django(client)))


def test_the_openai_sdk_creates_reads_and_cancels_a_sweep(sdk, base_model, train_file):
    resp = sdk.post("/attune/sweeps", cast_to=httpx.Response, body={
        "model": "attune-tiny", "training_file": train_file,
        "sweep": {"mode": "grid", "fields": {"n_epochs": [1, 2]}}})
    assert resp.status_code == 200
    sweep_id = resp.json()["id"]
    read = sdk.get(f"/attune/sweeps/{sweep_id}", cast_to=object)
    assert read["object"] == "attune.sweep" and len(read["jobs"]) == 2
    assert sdk.fine_tuning.jobs.retrieve(read["jobs"][0]["id"]).hyperparameters.n_epochs == 1
    assert sdk.post(f"/attune/sweeps/{sweep_id}/cancel", cast_to=object)["status"] == "ended"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.post("/attune/sweeps", cast_to=object, body={
            "model": "attune-tiny", "training_file": train_file,
            "sweep": {"fields": {"learning_rate_multiplier": [1, -1]}}})
    assert caught.value.body["param"] == "sweep.fields.learning_rate_multiplier[1]"


def test_the_openai_sdk_with_an_evaluators_key_is_refused(client, evaluator_key, base_model):
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=evaluator_key, max_retries=0,
                        http_client=httpx.Client(transport=_through_django(client)))
    with pytest.raises(openai.PermissionDeniedError):
        sdk.get("/attune/sweeps", cast_to=object)
