"""The Evals pages through the test client: who may see them, the new-eval form and its errors, Try it,
runs on snapshots, the results table, the items page and the graders-against-people page."""

import pytest

from evals.models import Eval, EvalRun, OutputItem
from tests import factories
from tests.evals.conftest import ITEMS

pytestmark = pytest.mark.django_db


def form_data(prompt_file, **extra):
    data = {"name": "intent accuracy", "prompt_file": prompt_file.public_id, "prompt_mode": "messages",
            "max_completion_tokens": "32", "temperature": "0", "top_p": "1", "seed": "7",
            "grader-TOTAL_FORMS": "1", "grader-INITIAL_FORMS": "0", "grader-MIN_NUM_FORMS": "1",
            "grader-MAX_NUM_FORMS": "20", "grader-0-type": "string_check", "grader-0-name": "exact",
            "grader-0-input": "{{sample.output_text}}", "grader-0-reference": "{{item.answer}}",
            "grader-0-operation": "eq"}
    data.update(extra)
    return data


def make_run(eval_obj, model, scores, status=EvalRun.COMPLETED):
    """A run of `model` whose items have the given (exact, short) scores; exact passes at 1."""
    run = EvalRun.objects.create(eval=eval_obj, model=model, status=status, data_source={"type": "completions"},
                                 n_items=len(scores), n_done=len(scores))
    for i, (exact, short) in enumerate(scores):
        results = [{"name": "exact", "type": "string_check", "score": exact, "passed": exact == 1},
                   {"name": "short", "type": "python", "score": short, "passed": short >= 0.5}]
        status_of = OutputItem.PASS if exact == 1 and short >= 0.5 else OutputItem.FAIL
        OutputItem.objects.create(run=run, index=i, datasource_item=ITEMS[i], status=status_of, results=results,
                                  sample={"input": ITEMS[i]["messages"], "output_text": f"{model} says {i}"})
    return run


# --- access ----------------------------------------------------------------------------------------

def page_urls(eval_obj, task_id):
    e = eval_obj.public_id
    return ["/evals/", "/evals/new/", f"/evals/{e}/", f"/evals/{e}/items/", f"/evals/agreement/{task_id}/"]


@pytest.fixture
def task(admin_user):
    from playground.models import RatingTask

    return RatingTask.objects.create(name="tone", created_by=admin_user, snapshot_names=["attune-tiny", "attune-small"],
                                     n_items=len(ITEMS), status=RatingTask.READY)


def test_every_evals_page_renders_for_an_admin(admin_client, eval_obj, task):
    for url in page_urls(eval_obj, task.public_id):
        resp = admin_client.get(url)
        assert resp.status_code == 200, url
    assert b'href="/evals/"' in admin_client.get("/jobs/").content  # the nav link


def test_evaluators_are_refused_every_evals_page(evaluator_client, eval_obj, task):
    for url in page_urls(eval_obj, task.public_id):
        assert evaluator_client.get(url).status_code == 403, url
    assert evaluator_client.post("/evals/try/", {"try_sample": "x"}).status_code == 403
    assert evaluator_client.post(f"/evals/{eval_obj.public_id}/runs/", {"snapshots": ["x"]}).status_code == 403
    assert b'href="/evals/"' not in evaluator_client.get("/playground/tasks/").content


def test_anonymous_users_go_to_login(client, eval_obj):
    resp = client.get(f"/evals/{eval_obj.public_id}/")
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")


# --- a new eval ------------------------------------------------------------------------------------

def test_the_form_stores_the_criteria_and_the_epoch_data_source(admin_client, prompt_file):
    resp = admin_client.post("/evals/new/", form_data(prompt_file))
    assert resp.status_code == 302
    created = Eval.objects.get()
    assert resp["Location"] == f"/evals/{created.public_id}/"
    assert created.name == "intent accuracy"
    assert created.testing_criteria == [{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                                         "reference": "{{item.answer}}", "operation": "eq"}]
    assert created.epoch_data_source == {
        "type": "completions", "source": {"type": "file_id", "id": prompt_file.public_id},
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "sampling_params": {"max_completion_tokens": 32, "temperature": 0.0, "top_p": 1.0, "seed": 7}}
    assert created.data_source_config["item_schema"] == {
        "type": "object", "properties": {"messages": {"type": "array"}, "answer": {"type": "string"}}}


def test_a_template_prompt_and_a_score_model_row_are_stored(admin_client, prompt_file, snapshot_names):
    data = form_data(prompt_file, **{
        "prompt_mode": "template", "system_template": "Answer yes or no.", "user_template": "{{item.answer}}?",
        "grader-TOTAL_FORMS": "2", "grader-1-type": "score_model", "grader-1-model": "attune-tiny",
        "grader-1-judge_user": "Rate {{sample.output_text}}", "grader-1-range_low": "0",
        "grader-1-range_high": "10", "grader-1-pass_threshold": "7"})
    assert admin_client.post("/evals/new/", data).status_code == 302
    created = Eval.objects.get()
    assert created.epoch_data_source["input_messages"] == {"type": "template", "template": [
        {"role": "system", "content": "Answer yes or no."}, {"role": "user", "content": "{{item.answer}}?"}]}
    judge = created.testing_criteria[1]
    assert judge["type"] == "score_model" and judge["model"] == "attune-tiny" and judge["range"] == [0, 10]
    assert judge["input"] == [{"role": "user", "content": "Rate {{sample.output_text}}"}]
    assert judge["pass_threshold"] == 7


def test_an_unknown_template_variable_is_shown_on_its_field_and_nothing_is_stored(admin_client, prompt_file):
    resp = admin_client.post("/evals/new/", form_data(prompt_file, **{"grader-0-reference": "{{itme.answer}}"}))
    assert resp.status_code == 400
    row = resp.context["rows"].forms[0]
    assert "unknown template variable {{itme.answer}}" in " ".join(row.errors["reference"])
    assert "{{itme.answer}}" in resp.content.decode()
    assert not Eval.objects.exists()


def test_a_python_syntax_error_names_its_line_on_the_source_field(admin_client, prompt_file):
    data = form_data(prompt_file, **{"grader-0-type": "python",
                                     "grader-0-source": "def grade(sample, item):\n    return (1\n"})
    resp = admin_client.post("/evals/new/", data)
    assert resp.status_code == 400
    message = " ".join(resp.context["rows"].forms[0].errors["source"])
    assert "syntax error on line 2" in message
    assert not Eval.objects.exists()


def test_bad_json_criteria_are_refused_on_the_json_field_quoting_the_param(admin_client, prompt_file):
    resp = admin_client.post("/evals/new/", form_data(prompt_file, criteria_json='[{"type": "string_check"}]'))
    assert resp.status_code == 400
    errors = " ".join(resp.context["form"].errors["criteria_json"])
    assert errors.startswith("testing_criteria[0]")
    resp = admin_client.post("/evals/new/", form_data(prompt_file, criteria_json="[{"))
    assert "Not valid JSON" in " ".join(resp.context["form"].errors["criteria_json"])
    assert not Eval.objects.exists()


def test_a_missing_prompt_file_and_a_bad_sampling_value_name_their_fields(admin_client, prompt_file):
    resp = admin_client.post("/evals/new/", {**form_data(prompt_file), "prompt_file": ""})
    assert "Pick a prompt file" in " ".join(resp.context["form"].errors["prompt_file"])
    resp = admin_client.post("/evals/new/", form_data(prompt_file, temperature="5"))
    assert resp.status_code == 400
    assert "between 0.0 and 2.0" in " ".join(resp.context["form"].errors["temperature"])
    assert not Eval.objects.exists()


def test_an_uploaded_prompt_file_is_kept_when_the_rest_of_the_form_is_wrong(admin_client, prompt_file):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training.models import DataFile

    upload = SimpleUploadedFile("mine.jsonl", b'{"answer": "yes", "messages": []}\n')
    resp = admin_client.post("/evals/new/", {**form_data(prompt_file, name=""), "prompt_file": "",
                                             "prompt_upload": upload})
    assert resp.status_code == 400
    stored = DataFile.objects.get(filename="mine.jsonl")
    assert stored.purpose == "evals" and stored.status == "processed"
    assert resp.context["form"]["prompt_file"].value() == stored.public_id  # picked for the next submit
    assert not Eval.objects.exists()


# --- try it --------------------------------------------------------------------------------------------

def test_try_it_scores_a_string_check_before_anything_is_saved(admin_client, prompt_file):
    data = form_data(prompt_file, try_sample="yes", try_item='{"answer": "yes"}')
    resp = admin_client.post("/evals/try/", data, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200
    results = resp.context["tried"]["results"]
    assert [(r["name"], r["score"], r["passed"], r["errors"]) for r in results] == [("exact", 1.0, True, [])]
    resp = admin_client.post("/evals/try/", {**data, "try_sample": "no"}, HTTP_HX_REQUEST="true")
    assert resp.context["tried"]["results"][0]["score"] == 0.0
    assert "<html" not in resp.content.decode()  # the fragment alone
    assert not Eval.objects.exists()


def test_try_it_shows_error_flags_and_refuses_bad_input(admin_client, prompt_file, eval_obj):
    resp = admin_client.post("/evals/try/", form_data(prompt_file, **{
        "grader-0-reference": "{{item.missing}}", "try_sample": "yes", "try_item": "{}"}), HTTP_HX_REQUEST="true")
    assert resp.context["tried"]["results"][0]["errors"] == ["invalid_variable_error"]
    resp = admin_client.post("/evals/try/", form_data(prompt_file, try_item="[1]"), HTTP_HX_REQUEST="true")
    assert "Item (JSON)" in resp.context["tried"]["error"] and "must be a JSON object" in resp.context["tried"]["error"]
    resp = admin_client.post("/evals/try/", form_data(prompt_file, try_sample="x" * 20_001), HTTP_HX_REQUEST="true")
    assert "Sample output" in resp.context["tried"]["error"]
    # A stored eval's graders, from its page.
    resp = admin_client.post("/evals/try/", {"eval": eval_obj.public_id, "try_sample": "no",
                                             "try_item": '{"answer": "no"}'}, HTTP_HX_REQUEST="true")
    assert [r["score"] for r in resp.context["tried"]["results"]] == [1.0, 1.0]


# --- runs and results ------------------------------------------------------------------------------------

def test_running_on_two_snapshots_queues_two_runs_with_one_batch_key(admin_client, eval_obj, snapshot_names):
    resp = admin_client.post(f"/evals/{eval_obj.public_id}/runs/", {"snapshots": snapshot_names})
    assert resp.status_code == 302
    runs = list(eval_obj.runs.all())
    assert sorted(r.model for r in runs) == sorted(snapshot_names)
    assert all(r.status == EvalRun.QUEUED for r in runs)
    assert len({r.batch_key for r in runs}) == 1 and runs[0].batch_key
    assert runs[0].data_source == {**eval_obj.epoch_data_source, "model": runs[0].model}


def test_an_unknown_snapshot_is_refused_on_the_field(admin_client, eval_obj, snapshot_names):
    resp = admin_client.post(f"/evals/{eval_obj.public_id}/runs/", {"snapshots": ["ft:nope"]})
    assert resp.status_code == 400
    assert "snapshots" in resp.context["run_form"].errors
    assert not eval_obj.runs.exists()


def test_the_results_table_shows_means_and_pass_rates_of_stored_items(admin_client, eval_obj):
    make_run(eval_obj, "attune-tiny", [(1, 1.0), (0, 1.0), (1, 1.0)])
    make_run(eval_obj, "attune-small", [(0, 0.0), (0, 0.0), (1, 0.0)])
    resp = admin_client.get(f"/evals/{eval_obj.public_id}/")
    html = resp.content.decode()
    assert "0.667" in html and "67 %" in html  # tiny's exact match: 2 of 3
    assert "0.333" in html and "33 %" in html  # small's
    rows = {row["run"].model: row["cells"] for row in resp.context["rows"]}
    assert rows["attune-tiny"][0]["mean"] == pytest.approx(2 / 3)
    assert rows["attune-small"][1]["pass_rate"] == 0


def test_the_results_fragment_polls_while_a_run_is_active_and_stops_after(admin_client, eval_obj):
    run = make_run(eval_obj, "attune-tiny", [(1, 1.0)], status=EvalRun.IN_PROGRESS)
    url = f"/evals/{eval_obj.public_id}/?fragment=results"
    resp = admin_client.get(url, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and 'hx-trigger="every 3s"' in resp.content.decode()
    assert admin_client.post(f"/evals/{eval_obj.public_id}/runs/{run.public_id}/cancel/").status_code == 302
    run.refresh_from_db()
    assert run.status == EvalRun.CANCELED
    assert admin_client.get(url, HTTP_HX_REQUEST="true").status_code == 286


# --- items -------------------------------------------------------------------------------------------------

def test_the_items_page_shows_runs_side_by_side_and_filters_failures(admin_client, eval_obj):
    tiny = make_run(eval_obj, "attune-tiny", [(1, 1.0), (1, 1.0), (1, 1.0)])
    small = make_run(eval_obj, "attune-small", [(1, 1.0), (0, 1.0), (1, 1.0)])
    url = f"/evals/{eval_obj.public_id}/items/?runs={tiny.public_id},{small.public_id}"
    resp = admin_client.get(url)
    assert [row["index"] for row in resp.context["rows"]] == [0, 1, 2]
    assert "attune-tiny says 1" in resp.content.decode() and "attune-small says 1" in resp.content.decode()
    resp = admin_client.get(url + "&only=failed")
    assert [row["index"] for row in resp.context["rows"]] == [1]
    assert "question 1" in resp.content.decode()


def test_the_items_page_names_a_bad_parameter(admin_client, eval_obj):
    resp = admin_client.get(f"/evals/{eval_obj.public_id}/items/?runs=evalrun_nope")
    assert resp.status_code == 400 and "runs: evalrun_nope is not a run of this eval" in resp.content.decode()
    resp = admin_client.get(f"/evals/{eval_obj.public_id}/items/?only=passed")
    assert resp.status_code == 400 and "only: use &#x27;failed&#x27;" in resp.content.decode()


# --- graders against people ------------------------------------------------------------------------------

def test_the_agreement_page_pairs_human_means_with_grader_scores(admin_client, eval_obj, task):
    from playground.models import Output, Rating, TaskItem

    rater = factories.make_user("evaluator")
    human = {"attune-tiny": [5, 1, 4], "attune-small": [2, 3, 1]}
    items = [TaskItem.objects.create(task=task, index=i, messages=item["messages"]) for i, item in enumerate(ITEMS)]
    for item in items:
        outputs = [Output.objects.create(item=item, position=p, snapshot_name=name, status=Output.DONE, text="x")
                   for p, name in enumerate(task.snapshot_names)]
        scores = {p: human[name][item.index] for p, name in enumerate(task.snapshot_names)}
        Rating.save_for(rater, outputs, scores, {}, Rating.TIE, None, item=item)
    # The python grader's scores rise with the human means; the exact match is constant on small.
    grader = {"attune-tiny": [0.9, 0.1, 0.8], "attune-small": [0.3, 0.5, 0.1]}  # ties where people tie
    for name in task.snapshot_names:
        make_run(eval_obj, name, [(1, s) for s in grader[name]])
    resp = admin_client.get(f"/evals/agreement/{task.public_id}/")
    assert resp.status_code == 200
    rows = {row["grader"]: row for row in resp.context["rows"]}
    assert rows["short"]["n"] == 6
    assert rows["short"]["spearman"].value == pytest.approx(1.0)
    assert rows["short"]["kendall"].value == pytest.approx(1.0)
    assert rows["exact"]["spearman"].value is None  # every exact score is 1: no ranking to compare
    assert "Too few pairs (6)" in rows["short"]["verdict"]


def test_the_rating_task_page_links_to_the_agreement_page_for_admins(admin_client, task):
    html = admin_client.get(f"/playground/tasks/{task.public_id}/").content.decode()
    assert f'href="/evals/agreement/{task.public_id}/"' in html


def test_a_judge_endpoint_is_added_with_its_key_encrypted_and_then_deleted(admin_client):
    from evals.models import JudgeEndpoint

    response = admin_client.post("/evals/judges/", {"name": "lab", "base_url": "https://judge.example/v1",
                                                     "api_key": "sk-secret-123"})
    assert response.status_code == 302
    endpoint = JudgeEndpoint.objects.get(name="lab")
    assert "sk-secret-123" not in endpoint.api_key and endpoint.key == "sk-secret-123"
    page = admin_client.get("/evals/judges/").content.decode()
    assert "judge.example" in page and "sk-secret-123" not in page
    again = admin_client.post("/evals/judges/", {"name": "lab", "base_url": "ftp://x"})
    assert again.status_code == 200 and JudgeEndpoint.objects.count() == 1
    assert "exists" in again.content.decode()
    admin_client.post(f"/evals/judges/{endpoint.pk}/delete/")
    assert not JudgeEndpoint.objects.exists()


def test_a_runs_report_url_is_the_page_of_its_items(admin_client, eval_obj):
    from api.evals import run_object
    from evals.models import EvalRun, OutputItem

    run = EvalRun.objects.create(eval=eval_obj, status=EvalRun.COMPLETED, model="attune-tiny",
                                 data_source={"type": "jsonl"})
    OutputItem.objects.create(run=run, index=0, datasource_item={"messages": []}, status="pass",
                              sample={"output_text": "yes"}, results=[])
    page = admin_client.get(run_object(run)["report_url"])
    assert page.status_code == 200 and run.public_id in page.content.decode()
