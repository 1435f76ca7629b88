"""/v1/evals and the graders routes through the test client: the shapes OpenAI's SDK reads, the runs a
worker generates and grades, and a clear error for every bad input."""

import json

import pytest

from tests.api_client import ApiClient, assert_error

LABEL_CHECK = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
               "reference": "{{item.expected}}", "operation": "eq"}
ITEM_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "expected": {"type": "string"}}}


@pytest.fixture
def api(client, admin_user):
    return ApiClient.for_user(client, admin_user)


def make_eval(api, criteria=None, **extra):
    body = {"name": "intents", "data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA,
                                                       "include_sample_schema": True},
            "testing_criteria": criteria or [LABEL_CHECK], **extra}
    response = api.post("/v1/evals", body)
    assert response.status_code == 200, response.content
    return response.json()


def jsonl_rows(pairs):
    return [{"item": {"question": f"q{i}", "expected": expected}, "sample": {"output_text": output}}
            for i, (output, expected) in enumerate(pairs)]


def test_an_eval_is_created_listed_updated_and_deleted(api, db):
    created = make_eval(api, metadata={"team": "support"})
    assert created["object"] == "eval" and created["id"].startswith("eval_")
    assert created["data_source_config"]["type"] == "custom"
    assert set(created["data_source_config"]["schema"]["properties"]) == {"item", "sample"}
    assert created["testing_criteria"][0]["name"] == "label"
    page = api.get("/v1/evals").json()
    assert [e["id"] for e in page["data"]] == [created["id"]] and page["has_more"] is False
    updated = api.post(f"/v1/evals/{created['id']}", {"name": "renamed", "metadata": {"v": "2"}}).json()
    assert updated["name"] == "renamed" and updated["metadata"] == {"v": "2"}
    assert api.get(f"/v1/evals/{created['id']}").json()["name"] == "renamed"
    deleted = api.delete(f"/v1/evals/{created['id']}").json()
    assert deleted == {"object": "eval.deleted", "deleted": True, "eval_id": created["id"]}
    assert_error(api.get(f"/v1/evals/{created['id']}"), 404, param="eval_id")


def test_a_jsonl_run_grades_each_sample_and_counts_passes(api, run_queue):
    evaluation = make_eval(api, [LABEL_CHECK, {"type": "python", "name": "short",
                                               "source": "def grade(sample, item):\n"
                                                         "    return 1.0 if len(sample['output_text']) < 8 else 0.0\n",
                                               "pass_threshold": 0.5}])
    rows = jsonl_rows([("refund", "refund"), ("tracking", "refund"), ("address", "address")])
    run = api.post(f"/v1/evals/{evaluation['id']}/runs", {
        "name": "samples", "data_source": {"type": "jsonl", "source": {"type": "file_content", "content": rows}}})
    assert run.status_code == 200, run.content
    run = run.json()
    assert run["object"] == "eval.run" and run["status"] == "queued"
    assert run_queue() == 1
    done = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}").json()
    assert done["status"] == "completed"
    assert done["result_counts"] == {"total": 3, "passed": 2, "failed": 1, "errored": 0}
    per = {row["testing_criteria"]: row for row in done["per_testing_criteria_results"]}
    assert (per["label"]["passed"], per["label"]["failed"]) == (2, 1)
    assert (per["short"]["passed"], per["short"]["failed"]) == (2, 1)  # "tracking" has 8 characters
    assert per["label"]["mean_score"] == pytest.approx(2 / 3)
    items = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}/output_items").json()["data"]
    assert [i["datasource_item_id"] for i in items] == [0, 1, 2]
    assert [i["status"] for i in items] == ["pass", "fail", "pass"]
    first = items[0]
    assert first["object"] == "eval.run.output_item" and first["datasource_item"]["expected"] == "refund"
    assert [(r["name"], r["score"], r["passed"]) for r in first["results"]] == [("label", 1.0, True),
                                                                                 ("short", 1.0, True)]
    failed = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}/output_items", {"status": "fail"}).json()
    assert [i["datasource_item_id"] for i in failed["data"]] == [1]
    one = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}/output_items/{first['id']}").json()
    assert one["id"] == first["id"]


def test_a_completions_run_generates_with_each_snapshot_in_one_batch(api, snapshots, run_queue, monkeypatch):
    from playground.inference import get_backend

    evaluation = make_eval(api, [{"type": "string_check", "name": "nonempty", "input": "{{sample.output_text}}",
                                  "reference": "", "operation": "ne"}])
    rows = [{"item": {"question": f"where is parcel {i}?", "expected": "tracking"}} for i in range(3)]
    names = [c.model_name for c in snapshots.checkpoints[:2]] + ["tiny"]
    run_ids = []
    for name in names:
        body = {"data_source": {"type": "completions", "model": name,
                                "source": {"type": "file_content", "content": rows},
                                "input_messages": {"type": "template", "template": [
                                    {"role": "system", "content": "Classify the request."},
                                    {"role": "user", "content": "{{item.question}}"}]},
                                "sampling_params": {"max_completion_tokens": 4, "temperature": 0, "seed": 1}}}
        response = api.post(f"/v1/evals/{evaluation['id']}/runs", body)
        assert response.status_code == 200, response.content
        run_ids.append(response.json()["id"])
    backend = get_backend()
    calls = []
    original = backend.generate

    def counting(targets, messages, params):
        calls.append([t.name for t in targets])
        return original(targets, messages, params)

    monkeypatch.setattr(backend, "generate", counting)
    assert run_queue() == 1  # the three runs are one group
    assert calls == [names] * 3  # one request of three snapshots per prompt
    for run_id, name in zip(run_ids, names, strict=True):
        run = api.get(f"/v1/evals/{evaluation['id']}/runs/{run_id}").json()
        assert run["status"] == "completed" and run["model"] == name
        assert run["result_counts"]["total"] == 3
        usage = run["per_model_usage"][0]
        assert usage["model_name"] == name and usage["invocation_count"] == 3 and usage["completion_tokens"] > 0
        item = api.get(f"/v1/evals/{evaluation['id']}/runs/{run_id}/output_items").json()["data"][0]
        assert item["sample"]["input"][1] == {"role": "user", "content": "where is parcel 0?"}
        assert item["sample"]["model"] == name and item["sample"]["max_completion_tokens"] == 4


def test_a_run_can_be_canceled_before_it_starts_and_then_deleted(api, run_queue):
    evaluation = make_eval(api)
    run = api.post(f"/v1/evals/{evaluation['id']}/runs", {"data_source": {
        "type": "jsonl", "source": {"type": "file_content", "content": jsonl_rows([("a", "a")])}}}).json()
    canceled = api.post(f"/v1/evals/{evaluation['id']}/runs/{run['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    assert run_queue() == 0
    listed = api.get(f"/v1/evals/{evaluation['id']}/runs", {"status": "canceled"}).json()
    assert [r["id"] for r in listed["data"]] == [run["id"]]
    deleted = api.delete(f"/v1/evals/{evaluation['id']}/runs/{run['id']}").json()
    assert deleted == {"object": "eval.run.deleted", "deleted": True, "run_id": run["id"]}
    assert_error(api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}"), 404, param="run_id")


def test_a_run_reads_its_items_from_an_uploaded_evals_file(api, run_queue):
    lines = "".join(json.dumps({"item": {"question": "q", "expected": e}, "sample": {"output_text": o}}) + "\n"
                    for o, e in (("x", "x"), ("y", "z")))
    uploaded = api.upload("items.jsonl", lines, purpose="evals").json()
    assert uploaded["purpose"] == "evals" and uploaded["status"] == "processed"
    evaluation = make_eval(api)
    run = api.post(f"/v1/evals/{evaluation['id']}/runs", {"data_source": {
        "type": "jsonl", "source": {"type": "file_id", "id": uploaded["id"]}}}).json()
    run_queue()
    done = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}").json()
    assert done["result_counts"] == {"total": 2, "passed": 1, "failed": 1, "errored": 0}


def test_a_python_grader_that_loops_errors_its_item_and_the_run_goes_on(api, run_queue, settings):
    settings.PYTHON_GRADER_CPU_SECONDS = 1
    source = "def grade(sample, item):\n    if sample['output_text'] == 'loop':\n        while True:\n            pass\n" \
             "    return 1.0\n"
    evaluation = make_eval(api, [{"type": "python", "name": "py", "source": source, "pass_threshold": 1}])
    run = api.post(f"/v1/evals/{evaluation['id']}/runs", {"data_source": {"type": "jsonl", "source": {
        "type": "file_content", "content": jsonl_rows([("ok", "a"), ("loop", "a"), ("fine", "a")])}}}).json()
    run_queue()
    done = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}").json()
    assert done["status"] == "completed"
    assert done["result_counts"] == {"total": 3, "passed": 2, "failed": 0, "errored": 1}
    items = api.get(f"/v1/evals/{evaluation['id']}/runs/{run['id']}/output_items").json()["data"]
    assert items[1]["status"] == "error" and "python_grader_runtime_error" in items[1]["results"][0]["error"]


@pytest.mark.parametrize("body, param", [
    ({"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA}}, "testing_criteria"),
    ({"data_source_config": {"type": "logs"}, "testing_criteria": [LABEL_CHECK]}, "data_source_config.type"),
    ({"data_source_config": {"type": "custom"}, "testing_criteria": [LABEL_CHECK]},
     "data_source_config.item_schema"),
    ({"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA},
      "testing_criteria": [{**LABEL_CHECK, "input": "{{sample.nope}}"}]}, "testing_criteria[0].input"),
    ({"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA},
      "testing_criteria": [{"type": "python", "name": "p", "source": "def grade(sample, item):\n    return (\n"}]},
     "testing_criteria[0].source"),
    ({"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA},
      "testing_criteria": [{"type": "score_model", "name": "judge", "model": "no-such-model",
                            "input": [{"role": "user", "content": "rate {{sample.output_text}}"}]}]},
     "testing_criteria[0].model"),
    ({"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA},
      "testing_criteria": [LABEL_CHECK, LABEL_CHECK]}, "testing_criteria[1].name"),
    ({"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA}, "testing_criteria": [LABEL_CHECK],
      "colour": "red"}, "colour"),
])
def test_a_bad_eval_names_its_field_and_stores_nothing(api, db, body, param):
    from evals.models import Eval

    error = assert_error(api.post("/v1/evals", body), 400, param=param)
    assert error["message"]
    assert not Eval.objects.exists()


def test_a_bad_formula_names_where_it_fails(api, db):
    body = {"grader": {"type": "multi", "name": "m", "calculate_output": "a + * b", "graders": {
        "a": LABEL_CHECK, "b": {**LABEL_CHECK, "name": "b"}}}}
    error = assert_error(api.post("/v1/fine_tuning/alpha/graders/validate", body), 400,
                         param="grader.calculate_output")
    assert "position" in error["message"] or "column" in error["message"] or "at" in error["message"]


@pytest.mark.parametrize("data_source, param", [
    ({"type": "completions", "source": {"type": "file_content", "content": [{"item": {}}]},
      "input_messages": {"type": "item_reference", "item_reference": "item.messages"}}, "data_source.model"),
    ({"type": "completions", "model": "nope", "source": {"type": "file_content", "content": [{"item": {}}]},
      "input_messages": {"type": "item_reference", "item_reference": "item.messages"}}, "data_source.model"),
    ({"type": "jsonl", "source": {"type": "file_id", "id": "file-nope"}}, "data_source.source.id"),
    ({"type": "jsonl", "source": {"type": "file_content", "content": [{"sample": {}}]}},
     "data_source.source.content[0].item"),
    ({"type": "completions", "model": "tiny", "source": {"type": "file_content", "content": [{"item": {}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{sample.output_text}}"}]}},
     "data_source.input_messages.template[0].content"),
    ({"type": "completions", "model": "tiny", "source": {"type": "file_content", "content": [{"item": {}}]},
      "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
      "sampling_params": {"temperature": 9}}, "data_source.sampling_params.temperature"),
    ({"type": "responses"}, "data_source.type"),
])
def test_a_bad_run_names_its_field_and_queues_nothing(api, snapshots, data_source, param):
    from evals.models import EvalRun

    evaluation = make_eval(api)
    assert_error(api.post(f"/v1/evals/{evaluation['id']}/runs", {"data_source": data_source}), 400, param=param)
    assert not EvalRun.objects.exists()


def test_graders_run_returns_openais_response_shape(api, db):
    body = {"grader": {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}",
                       "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"},
            "model_sample": "refund", "item": {"answer": "refund"}}
    result = api.post("/v1/fine_tuning/alpha/graders/run", body).json()
    assert result["reward"] == pytest.approx(1.0)
    assert result["metadata"]["type"] == "text_similarity" and result["metadata"]["name"] == "fuzzy"
    assert result["metadata"]["errors"]["invalid_variable_error"] is False
    missing = api.post("/v1/fine_tuning/alpha/graders/run", {**body, "item": {}}).json()
    assert missing["reward"] == 0 and missing["metadata"]["errors"]["invalid_variable_error"] is True
    validated = api.post("/v1/fine_tuning/alpha/graders/validate", {"grader": body["grader"]}).json()
    assert validated["grader"]["evaluation_metric"] == "fuzzy_match"


def test_an_evaluator_cannot_reach_evals(client, evaluator_user, db):
    evaluator = ApiClient.for_user(client, evaluator_user)
    assert_error(evaluator.get("/v1/evals"), 403, code="permission_denied")


def test_a_label_model_judged_by_a_snapshot_always_answers_one_of_its_labels(api, snapshots):
    labels = ["tracking", "refund", "cancel"]
    for sample in ("where is my parcel?", "give me my money back", "stop my order"):
        body = {"grader": {"type": "label_model", "name": "intent", "model": snapshots.checkpoints[0].model_name,
                           "input": [{"role": "system", "content": "Answer with the intent."},
                                     {"role": "user", "content": "{{sample.output_text}}"}],
                           "labels": labels, "passing_labels": ["refund"]},
                "model_sample": sample}
        result = api.post("/v1/fine_tuning/alpha/graders/run", body).json()
        errors = result["metadata"]["errors"]
        assert not any(v is True for v in errors.values()), errors  # never an answer outside the labels
        assert result["reward"] in (0, 1)
        usage = result["model_grader_token_usage_per_model"]
        assert list(usage) == [snapshots.checkpoints[0].model_name]


def test_the_builtin_backend_answers_the_likeliest_choice(builtin_backend, tiny_models):
    """The constrained answer is the choice whose tokens the model scores highest after the prompt."""
    import torch

    from playground.inference import SamplingParams
    from playground.inference.builtin import _load_model, render_prompt
    from tests.playground.tiny_models import answers, tiny_snapshots

    base = tiny_snapshots(tiny_models, n_adapters=0)[0]
    messages = [{"role": "user", "content": "where is my parcel?"}]
    choices = ("tracking", "refund", "hello there")
    [final] = answers(builtin_backend, [base], messages, SamplingParams(choices=choices))
    assert final.type == "done" and final.text in choices
    loaded = _load_model(base.base_path)
    prompt = render_prompt(loaded.tokenizer, messages)
    scores = []
    for choice in choices:
        ids = loaded.tokenizer(choice, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logprobs = torch.log_softmax(loaded.model(torch.tensor([prompt + ids])).logits.float(), -1)[0]
        scores.append(sum(float(logprobs[len(prompt) - 1 + n, t]) for n, t in enumerate(ids)))
    assert final.text == choices[max(range(3), key=scores.__getitem__)]


def test_a_sample_too_long_to_grade_in_one_request_is_refused(api, db):
    body = {"grader": {"type": "text_similarity", "name": "f", "input": "{{sample.output_text}}", "reference": "x",
                       "evaluation_metric": "fuzzy_match"}, "model_sample": "a" * 100_001}
    assert_error(api.post("/v1/fine_tuning/alpha/graders/run", body), 400, param="model_sample")
