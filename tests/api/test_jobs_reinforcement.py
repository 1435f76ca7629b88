"""POST /v1/fine_tuning/jobs with OpenAI's reinforcement method: it is created and echoed, and every bad input
is a 400 whose `param` names the request's field."""

import json

import pytest

from tests.api_client import assert_error
from tests.factories import reinforcement_lines
from training.models import FineTuningJob

LABEL = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
         "reference": "{{item.intent}}", "operation": "eq"}
JUDGE = {"type": "score_model", "name": "judge", "model": "attune-tiny",
         "input": [{"role": "user", "content": "Is {{sample.output_text}} the intent {{item.intent}}? 0 or 1."}]}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "intent", "strict": True, "schema": {
    "type": "object", "properties": {"intent": {"type": "string"}}, "required": ["intent"]}}}


@pytest.fixture
def prompts(api):
    resp = api.upload("prompts.jsonl", reinforcement_lines(24))
    assert resp.status_code == 200 and resp.json()["status"] == "processed", resp.content
    return resp.json()["id"]


@pytest.fixture
def create(api, base_model, prompts):
    def make(grader=LABEL, hyperparameters=None, response_format=None, **body):
        section = {"grader": grader}
        if hyperparameters is not None:
            section["hyperparameters"] = hyperparameters
        if response_format is not None:
            section["response_format"] = response_format
        request = {"model": "attune-tiny", "training_file": prompts,
                   "method": {"type": "reinforcement", "reinforcement": section}, **body}
        return api.post("/v1/fine_tuning/jobs", request)
    return make


def test_a_reinforcement_file_uploads_as_processed_with_its_format(api, prompts):
    from training.models import DataFile

    assert DataFile.objects.get(public_id=prompts).format == "reinforcement"
    mixed = api.upload("mixed.jsonl", reinforcement_lines(10) + json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    assert mixed.status_code == 200 and mixed.json()["status"] == "error"
    assert "Line 11: This line is a supervised chat example" in mixed.json()["status_details"]


def test_a_reinforcement_job_is_created_and_echoes_its_grader_and_hyperparameters(create, prompts):
    resp = create(hyperparameters={"n_epochs": 2, "batch_size": 8, "compute_multiplier": 0.5,
                                   "reasoning_effort": "low", "eval_interval": 3, "eval_samples": 4},
                  attune={"max_completion_length": 32, "temperature": 0.9})
    assert resp.status_code == 200, resp.content
    job = resp.json()
    assert job["status"] == "queued" and job["training_file"] == prompts
    assert job["method"]["type"] == "reinforcement" and set(job["method"]) == {"type", "reinforcement"}
    section = job["method"]["reinforcement"]
    assert section["grader"] == LABEL and section["response_format"] is None
    assert section["hyperparameters"] == {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0,
                                          "compute_multiplier": 0.5, "reasoning_effort": "low",
                                          "eval_interval": 3, "eval_samples": 4}
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0}
    # 8 × compute_multiplier 0.5 = 4 completions per prompt, a divisor of batch_size 8.
    assert job["attune"]["num_generations"] == 4 and job["attune"]["max_completion_length"] == 32
    assert "packing" not in job["attune"] and "eval_interval" not in job["attune"]


def test_auto_hyperparameters_and_a_response_format_are_echoed(api, create):
    job = create(grader=JUDGE, response_format=RESPONSE_FORMAT).json()
    section = job["method"]["reinforcement"]
    assert section["response_format"] == RESPONSE_FORMAT and section["grader"]["model"] == "attune-tiny"
    resolved = section["hyperparameters"]
    assert all(value != "auto" for value in resolved.values())
    assert resolved["batch_size"] % job["attune"]["num_generations"] == 0
    again = api.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert again["method"] == job["method"]


@pytest.mark.parametrize("grader, param, code", [
    ({**LABEL, "operation": "equals"}, "method.reinforcement.grader.operation", "invalid_value"),
    ({**LABEL, "reference": "{{answer}}"}, "method.reinforcement.grader.reference", "unknown_variable"),
    ({key: value for key, value in LABEL.items() if key != "input"}, "method.reinforcement.grader.input",
     "missing_field"),
    ({"type": "multi", "name": "m", "calculate_output": "label", "graders": {
        "label": {**LABEL, "reference": "{{item.intent}} {{itm.x}}"}}},
     "method.reinforcement.grader.graders.label.reference", "unknown_variable"),
    ({"type": "label_model", "name": "l", "model": "attune-tiny", "input": [{"role": "user", "content": "x"}],
      "labels": ["a"], "passing_labels": ["a"]}, "method.reinforcement.grader.type", "not_allowed"),
    ({**JUDGE, "model": "gpt-4o"}, "method.reinforcement.grader.model", "model_not_found"),
    ({"type": "multi", "name": "m", "calculate_output": "j", "graders": {"j": {**JUDGE, "model": "nope"}}},
     "method.reinforcement.grader.graders.j.model", "model_not_found"),
])
def test_a_grader_that_fails_validation_names_its_field(create, grader, param, code):
    error = assert_error(create(grader=grader), 400, param=param, code=code)
    assert error["message"].startswith(param) or "grader '" in error["message"]
    assert not FineTuningJob.objects.exists()


def test_a_missing_grader_is_named(api, base_model, prompts):
    resp = api.post("/v1/fine_tuning/jobs", {"model": "attune-tiny", "training_file": prompts,
                                             "method": {"type": "reinforcement", "reinforcement": {}}})
    assert_error(resp, 400, param="method.reinforcement.grader", code="missing_required_parameter")


@pytest.mark.parametrize("body, param", [
    ({"hyperparameters": {"batch_size": 6}, "attune": {"num_generations": 4}}, "attune.num_generations"),
    ({"hyperparameters": {"eval_samples": 0}}, "method.reinforcement.hyperparameters.eval_samples"),
    ({"hyperparameters": {"compute_multiplier": 11}}, "method.reinforcement.hyperparameters.compute_multiplier"),
    ({"hyperparameters": {"reasoning_effort": "extreme"}}, "method.reinforcement.hyperparameters.reasoning_effort"),
    ({"hyperparameters": {"beta": 0.1}}, "method.reinforcement.hyperparameters.beta"),
    ({"attune": {"packing": True}}, "attune.packing"),
    ({"attune": {"loss_type": "ppo"}}, "attune.loss_type"),
    ({"response_format": {"type": "text"}}, "method.reinforcement.response_format"),
])
def test_a_bad_reinforcement_setting_names_its_field(create, body, param):
    error = assert_error(create(**body), 400, param=param)
    if param == "attune.num_generations":
        assert "must divide batch_size" in error["message"]
    assert not FineTuningJob.objects.exists()


def test_a_supervised_setting_that_is_a_reinforcement_hyperparameter_says_where_it_goes(create):
    error = assert_error(create(attune={"eval_interval": 5}), 400, param="attune.eval_interval")
    assert "give it under method.reinforcement.hyperparameters" in error["message"]


def test_a_line_without_a_field_the_grader_reads_names_the_file_and_line(api, create):
    rows = reinforcement_lines(11) + json.dumps({"messages": [{"role": "user", "content": "hi"}], "label": 1}) + "\n"
    validation = api.upload("held.jsonl", rows).json()["id"]
    error = assert_error(create(validation_file=validation), 400, param="validation_file", code="missing_item_field")
    assert error["message"] == (f"Line 12 of validation file held.jsonl ({validation}) has no field 'intent', "
                                "which grader 'label' reads as {{item.intent}}.")


def test_a_supervised_file_cannot_train_a_reinforcement_job(api, base_model, train_file):
    resp = api.post("/v1/fine_tuning/jobs", {"model": "attune-tiny", "training_file": train_file, "method": {
        "type": "reinforcement", "reinforcement": {"grader": LABEL}}})
    error = assert_error(resp, 400, param="training_file", code="invalid_file_format")
    assert "reinforcement prompts" in error["message"]


def test_a_reinforcement_file_cannot_train_a_supervised_job(api, base_model, prompts):
    resp = api.post("/v1/fine_tuning/jobs", {"model": "attune-tiny", "training_file": prompts})
    error = assert_error(resp, 400, param="training_file", code="invalid_file_format")
    assert "holds reinforcement prompts" in error["message"]


def test_a_grader_under_another_method_is_refused(api, base_model, train_file):
    resp = api.post("/v1/fine_tuning/jobs", {"model": "attune-tiny", "training_file": train_file, "method": {
        "type": "supervised", "supervised": {"grader": LABEL}}})
    assert_error(resp, 400, param="method.supervised.grader")
